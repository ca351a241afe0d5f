"""Fine-tune only the VAE decoder, with the encoder (and so the latent space) frozen.

Stable Diffusion's released VAEs were improved the same way: the UNet was trained on the encoder's
latents, and since the encoder does not change, a sharper decoder can be swapped in at any time
without retraining the UNet. Here it recovers shapes, patterns and outlines that the first,
short VAE run drew blurry.

    python -m diffenvs.world.training.finetune_decoder --steps 2000
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from diffusers import AutoencoderKL
from tqdm import tqdm

from diffenvs.world.data import make_dataset
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.training.train_unet import save_folder_atomically


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 2_000
    batch_size: int = 16
    lr: float = 1e-3
    object_weight: float = 8.0
    seed: int = 0
    threads: int = 1
    vae: Path = WEIGHTS_DIR / "t2i" / "vae"


def reconstruction_psnr(vae: AutoencoderKL, images: np.ndarray) -> float:
    with torch.no_grad():
        x = as_image_tensor(images) * 2 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        return float(10 * np.log10(4.0 / (recon - x).pow(2).mean().item()))


def main(cfg: Config) -> float:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    val = make_dataset(4_000, seed=cfg.seed + 2, split="heldout")
    vae = AutoencoderKL.from_pretrained(cfg.vae)
    vae.eval()
    before = reconstruction_psnr(vae, val.images[:512])
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05
    )
    gen = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="decoder")
    for step in bar:
        idx = gen.integers(0, len(train), cfg.batch_size)
        x = as_image_tensor(train.images[idx]) * 2 - 1
        mask = torch.from_numpy(train.masks[idx]).float().div(255).unsqueeze(1)
        weight = 1 + cfg.object_weight * F.max_pool2d(mask, 3, stride=1, padding=1)
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample()
        vae.decoder.train()
        err = vae.decode(latents).sample - x
        loss = (weight * (err.abs() + err.pow(2))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    after = reconstruction_psnr(vae, val.images[:512])
    save_folder_atomically(cfg.vae, lambda tmp: vae.save_pretrained(tmp, safe_serialization=True))
    print(
        f"val PSNR before={before:.2f} dB after={after:.2f} dB minutes={(time.time() - start) / 60:.1f}"
    )
    return after


if __name__ == "__main__":
    main(tyro.cli(Config))
