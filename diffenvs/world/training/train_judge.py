"""Train the world's independent judge on rendered images (reproducible, seeded, in legs).

    python -m diffenvs.world.training.train_judge --steps 6000
    python -m diffenvs.world.training.train_judge --init-from W/judge.safetensors --steps 3000 --lr 5e-4

The judge trains on its own rendered data (seed 100 by default, where the oracle uses seed 0) and
is evaluated on the same held-out renders as the oracle. Writes ``judge_progress.csv`` beside the
weights and prints the held-out accuracy per attribute at the end.
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
from tqdm import tqdm

from diffenvs.io import load_tensors, save_tensors
from diffenvs.world.attributes import ATTRIBUTES
from diffenvs.world.data import make_dataset
from diffenvs.world.judge import AttributeJudge
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.training.train_oracle import accuracy


@dataclass
class Config:
    train_size: int = 40_000
    val_size: int = 4_000
    steps: int = 6_000
    batch_size: int = 96
    lr: float = 2e-3
    warmup: int = 200
    seed: int = 100
    """Data and initialisation seed; the oracle's is 0, so the two never see the same renders."""
    threads: int = 1
    out: Path = WEIGHTS_DIR / "judge.safetensors"
    init_from: Path | None = None
    save_every: int = 500
    """Save the weights every this many steps, so a stopped leg leaves its last complete state."""


def main(cfg: Config) -> dict[str, float]:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    # The held-out renders every world model is measured on (seed 2: the oracle's validation set).
    val = make_dataset(cfg.val_size, seed=2, split="heldout")
    model = AttributeJudge()
    if cfg.init_from is not None:
        model.load_state_dict(load_tensors(cfg.init_from))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=5e-4)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = cfg.out.with_name(cfg.out.stem + "_progress.csv").open("w", newline="")
    log = csv.writer(log_file)
    log.writerow(["step", "loss", "minutes"])
    gen = np.random.default_rng(cfg.seed)
    labels = torch.from_numpy(train.labels)
    bar = tqdm(range(cfg.steps), desc="judge", mininterval=10)
    running = 0.0
    for step in bar:
        idx = gen.integers(0, len(train), cfg.batch_size)
        x = as_image_tensor(train.images[idx])
        # Its own augmentation (the oracle's is additive pixel noise): a random small blur or
        # noise, so generated images, which are softer than renders, read the same.
        if gen.random() < 0.5:
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + x * 0.5
        x = (x + torch.randn_like(x) * 0.03 * torch.rand(len(x), 1, 1, 1)).clamp(0, 1)
        model.train()
        logits = model(x)
        loss = sum(
            F.cross_entropy(logits[a], labels[idx, i], label_smoothing=0.1)
            for i, a in enumerate(ATTRIBUTES)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 50 == 0:
            log.writerow([step + 1, round(running / 50, 4), round((time.time() - start) / 60, 2)])
            log_file.flush()
            bar.set_postfix(loss=f"{running / 50:.3f}")
            running = 0.0
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_tensors(model.state_dict(), cfg.out, metadata={"steps": str(step + 1)})
    log_file.close()
    acc = accuracy(model, val.images, val.labels)
    save_tensors(
        model.state_dict(), cfg.out, metadata={"steps": str(cfg.steps), "seed": str(cfg.seed)}
    )
    report = {k: round(v, 4) for k, v in acc.items()} | {
        "minutes": round((time.time() - start) / 60, 1)
    }
    cfg.out.with_name(cfg.out.stem + "_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return acc


if __name__ == "__main__":
    main(tyro.cli(Config))
