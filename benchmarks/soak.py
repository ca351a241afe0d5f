"""Long random-play soak of every environment, with hostile actions mixed in.

Each env plays ``steps`` random valid steps (``diffenvs.envs.contract.random_play`` checks every
observation, reward and info against the env's spaces and the validation policy), then the same
number of steps where every ``hostile_every``-th action is hostile (NaN, inf, huge, wrong shape,
wrong dtype, strings): each must either work with valid outputs or raise a documented error type
(``diffenvs.errors.DOCUMENTED_ERRORS``), after which play goes on from a fresh reset. Anything
else stops the run with the failing input. ``hostile_accepted`` counts hostile draws that worked
with valid outputs (e.g. float16 noise, a valid action in another dtype). Writes
``benchmarks/results/soak/soak.json``.

    OMP_NUM_THREADS=1 python benchmarks/soak.py                        # ~10 min on 2 CPU cores
    OMP_NUM_THREADS=1 python benchmarks/soak.py --envs grid --steps 10000
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.envs.contract import check_observation, check_step_output, random_play
from diffenvs.errors import DOCUMENTED_ERRORS


@dataclass
class Config:
    envs: list[str] = field(default_factory=lambda: ["grid", "append", "denoise"])
    """Which envs: grid (GrammarGrid-v0), append (PromptAppend-v0), denoise (DiffusionDenoise-v0)."""
    steps: int = 0
    """Steps per phase per env; 0 uses each env's default (grid 10000, append 2000, denoise 400)."""
    hostile_every: int = 5
    """In the hostile phase, every N-th action is hostile."""
    seed: int = 0
    out: Path = Path("benchmarks/results/soak/soak.json")


DEFAULT_STEPS = {"grid": 10_000, "append": 2_000, "denoise": 400}


def make(name: str) -> gym.Env:
    if name == "grid":
        return gym.make("GrammarGrid-v0", model="renderer", detector="oracle")
    if name == "append":
        return gym.make("PromptAppend-v0", model="renderer", reward_mode="per_step")
    if name == "denoise":
        return gym.make("DiffusionDenoise-v0", num_steps=4, reward="oracle")
    raise SystemExit(f"Unknown env {name!r}; use grid, append or denoise.")


def hostile_actions(env: gym.Env, rng: np.random.Generator) -> list[Any]:
    space = env.action_space
    shape = space.shape or ()
    return [
        np.full(shape, np.nan, np.float32),
        np.full(shape, np.inf, np.float32),
        np.full(shape, 1e30, np.float32),
        np.full(shape, 3e4, np.float32),
        np.zeros((*shape, 2), np.float32),
        np.zeros(shape, np.int64) if shape else np.int64(-1),
        rng.standard_normal(shape).astype(np.float16) if shape else 1.5,
        "0",
        None,
        [0, 1],
        10**30,
        -1,
    ]


def hostile_phase(env: gym.Env, steps: int, every: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    counts = {"steps": 0, "hostile": 0, "hostile_accepted": 0, "documented_errors": 0}
    base = env.unwrapped
    for i in range(steps):
        if i % every == every - 1:
            options = hostile_actions(env, rng)
            action = options[int(rng.integers(len(options)))]
            counts["hostile"] += 1
        elif hasattr(base, "action_masks"):
            action = int(rng.choice(np.flatnonzero(base.action_masks())))
        else:
            action = env.action_space.sample()
        try:
            ended = check_step_output(env, env.step(action))
            counts["hostile_accepted"] += i % every == every - 1
        except DOCUMENTED_ERRORS:
            counts["documented_errors"] += 1
            ended = True
        counts["steps"] += 1
        if ended:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            check_observation(env, obs)
    return counts


def main(cfg: Config) -> dict[str, Any]:
    torch.set_num_threads(1)
    results: dict[str, Any] = {"config": {**asdict(cfg), "out": str(cfg.out)}}
    results["machine"] = {"platform": platform.platform(), "torch": torch.__version__}
    for name in cfg.envs:
        steps = cfg.steps or DEFAULT_STEPS[name]
        env = make(name)
        t0 = time.perf_counter()
        play = random_play(env, steps, seed=cfg.seed)
        t1 = time.perf_counter()
        hostile = hostile_phase(env, steps, cfg.hostile_every, cfg.seed + 1)
        t2 = time.perf_counter()
        results[name] = {
            "random_play": {**play, "seconds": round(t1 - t0, 1)},
            "hostile_play": {**hostile, "seconds": round(t2 - t1, 1)},
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        env.close()
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {cfg.out}")
    return results


if __name__ == "__main__":
    main(tyro.cli(Config))
