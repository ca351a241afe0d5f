"""``GrammarGrid-v0`` helpers shared by every grid agent (tabular, SB3, Tianshou).

* :func:`parse_target` reads a ``--target`` option.
* :func:`run_episode` plays one episode and records what the statistics need.
* :func:`episode_statistics` averages those records into Marathe's (RLDF) Table 3 statistics, so
  every grid agent's evaluation compares with every other's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


def parse_target(text: str) -> Any:
    """'1,2,3,4' → coordinates; anything else (a prompt or an image path) is passed through."""
    parts = [p.strip() for p in text.split(",")]
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return text


def run_episode(env: gym.Env, act: Callable[[Any], int], seed: int) -> dict[str, Any]:
    """One ``GrammarGrid-v0`` episode from ``env.reset(seed=seed)`` with ``act(obs) -> action``.

    The record holds the per-step distances to the target (start included), success, length,
    return, and the matched fine/coarse semantics at the start and at the end.
    """
    obs, info = env.reset(seed=seed)
    start, distances, ret, length, done = info, [info["distance"]], 0.0, 0, False
    while not done:
        obs, r, terminated, truncated, info = env.step(int(act(obs)))
        ret, length = ret + float(r), length + 1
        distances.append(info["distance"])
        done = terminated or truncated
    return {
        "distances": distances,
        "success": bool(info["is_success"]),
        "length": length,
        "return": ret,
        "fine_start": start.get("fine_matches"),
        "fine_end": info.get("fine_matches"),
        "scene_start": start.get("scene_match"),
        "scene_end": info.get("scene_match"),
    }


def episode_statistics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Marathe's (RLDF) Table 3 statistics, averaged over evaluation episodes.

    D_f, D_max, D_min, std (ρ), var (σ²): the final, largest and smallest distance to the target
    (in grid steps) along an episode and the spread of the distances along it. Conv.: the share of
    episodes that reach the target. F/C semantic gain: matched fine (object) slots and coarse
    (scene) slot at the end minus at the start of the episode. Plus success rate, episode length
    and return.
    """
    if not records:
        return {}

    def mean(xs: list[float]) -> float:
        xs = [x for x in xs if x is not None]
        return float(np.mean(xs)) if xs else float("nan")

    d = [np.asarray(r["distances"], dtype=np.float64) for r in records]
    return {
        "D_f": mean([x[-1] for x in d]),
        "D_max": mean([x.max() for x in d]),
        "D_min": mean([x.min() for x in d]),
        "std": mean([x.std() for x in d]),
        "var": mean([x.var() for x in d]),
        "conv": mean([float(r["success"]) for r in records]),
        "fine_gain": mean(
            [
                r["fine_end"] - r["fine_start"]
                for r in records
                if r["fine_end"] is not None and r["fine_start"] is not None
            ]
        ),
        "coarse_gain": mean(
            [
                int(r["scene_end"]) - int(r["scene_start"])
                for r in records
                if r["scene_end"] is not None and r["scene_start"] is not None
            ]
        ),
        "success_rate": mean([float(r["success"]) for r in records]),
        "steps": mean([r["length"] for r in records]),
        "steps_success": mean([r["length"] for r in records if r["success"]]),
        "return": mean([r["return"] for r in records]),
    }
