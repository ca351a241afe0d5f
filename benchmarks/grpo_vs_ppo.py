"""GRPO against the PPO agent on the target-image task, side by side (docs/results/grpo.md).

Runs ``diffenvs train ppo --preset target-image`` and ``diffenvs train grpo --preset
target-image`` one after the other (each in its own process, one thread), then evaluates every
checkpoint of both on the same held-out seeds, x_T and step noise (every step stochastic, as both
agents evaluate), and reports the reward gain in units of the base model's std against the
training wall-clock (``time_s`` of ``progress.csv``: rollouts and updates, evaluation excluded),
and the wall-clock GRPO needs to reach PPO's final gain.

    python benchmarks/grpo_vs_ppo.py                       # seed 0, the presets (~10 min on 1 thread)
    python benchmarks/grpo_vs_ppo.py --grpo-updates 60 --seeds 0 1
    python benchmarks/grpo_vs_ppo.py --skip-training       # re-evaluate existing run folders

Outputs: ``benchmarks/results/grpo/summary.{md,json}`` and the figure ``docs/images/grpo_vs_ppo.png``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import tyro


@dataclass
class Args:
    seeds: tuple[int, ...] = (0,)
    ppo_updates: int | None = None
    """Updates of the PPO run (None: the preset's 150)."""
    grpo_updates: int | None = None
    """Updates of the GRPO run (None: the preset's)."""
    grpo_args: tuple[str, ...] = ()
    """Extra options for the GRPO run, e.g. --grpo-args --kl-coef 1e-3 (label them with --tag)."""
    tag: str = ""
    """Suffix of the GRPO run folder (to compare GRPO variants against the same PPO run)."""
    output_dir: str = "runs/grpo_vs_ppo"
    results_dir: str = "benchmarks/results/grpo"
    figure: str = "docs/images/grpo_vs_ppo.png"
    save_every: int = 10
    skip_training: bool = False
    """Only evaluate run folders that already exist (a run folder with an eval.json is never
    retrained either)."""


def _train(
    agent: str, seed: int, updates: int | None, extra: tuple[str, ...], args: Args, name: str
) -> float:
    cmd = [
        sys.executable,
        "-m",
        f"agents.{agent}.train",
        "--preset",
        "target-image",
        "--seed",
        str(seed),
        "--output-dir",
        args.output_dir,
        "--run-name",
        name,
        "--save-every",
        str(args.save_every),
        "--torch-threads",
        "1",
        "--no-progress",
        *extra,
    ]
    if updates is not None:
        cmd += ["--num-updates", str(updates)]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def _progress(run: Path) -> dict[int, float]:
    with (run / "progress.csv").open() as f:
        return {int(r["update"]): float(r["time_s"]) for r in csv.DictReader(f)}


def evaluate_checkpoints(run: Path, accelerator: Any, oracle: Any) -> list[dict[str, float]]:
    """Held-out reward (and oracle accuracy) of every checkpoint of ``run``, in base-std units."""
    import gymnasium as gym

    import diffenvs  # noqa: F401
    from agents.grpo.sampling import unguided_sampler
    from agents.ppo.evaluate import eval_summary, evaluate
    from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
    from agents.ppo.rollout import make_prompt_source
    from diffenvs.io import load_tensors

    cfg = json.loads((run / "config.json").read_text())
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=cfg["num_envs"],
        model=cfg["model"],
        prompts=make_prompt_source(cfg["prompts"]),
        num_steps=cfg["num_steps"],
        eta=cfg["eta"],
        guidance_scale=cfg["guidance_scale"],
        reward=cfg["reward"],
        action_mode="latent",
        base_step="auto",
    )
    sampler = envs.unwrapped.sampler
    if cfg.get("cfg_free"):
        sampler = unguided_sampler(sampler)
    source = make_prompt_source(cfg["eval_prompts"])
    rng = np.random.default_rng(cfg["eval_seed"])
    prompts = [source.sample(rng) for _ in range(cfg["eval_episodes"])]
    with np.load(run / "eval_before.npz") as f:
        base = f["rewards"]
    mu, sd = float(base.mean()), float(base.std())
    times = _progress(run)
    rows = [{"update": 0, "time_s": 0.0, "reward_mean": mu, "gain_std": 0.0}]
    for folder in sorted((run / "checkpoints").glob("update_*")):
        update = int(folder.name.split("_")[1])
        spec = SimpleNamespace(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
        )
        policy = DiffusionActorCritic(build_policy_unet(envs.unwrapped.sampler.unet, spec), sampler)
        policy.load_state_dict(load_tensors(folder / "model.safetensors"), strict=False)
        out = evaluate(policy, envs, prompts, cfg["eval_seed"], accelerator, oracle)
        s = eval_summary(out, prompts)
        row = {
            "update": update,
            "time_s": times[update],
            "reward_mean": s["reward_mean"],
            "reward_std": s["reward_std"],
            "gain_std": (s["reward_mean"] - mu) / sd,
        }
        row |= {k: v for k, v in s.items() if k.startswith("oracle_")}
        rows.append(row)
        print(run.name, row, flush=True)
    envs.close()
    return rows


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"


