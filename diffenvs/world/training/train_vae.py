"""Train the world's AutoencoderKL on rendered images (reproducible, seeded, resumable in legs).

    # from scratch
    python -m diffenvs.world.training.train_vae --steps 1500
    # a further leg from saved weights, with the perceptual term on the frozen oracle's features
    python -m diffenvs.world.training.train_vae --init-from W/t2i/vae --steps 12000 \
        --perceptual-weight 1.0 --out runs/world_v2/vae

The loss is an object-weighted L1 + L2 reconstruction term (objects cover a few percent of the
pixels but carry the meaning), an optional perceptual term (squared distance between the frozen
oracle's convolutional features of the reconstruction and of the input, as LPIPS does with a
pretrained network), and a tiny KL term. The world's independent judge never enters this loss: it
is what evaluates the result.

Each leg writes ``progress.csv`` (step, loss, minutes) beside the weights, saves a checkpoint every
``save_every`` steps (atomically: a killed leg leaves the last complete one) and ends with the
oracle's per-attribute accuracy on reconstructions of held-out renders, which is the VAE's bar.
"""

from __future__ import annotations

import csv
import json
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
from diffenvs.world.evaluate import vae_reconstruction
from diffenvs.world.oracle import AttributeOracle, as_image_tensor, read_oracle
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.t2i import make_vae


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 1_500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 75
    """Linear warm-up steps, then cosine decay to 5 % of ``lr``."""
    kl_weight: float = 1e-6
    object_weight: float = 8.0
    perceptual_weight: float = 0.0
    """Weight of the oracle-feature term (0 = off)."""
    seed: int = 0
    threads: int = 1
    save_every: int = 1_000
    init_from: Path | None = None
    """Continue from the AutoencoderKL folder here instead of random weights."""
    out: Path = WEIGHTS_DIR / "t2i" / "vae"
    eval_size: int = 1_000


def oracle_features(oracle: AttributeOracle, images: torch.Tensor) -> list[torch.Tensor]:
    """Activations after each of the oracle's convolutional blocks, for images in [-1, 1]."""
    feats = []
    h = images
    for block in oracle.features:
        h = block(h)
        feats.append(h)
    return feats


def perceptual_distance(
    oracle: AttributeOracle, recon: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        target = oracle_features(oracle, x)
    return sum(
        (a - b).pow(2).mean() for a, b in zip(oracle_features(oracle, recon), target, strict=True)
    )


def save_vae_atomically(vae: AutoencoderKL, out: Path, images: np.ndarray) -> None:
    """Set the scaling factor from ``images`` and swap the saved folder in atomically, so every
    checkpoint (not only a finished leg's) is a complete VAE that a UNet can train on."""
    from diffenvs.world.training.train_unet import save_folder_atomically

    vae.eval()
    with torch.no_grad():
        latents = vae.encode(as_image_tensor(images) * 2 - 1).latent_dist.mean
    # Unit-variance latents, as SD's scaling factor gives.
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    save_folder_atomically(out, lambda tmp: vae.save_pretrained(tmp, safe_serialization=True))


def main(cfg: Config) -> dict[str, float]:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    val = make_dataset(4_000, seed=cfg.seed + 2, split="heldout")
    vae = AutoencoderKL.from_pretrained(cfg.init_from) if cfg.init_from else make_vae()
    oracle = read_oracle().eval()
    oracle.requires_grad_(False)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out.parent / f"{cfg.out.name}_progress.csv"
    log_file = log_path.open("w", newline="")
    log = csv.writer(log_file)
    log.writerow(["step", "loss", "recon", "perceptual", "minutes"])
    gen = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="vae", mininterval=10)
    running = np.zeros(3)
    for step in bar:
        vae.train()
        idx = gen.integers(0, len(train), cfg.batch_size)
        x = as_image_tensor(train.images[idx]) * 2 - 1
        # Weight object pixels up, with a 1-pixel margin so edges and glows count too.
        mask = torch.from_numpy(train.masks[idx]).float().div(255).unsqueeze(1)
        weight = 1 + cfg.object_weight * F.max_pool2d(mask, 3, stride=1, padding=1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        err = recon - x
        # L1 keeps edges and small patterns sharper than MSE alone.
        recon_loss = (weight * (err.abs() + err.pow(2))).mean()
        perceptual = (
            perceptual_distance(oracle, recon, x) if cfg.perceptual_weight > 0 else torch.zeros(())
        )
        loss = recon_loss + cfg.perceptual_weight * perceptual
        loss = loss + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        running += [loss.item(), recon_loss.item(), perceptual.item()]
        if (step + 1) % 50 == 0:
            mean = running / 50
            running[:] = 0
            log.writerow([step + 1, *np.round(mean, 5), round((time.time() - start) / 60, 2)])
            log_file.flush()
            bar.set_postfix(loss=f"{mean[0]:.4f}", perc=f"{mean[2]:.4f}")
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_vae_atomically(vae, cfg.out, val.images[:512])
    log_file.close()
    save_vae_atomically(vae, cfg.out, val.images[:512])
    report = vae_reconstruction(
        vae, val.images[: cfg.eval_size], val.labels[: cfg.eval_size], {"oracle": oracle}
    )
    report["minutes"] = round((time.time() - start) / 60, 1)
    report["steps"] = cfg.steps
    (cfg.out.parent / f"{cfg.out.name}_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(tyro.cli(Config))
