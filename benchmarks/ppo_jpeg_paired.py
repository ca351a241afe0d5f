"""The training reward of a JPEG benchmark run against the base model on the *same* rollouts.

Every update of ``agents.ppo.train`` draws its prompts, x_T and step noise from
``numpy.random.default_rng([seed, process, update])``, so the frozen base model can be run on
exactly the rollouts the policy saw. The per-update difference (policy minus base, same prompts,
x_T and noise) removes the prompt-to-prompt and noise spread that makes a 16-image training
curve hard to read, and says whether a run moved the reward the right way while it trained.

    python benchmarks/ppo_jpeg_paired.py --folder benchmarks/results/ppo/jpeg/mean_u40

Reads ``<folder>/seed<k>/config.json`` and ``progress.csv``; writes ``<folder>/paired.json`` and
``paired.md`` (means over blocks of 10 updates). One thread, ~1 min per seed of 40 updates.
"""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    folder: Path
    """A results folder of benchmarks/ppo_jpeg.py (with seed<k>/ run folders)."""
    block: int = 10
    """Updates per row of the table."""
    compare: Path | None = None
    """Another results folder with a paired.json (e.g. the run before a fix): drawn dashed in
    the figure."""
    threads: int = 1
    plot_only: bool = False
    """Only redraw paired.png from the folder's paired.json (no rollouts)."""


def base_rewards(cfg, updates: int) -> list[float]:
    """Mean reward of the base model on the rollouts of updates 1..``updates`` of a run."""

    import diffenvs  # noqa: F401  (registers the environments)
    from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
    from agents.ppo.rollout import collect_rollout, make_prompt_source
    from agents.ppo.train import make_envs

    envs = make_envs(cfg, "cpu")  # no KL term in these set-ups: the env skips the base model
    sampler = envs.unwrapped.sampler
    model = DiffusionActorCritic(build_policy_unet(sampler.unet, cfg), sampler)
    source = make_prompt_source(cfg.prompts)
    out = []
    for update in range(updates):
        # The training loop's draws, in its order: the update's generator seed, then the rollout.
        rng = np.random.default_rng([cfg.seed, 0, update])
        rng.integers(2**62)
        buffer = collect_rollout(model, envs, source, cfg, rng, nullcontext)
        out.append(float(buffer.rewards.mean()))
    return out


def plot(rows: list[dict], folder: Path, compare: Path | None) -> None:
    """``paired.png``: per update, the policy's rollout reward minus the base model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    runs = [(folder.name, rows, "-")]
    if compare is not None:
        runs.append((compare.name, json.loads((compare / "paired.json").read_text()), "--"))
    for name, runs_rows, style in runs:
        for i, row in enumerate(runs_rows):
            gain = np.array(row["policy"]) - np.array(row["base"])
            ax.plot(np.arange(1, len(gain) + 1), gain, style, color=f"C{i}",
                    label=f"{name}, seed {row['seed']}")  # fmt: skip
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("update")
    ax.set_ylabel("rollout reward − base model's (kB)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "paired.png", dpi=120)
    plt.close(fig)


def main(args: Args) -> None:
    from agents.ppo.config import PPOConfig

    torch.set_num_threads(args.threads)
    if args.plot_only:
        plot(json.loads((args.folder / "paired.json").read_text()), args.folder, args.compare)
        return
    names = {f.name for f in fields(PPOConfig)}
    rows, lines = [], []
    for run in sorted(args.folder.glob("seed*/progress.csv")):
        raw = json.loads((run.parent / "config.json").read_text())
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names}
        cfg = PPOConfig(**raw)
        with open(run) as f:
            policy = [float(r["reward_mean"]) for r in csv.DictReader(f)]
        base = base_rewards(cfg, len(policy))
        diff = np.array(policy) - np.array(base)
        blocks = [
            {
                "updates": f"{lo + 1}-{min(lo + args.block, len(diff))}",
                "base": float(np.mean(base[lo : lo + args.block])),
                "policy": float(np.mean(policy[lo : lo + args.block])),
                "gain": float(diff[lo : lo + args.block].mean()),
            }
            for lo in range(0, len(diff), args.block)
        ]
        rows.append({"seed": cfg.seed, "base": base, "policy": policy, "blocks": blocks})
        cells = " | ".join(f"{b['gain']:+.3f}" for b in blocks)
        lines.append(f"| {cfg.seed} | {cells} |")
        print(lines[-1], flush=True)
    if not rows:
        raise SystemExit(f"No seed*/progress.csv under {args.folder}: run benchmarks/ppo_jpeg.py.")
    head = " | ".join(b["updates"] for b in rows[0]["blocks"])
    table = [
        f"# Training reward minus the base model's on the same rollouts: `{args.folder.name}`",
        "",
        f"Written by `python benchmarks/ppo_jpeg_paired.py --folder {args.folder}`. Measured on: "
        "world v1. Mean over each block of updates of (policy's rollout reward − base model's "
        "reward on the same prompts, x_T and step noise); reward in kB (minus the JPEG size).",
        "",
        f"| seed | {head} |",
        "|---|" + "---|" * len(rows[0]["blocks"]),
        *lines,
    ]
    (args.folder / "paired.json").write_text(json.dumps(rows, indent=2))
    plot(rows, args.folder, args.compare)
    (args.folder / "paired.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main(tyro.cli(Args))
