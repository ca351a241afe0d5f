"""Overlay the rollout-reward curves of several diffusion-PPO runs (their progress.csv) in one
figure, for ablations such as the one in docs/results/ppo.md.

    python benchmarks/ppo_curves.py --runs runs/ppo_diffusion/A runs/ppo_diffusion/B \
        --labels "KL loss" "KL loss + pg_min_std" --out docs/images/ppo_ablation.png
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Args:
    runs: tuple[str, ...]
    """Run folders, each holding a progress.csv written by agents.ppo."""
    labels: tuple[str, ...] = ()
    """One legend entry per run (default: the folder names)."""
    out: str = "ppo_curves.png"
    column: str = "reward_mean"
    """The progress.csv column to plot against the update."""
    title: str = ""


def read_column(run: Path, column: str) -> tuple[list[int], list[float]]:
    path = run / "progress.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass run folders of agents.ppo.")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise ValueError(f"{path} has no column {column!r}; it has {list(rows[0])}.")
    return [int(r["update"]) for r in rows], [float(r[column]) for r in rows]


def main(args: Args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.labels and len(args.labels) != len(args.runs):
        raise ValueError(f"Got {len(args.labels)} labels for {len(args.runs)} runs; give one each.")
    labels = args.labels or tuple(Path(r).name for r in args.runs)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for run, label in zip(args.runs, labels, strict=True):
        x, y = read_column(Path(run), args.column)
        ax.plot(x, y, label=label, lw=1.2)
    ax.set_xlabel("update")
    ax.set_ylabel(f"rollout {args.column}")
    if args.title:
        ax.set_title(args.title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
