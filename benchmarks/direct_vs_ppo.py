"""Side by side on the PPO target-image task: DRaFT/AlignProp against the PPO preset.

The PPO ``target-image`` preset (Kristiansen & Vågen 2023, Exp. 1: one prompt, 4 DDIM steps,
``target_rmse`` to a world render) and the direct agents' ``target-image`` preset (the same prompt,
sampler, reward and 64 held-out seeds), one run each, one at a time, on the same machine. Each
run writes its held-out reward before/after, its training wall-clock and its peak memory (peak
RSS of its own process on CPU, CUDA's allocated peak on a GPU), plus the oracle's and the judge's
readings of the scene (the reward-hacking check). Run each in its own process so the peaks are
its own::

    OMP_NUM_THREADS=1 python benchmarks/direct_vs_ppo.py --agent ppo
    OMP_NUM_THREADS=1 python benchmarks/direct_vs_ppo.py --agent draft
    OMP_NUM_THREADS=1 python benchmarks/direct_vs_ppo.py --agent alignprop
    python benchmarks/direct_vs_ppo.py --agent table      # benchmarks/results/direct/vs_ppo.md

Writes benchmarks/results/direct/vs_ppo_AGENT.json.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from diffenvs.io import atomic_write_bytes, write_json


@dataclass
class VsPPOConfig:
    agent: Literal["ppo", "draft", "alignprop", "table"] = "draft"
    seed: int = 0
    direct_updates: int = 20
    """Optimiser steps of the direct agent (8 images each)."""
    out: Path = Path("benchmarks/results/direct")


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene_rates(images: np.ndarray) -> dict[str, float]:
    """Oracle and judge: share of images showing the target's night sky and a yellow star."""
    from diffenvs.models import load_judge
    from diffenvs.rewards import OracleReward

    out = {}
    for who, reader in (("oracle", None), ("judge", load_judge())):
        for what in ("night sky", "star", "yellow"):
            r = OracleReward(target=what, soft=False, oracle=reader)
            acc = r.evaluate(images, [""] * len(images)).details["accuracy"]
            out[f"{who}_{what.replace(' ', '_')}"] = float(acc.float().mean())
    return out


def run_ppo(cfg: VsPPOConfig) -> dict:
    from agents.ppo.config import PPOConfig
    from agents.ppo.train import train

    t0, c0 = time.perf_counter(), time.process_time()
    res = train(
        PPOConfig(
            preset="target-image",
            seed=cfg.seed,
            output_dir="runs/direct_vs_ppo",
            run_name=f"ppo_seed{cfg.seed}",
            progress=False,
        )
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    before, after = res["eval_results"]["before"], res["eval_results"]["after"]
    return {
        "agent": "ppo --preset target-image",
        "updates": len(res["history"]),
        "images_trained": 16 * len(res["history"]),
        "reward_before": float(before["rewards"].mean()),
        "reward_after": float(after["rewards"].mean()),
        "train_s": float(res["history"][-1]["time_s"]),
        "run_s": wall,
        "run_cpu_s": cpu,
        "peak_mem_mb": _peak_mb(),
        "curve": [(h["time_s"], h["reward_mean"]) for h in res["history"]],
        **_scene_rates(after["images"]),
    }


def run_direct(cfg: VsPPOConfig) -> dict:
    from agents.direct.config import DirectConfig
    from agents.direct.train import train

    t0, c0 = time.perf_counter(), time.process_time()
    res = train(
        replace(
            DirectConfig(
                preset="target-image",
                algorithm=cfg.agent,
                seed=cfg.seed,
                num_updates=cfg.direct_updates,
                output_dir="runs/direct_vs_ppo",
                run_name=f"{cfg.agent}_seed{cfg.seed}",
                progress=False,
            ),
        )
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ev = res["eval"]
    return {
        "agent": f"{cfg.agent} --preset target-image",
        "updates": len(res["history"]),
        "images_trained": 8 * len(res["history"]),
        "reward_before": ev["before"]["rewards"],
        "reward_after": ev["after"]["rewards"],
        "train_s": float(res["history"][-1]["time_s"]),
        "update_s_mean": float(np.mean([h["update_s"] for h in res["history"]])),
        "run_s": wall,
        "run_cpu_s": cpu,
        "peak_mem_mb": _peak_mb(),
        "curve": [(h["time_s"], h["reward_mean"]) for h in res["history"]],
        **_scene_rates(res["eval_results"]["after"]["images"]),
    }


def table(cfg: VsPPOConfig) -> None:
    rows = {}
    for name in ("ppo", "draft", "alignprop"):
        path = cfg.out / f"vs_ppo_{name}.json"
        if path.is_file():
            rows[name] = json.loads(path.read_text())
    lines = [
        "# DRaFT / AlignProp vs PPO on the target-image task",
        "",
        "| agent | updates × images | held-out reward before → after | training wall-clock (s) | "
        "whole run: wall / CPU (s) | peak memory (MB) | oracle: night sky / star / yellow | "
        "judge: night sky / star / yellow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        per = r["images_trained"] // max(1, r["updates"])
        lines.append(
            f"| {r['agent']} | {r['updates']} × {per} | {r['reward_before']:.2f} → "
            f"{r['reward_after']:.2f} | {r['train_s']:.0f} | {r['run_s']:.0f} / "
            f"{r.get('run_cpu_s', float('nan')):.0f} | {r['peak_mem_mb']:.0f} | "
            f"{r['oracle_night_sky']:.0%} / {r['oracle_star']:.0%} / {r['oracle_yellow']:.0%} | "
            f"{r['judge_night_sky']:.0%} / {r['judge_star']:.0%} / {r['judge_yellow']:.0%} |"
        )
    if "ppo" in rows:
        for name in ("draft", "alignprop"):
            if name in rows:
                ratio = rows[name]["train_s"] / rows["ppo"]["train_s"]
                lines.append("")
                lines.append(
                    f"{name}: {ratio:.2f}x PPO's training wall-clock, final reward "
                    f"{rows[name]['reward_after']:.2f} vs PPO's {rows['ppo']['reward_after']:.2f}."
                )
    atomic_write_bytes(cfg.out / "vs_ppo.md", ("\n".join(lines) + "\n").encode())
    _plot(rows, cfg.out / "vs_ppo_curves.png")
    print("\n".join(lines))


def _plot(rows: dict, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, r in rows.items():
        t, rew = zip(*r["curve"], strict=True)
        ax.plot(t, rew, label=name)
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("training-batch reward (target_rmse)")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(cfg: VsPPOConfig) -> None:
    import torch

    torch.set_num_threads(1)
    if cfg.agent == "table":
        table(cfg)
        return
    result = run_ppo(cfg) if cfg.agent == "ppo" else run_direct(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / f"vs_ppo_{cfg.agent}.json", result)
    print({k: v for k, v in result.items() if k != "curve"})


if __name__ == "__main__":
    main(tyro.cli(VsPPOConfig))
