"""PPO on JPEG compressibility: the side-by-side set-up of issue 20 (DDPO's first task, on the world).

16 fixed world prompts, ``jpeg_compressibility``, 10 DDIM steps, eta 1, guidance 4, full
fine-tuning at lr 3e-4, 40 updates x 16 images (4 prompts x 4 samples per update), two optimiser
steps per update (minibatches of 8 images x 10 steps), clip 1e-4 on the *mean*-reduced log-prob
(DDPO's formulation: the per-dimension ratio is held within 1 +- 1e-4, i.e. a step's summed
log-ratio within about +-0.2 nats on the world's 2,048 latent dims), advantage clip 5, no KL (so
the env skips the base model: one guided UNet pass per rollout step).

One choice differs from the issue's first run: ``pg_min_std`` 0.1, i.e. the two low-noise steps
(sigma 0.041 and 0.021 on this schedule) give no policy gradient. They carry ~95 % of the squared
policy-gradient norm while their noise hardly changes the JPEG size, and with them PPO did not
learn (``--pg-min-std 0``; ``benchmarks/ppo_jpeg_diagnose.py`` measures why).

Per seed it reports rollout samples/s, s/update, peak RSS, the held-out reward (32 world:heldout
prompts, same seeds and noise before and after) and the image diversity across prompts before and
after (mean RMS pixel distance between different prompts' images; "collapsed" below 50 % of the
base model's). Seeds run one after another, each in its own process (so peak RSS is per run).

    python benchmarks/ppo_jpeg.py                          # 3 seeds x 40 updates, ~15-25 min each
    python benchmarks/ppo_jpeg.py --seeds 0 --updates 4    # a quick check
    python benchmarks/ppo_jpeg.py --pg-min-std 0           # every step's gradient (did not learn)
    python benchmarks/ppo_jpeg.py --logprob-reduction sum  # the old ratio, for comparison

Raw outputs: ``benchmarks/results/ppo/jpeg/<tag>/seed<k>/`` (the run folder: progress.csv,
inner_steps.csv, eval.json, samples.png) and ``summary.json`` / ``summary.md`` next to them;
``benchmarks/ppo_jpeg_paired.py --folder <that folder>`` compares the training rewards with the
base model's on the same rollouts.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ppo" / "jpeg"


@dataclass
class Args:
    seeds: tuple[int, ...] = (0, 1, 2)
    updates: int = 40
    logprob_reduction: Literal["mean", "sum"] = "mean"
    clip_range: float = 1e-4
    samples_per_prompt: int = 4
    pg_min_std: float = 0.1
    """0.1 drops the two low-noise steps from the policy gradient (what makes this set-up learn);
    0: the policy gradient of every step (the issue's first run)."""
    prompt_stats: Literal["batch", "tracker"] = "batch"
    """'tracker': DDPO's per-prompt statistics across updates (the 16 prompts recur every ~4 updates)."""
    eval_episodes: int = 32
    threads: int = 1
    tag: str | None = None
    """Sub-folder of benchmarks/results/ppo/jpeg/ (default: '<reduction>[_pgmin<x>]_u<updates>')."""
    reuse: bool = False
    """Keep the seeds whose result (seed<k>.json) is already in the folder, run only the others, and
    summarise them all (a benchmark run split over several sittings)."""
    one_seed: int | None = None
    """Internal: run this seed in this process and write its result (the driver's child)."""


def world_prompts(n: int = 16, seed: int = 20) -> list[str]:
    """``n`` distinct training prompts drawn from the world's prompt sampler with a fixed seed."""
    from diffenvs.envs.denoise_prompts import make_prompt_source

    source, rng, out = make_prompt_source("world"), np.random.default_rng(seed), []
    while len(out) < n:
        p = source.sample(rng)
        if p not in out:
            out.append(p)
    return out


def run_seed(args: Args, seed: int, folder: Path) -> dict:
    import torch

    from agents.ppo.config import PPOConfig
    from agents.ppo.train import train

    torch.set_num_threads(args.threads)
    prompt_file = folder / "prompts.txt"
    cfg = PPOConfig(
        prompts=str(prompt_file),
        eval_prompts="world:heldout",
        reward="jpeg_compressibility",
        num_steps=10,
        eta=1.0,
        guidance_scale=4.0,
        num_envs=16,
        samples_per_prompt=args.samples_per_prompt,
        num_updates=args.updates,
        num_epochs=1,
        minibatch_size=80,
        grad_accum_steps=1,
        finetune="full",
        learning_rate=3e-4,
        logprob_reduction=args.logprob_reduction,
        clip_range=args.clip_range,
        adv_clip=5.0,
        pg_min_std=args.pg_min_std,
        prompt_stats=args.prompt_stats,
        kl="none",
        kl_loss_coef=0.0,
        eval_episodes=args.eval_episodes,
        eval_oracle=False,
        seed=seed,
        torch_threads=args.threads,
        cpu=True,
        output_dir=str(folder),
        run_name=f"seed{seed}",
        tensorboard=False,
        progress=False,
        save_every=max(1, args.updates),
    )
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    # Keep the logs, figures and eval.json; the weights and image arrays are tens of MB per run.
    run_dir = Path(result["run_dir"])
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in ("eval_before.npz", "eval_after.npz"):
        (run_dir / name).unlink(missing_ok=True)
    hist, ev = result["history"], result["eval"]
    rollout_s = sum(h["rollout_s"] for h in hist)
    images = cfg.num_envs * cfg.episodes_per_update * len(hist)
    return {
        "seed": seed,
        "updates": len(hist),
        "rollout_samples_per_s": images / rollout_s,
        "s_per_update": float(np.mean([h["rollout_s"] + h["train_s"] for h in hist])),
        "train_s_per_update": float(np.mean([h["train_s"] for h in hist])),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "reward_before": ev["before"]["reward_mean"],
        "reward_after": ev["after"]["reward_mean"],
        "reward_gain": ev["after"]["reward_mean"] - ev["before"]["reward_mean"],
        "reward_std_after": ev["after"]["reward_std"],
        "diversity_before": ev["before"]["diversity"],
        "diversity_after": ev["after"]["diversity"],
        "diversity_ratio": ev["diversity_ratio"],
        "collapsed": ev["collapsed"],
        "clipfrac_mean": float(np.mean([h["clipfrac"] for h in hist])),
        "clipfrac_max_mean": float(np.mean([h["clipfrac_max"] for h in hist])),
        "approx_kl_max_mean": float(np.mean([h["approx_kl_max"] for h in hist])),
        "ratio_max": float(np.max([h["ratio_max"] for h in hist])),
        "wall_s": wall,
    }


def table(rows: list[dict]) -> str:
    cols = [
        ("seed", "{}"),
        ("rollout_samples_per_s", "{:.2f}"),
        ("s_per_update", "{:.1f}"),
        ("peak_rss_gb", "{:.2f}"),
        ("reward_before", "{:.2f}"),
        ("reward_after", "{:.2f}"),
        ("reward_gain", "{:+.2f}"),
        ("diversity_ratio", "{:.2f}"),
        ("collapsed", "{}"),
        ("clipfrac_max_mean", "{:.3f}"),
        ("approx_kl_max_mean", "{:.2e}"),
        ("ratio_max", "{:.4f}"),
    ]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f.format(r[c]) for c, f in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(args: Args) -> None:
    pgmin = f"_pgmin{args.pg_min_std:g}" if args.pg_min_std > 0 else ""
    folder = OUT / (args.tag or f"{args.logprob_reduction}{pgmin}_u{args.updates}")
    folder.mkdir(parents=True, exist_ok=True)
    if args.one_seed is not None:
        result = run_seed(args, args.one_seed, folder)
        (folder / f"seed{args.one_seed}.json").write_text(json.dumps(result, indent=2))
        return
    (folder / "prompts.txt").write_text("\n".join(world_prompts()) + "\n")
    rows = []
    for seed in args.seeds:
        done = folder / f"seed{seed}.json"
        if args.reuse and done.exists():
            rows.append(json.loads(done.read_text()))
            continue
        cmd = [sys.executable, __file__, "--one-seed", str(seed), "--updates", str(args.updates)]
        cmd += ["--logprob-reduction", args.logprob_reduction, "--clip-range", str(args.clip_range)]
        cmd += ["--eval-episodes", str(args.eval_episodes), "--threads", str(args.threads)]
        cmd += ["--samples-per-prompt", str(args.samples_per_prompt)]
        cmd += ["--pg-min-std", str(args.pg_min_std), "--prompt-stats", args.prompt_stats]
        cmd += ["--tag", folder.name]
        subprocess.run(cmd, check=True)
        rows.append(json.loads((folder / f"seed{seed}.json").read_text()))
        print(table(rows[-1:]), flush=True)
    (folder / "summary.json").write_text(json.dumps(rows, indent=2))
    (folder / "summary.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main(tyro.cli(Args))