def _figure(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, rows in curves.items():
        ax.plot(
            [r["time_s"] / 60 for r in rows],
            [r["gain_std"] for r in rows],
            marker="o",
            ms=3,
            lw=1.2,
            label=name,
        )
    ax.set_xlabel("training wall-clock (min, one CPU thread)")
    ax.set_ylabel("held-out reward gain (base std)")
    ax.set_title("target image: GRPO vs PPO (same held-out seeds and noise)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: Args) -> None:
    from accelerate import Accelerator

    from diffenvs.rewards import make_reward

    out = Path(args.output_dir)
    grpo_name = "grpo" + (f"_{args.tag}" if args.tag else "")
    wall: dict[str, float] = {}
    if not args.skip_training:
        for seed in args.seeds:
            if not (out / f"ppo_seed{seed}" / "eval.json").exists():
                wall[f"ppo_seed{seed}"] = _train(
                    "ppo", seed, args.ppo_updates, (), args, f"ppo_seed{seed}"
                )
            name = f"{grpo_name}_seed{seed}"
            if not (out / name / "eval.json").exists():
                wall[name] = _train("grpo", seed, args.grpo_updates, args.grpo_args, args, name)
    accelerator = Accelerator(cpu=True)
    oracle = make_reward("oracle", soft=False)
    summary: dict[str, Any] = {"command": " ".join(sys.argv), "measured_on": "world v1", "runs": {}}
    curves: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        names = [f"ppo_seed{seed}", f"{grpo_name}_seed{seed}"]
        rows = {n: evaluate_checkpoints(out / n, accelerator, oracle) for n in names}
        ppo_final = rows[names[0]][-1]["gain_std"]
        reach = next((r for r in rows[names[1]] if r["gain_std"] >= ppo_final), None)
        summary["runs"][str(seed)] = {
            "curves": rows,
            "ppo_final_gain_std": ppo_final,
            "ppo_time_s": rows[names[0]][-1]["time_s"],
            "grpo_final_gain_std": rows[names[1]][-1]["gain_std"],
            "grpo_time_s": rows[names[1]][-1]["time_s"],
            "grpo_time_to_ppo_final_s": None if reach is None else reach["time_s"],
            "process_wall_s": {n: wall.get(n) for n in names},
        }
        for n in names:
            curves[f"{n.split('_seed')[0]} (seed {seed})"] = rows[n]
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stem = "summary" + (f"_{args.tag}" if args.tag else "")
    (results / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| seed | PPO final gain (std) | PPO time (s) | GRPO final gain (std) | GRPO time (s) "
        "| GRPO time to PPO's final gain (s) |",
        "|---|---|---|---|---|---|",
    ]
    for seed, r in summary["runs"].items():
        lines.append(
            f"| {seed} | {r['ppo_final_gain_std']:+.1f} | {r['ppo_time_s']:.0f} | "
            f"{r['grpo_final_gain_std']:+.1f} | {r['grpo_time_s']:.0f} | "
            f"{_seconds(r['grpo_time_to_ppo_final_s'])} |"
        )
    (results / f"{stem}.md").write_text(f"`{summary['command']}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    _figure(curves, Path(args.figure))


if __name__ == "__main__":
    main(tyro.cli(Args))
