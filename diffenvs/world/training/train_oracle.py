"""Train the attribute oracle on rendered images (reproducible, seeded).

python -m diffenvs.world.training.train_oracle --steps 3000
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

from diffenvs.io import load_tensors, save_tensors
from diffenvs.world.attributes import ATTRIBUTES
from diffenvs.world.data import make_dataset
from diffenvs.world.oracle import AttributeOracle, as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR


@dataclass
class Config:
    train_size: int = 40_000
    val_size: int = 4_000
    steps: int = 3_000
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    threads: int = 1
    out: Path = WEIGHTS_DIR / "oracle.safetensors"
    init_from: Path | None = None
    """Continue from these oracle weights (safetensors) instead of random weights."""


def accuracy(model: AttributeOracle, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = model.predict(images)
    return {a: float((pred[a] == labels[:, i]).mean()) for i, a in enumerate(ATTRIBUTES)}


def main(cfg: Config) -> dict[str, float]:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    val = make_dataset(cfg.val_size, seed=cfg.seed + 2, split="heldout")
    model = AttributeOracle()
    if cfg.init_from is not None:
        model.load_state_dict(load_tensors(cfg.init_from))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1
    )
    gen = np.random.default_rng(cfg.seed)
    labels = torch.from_numpy(train.labels)
    bar = tqdm(range(cfg.steps), desc="oracle")
    for step in bar:
        idx = gen.integers(0, len(train), cfg.batch_size)
        x = as_image_tensor(train.images[idx])
        # Mild pixel noise so the oracle also reads imperfect generated images.
        x = (x + torch.randn_like(x) * 0.02 * torch.rand(len(x), 1, 1, 1)).clamp(0, 1)
        model.train()
        logits = model(x)
        loss = sum(
            torch.nn.functional.cross_entropy(logits[a], labels[idx, i], label_smoothing=0.05)
            for i, a in enumerate(ATTRIBUTES)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    acc = accuracy(model, val.images, val.labels)
    save_tensors(
        model.state_dict(), cfg.out, metadata={"steps": str(cfg.steps), "seed": str(cfg.seed)}
    )
    print({k: round(v, 4) for k, v in acc.items()}, f"minutes={(time.time() - start) / 60:.1f}")
    return acc


if __name__ == "__main__":
    main(tyro.cli(Config))
