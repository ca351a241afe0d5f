"""Train the world's AutoencoderKL on rendered images (reproducible, seeded).

python -m diffenvs.world.training.train_vae --steps 1500
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from tqdm import tqdm

from diffenvs.world.data import make_dataset
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.t2i import make_vae


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 1_500
    batch_size: int = 16
    lr: float = 2e-3
    kl_weight: float = 1e-6
    object_weight: float = 8.0
    seed: int = 0
    threads: int = 1
    out: Path = WEIGHTS_DIR / "t2i" / "vae"


def main(cfg: Config) -> float:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    val = make_dataset(4_000, seed=cfg.seed + 2, split="heldout")
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05
    )
    gen = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="vae")
    for step in bar:
        idx = gen.integers(0, len(train), cfg.batch_size)
        x = as_image_tensor(train.images[idx]) * 2 - 1
        # Objects cover a few percent of the pixels but carry most of the meaning: weight them up
        # (with a 1-pixel margin, so edges and glows count too).
        mask = torch.from_numpy(train.masks[idx]).float().div(255).unsqueeze(1)
        weight = 1 + cfg.object_weight * F.max_pool2d(mask, 3, stride=1, padding=1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        err = recon - x
        # L1 keeps edges and small patterns sharper than MSE alone.
        loss = (weight * (err.abs() + err.pow(2))).mean() + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        x = as_image_tensor(val.images[:512]) * 2 - 1
        latents = vae.encode(x).latent_dist.mean
        recon = vae.decode(latents).sample.clamp(-1, 1)
        mse = (recon - x).pow(2).mean().item()
        psnr = 10 * np.log10(4.0 / mse)
        # Unit-variance latents, as SD's scaling factor gives.
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(cfg.out, safe_serialization=True)
    print(
        f"val PSNR={psnr:.2f} dB scaling_factor={vae.config.scaling_factor:.4f} minutes={(time.time() - start) / 60:.1f}"
    )
    return psnr


if __name__ == "__main__":
    main(tyro.cli(Config))
