"""Figure: held-out renders and their reconstructions by two VAEs (e.g. world v1 and a v2 leg).

    python benchmarks/vae_reconstructions.py --vaes OLD_WORLD/t2i/vae \
        diffenvs/world/weights/t2i/vae --out docs/images/world_v2_vae_reconstructions.png

Rows: the renderer's images, then one row per VAE (posterior-mean reconstructions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro
from diffusers import AutoencoderKL

from diffenvs.world.data import make_dataset
from diffenvs.world.evaluate import save_grid
from diffenvs.world.oracle import as_image_tensor


@dataclass
class Config:
    vaes: list[Path] = field(default_factory=lambda: [Path("diffenvs/world/weights/t2i/vae")])
    out: Path = Path("docs/images/world_v2_vae_reconstructions.png")
    n: int = 12
    offset: int = 0
    """First held-out render to show."""


@torch.no_grad()
def main(cfg: Config) -> None:
    torch.set_num_threads(1)
    val = make_dataset(4_000, seed=2, split="heldout")
    images = val.images[cfg.offset : cfg.offset + cfg.n]
    rows = [images]
    for path in cfg.vaes:
        vae = AutoencoderKL.from_pretrained(path).eval()
        x = as_image_tensor(images) * 2 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        rows.append(((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    save_grid(np.concatenate(rows), cfg.out, cols=cfg.n, scale=3)
    print(f"wrote {cfg.out}: renders, then {', '.join(map(str, cfg.vaes))}")
    for i, caption in enumerate(val.captions[cfg.offset : cfg.offset + cfg.n]):
        print(i, caption)


if __name__ == "__main__":
    main(tyro.cli(Config))
