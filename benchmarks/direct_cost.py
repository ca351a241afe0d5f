"""Time and memory per update of each direct fine-tuning algorithm on the world (docs/agents/direct.md).

Each algorithm runs ``--updates`` optimiser steps of ``--batch-size`` images x ``--num-steps`` DDIM
steps (LoRA rank 4, the KL term on: one more frozen UNet pass per differentiated step) in a fresh
process, so its peak memory (peak RSS on CPU, CUDA's allocated peak on a GPU) is its own; the
first update (warm-up) is left out of the time.

    OMP_NUM_THREADS=1 python benchmarks/direct_cost.py          # ~4 min on one CPU thread

Writes benchmarks/results/direct/cost.{json,md}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from diffenvs.io import atomic_write_bytes, write_json

ALGORITHMS = ("refl", "draft", "draft-lv", "alignprop")


@dataclass
class CostConfig:
    updates: int = 4
    batch_size: int = 8
    num_steps: int = 10
    draft_k: int = 1
    one: str | None = None
    """Internal: measure this algorithm in this process and print its JSON."""
    out: Path = Path("benchmarks/results/direct")


def measure(cfg: CostConfig, algorithm: str) -> dict:
    import numpy as np
    import torch

    from agents.direct.config import DirectConfig
    from agents.direct.train import train

    torch.set_num_threads(1)
    res = train(
        DirectConfig(
            algorithm=algorithm,
            num_steps=cfg.num_steps,
            batch_size=cfg.batch_size,
            num_updates=cfg.updates,
            draft_k=cfg.draft_k,
            kl_coef=0.01,
            eval_episodes=0,
            reward_norm="none",
            reward="oracle",
            save=False,
            progress=False,
        )
    )
    hist = res["history"]
    return {
        "algorithm": algorithm,
        "update_s": float(np.mean([h["update_s"] for h in hist[1:]])),
        "mean_k": float(np.mean([h["k"] for h in hist])),
        "peak_mem_mb": float(hist[-1]["peak_mem_mb"]),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def main(cfg: CostConfig) -> None:
    if cfg.one:
        print("RESULT " + json.dumps(measure(cfg, cfg.one)))
        return
    rows = []
    for algorithm in ALGORITHMS:
        args = [
            sys.executable,
            __file__,
            "--one",
            algorithm,
            "--updates",
            str(cfg.updates),
            "--batch-size",
            str(cfg.batch_size),
            "--num-steps",
            str(cfg.num_steps),
            "--draft-k",
            str(cfg.draft_k),
        ]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
        print(rows[-1])
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "cost.json", {"rows": rows, "config": vars(cfg) | {"out": str(cfg.out)}})
    lines = [
        f"# Time and memory per update ({cfg.batch_size} images x {cfg.num_steps} DDIM steps, "
        "LoRA rank 4, KL on)",
        "",
        "| algorithm | differentiated steps (mean) | s per update | peak memory (MB) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        k = 1 if r["algorithm"] in ("refl", "draft-lv") else r["mean_k"]
        lines.append(f"| {r['algorithm']} | {k:g} | {r['update_s']:.1f} | {r['peak_mem_mb']:.0f} |")
    atomic_write_bytes(cfg.out / "cost.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(CostConfig))
