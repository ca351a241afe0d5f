"""The output contract of every environment, checked step by step, and random play that checks it.

``random_play(env, steps, seed)`` steps an env with random valid actions (its own ``action_space``,
or ``action_masks()`` where the env has one) and raises :class:`ContractViolation` on the first
observation outside ``observation_space``, non-finite number in an observation, reward or info, or
malformed return value. The tests run it briefly per env; ``benchmarks/soak.py`` runs it long.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ContractViolation", "check_finite_tree", "check_step_output", "random_play"]


class ContractViolation(AssertionError):
    """An environment returned something its documented spaces or the validation policy forbid."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ContractViolation(message)


def check_finite_tree(value: Any, what: str) -> None:
    """Every float in a (nested dict of) value(s) is finite."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite_tree(v, f"{what}[{k!r}]")
    elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
        _require(bool(np.isfinite(value).all()), f"{what} holds non-finite values")
    elif isinstance(value, float | np.floating):
        _require(bool(np.isfinite(value)), f"{what} = {value}")


def check_observation(env: Any, obs: Any) -> None:
    _require(env.observation_space.contains(obs), "observation outside observation_space")
    check_finite_tree(obs, "observation")


def check_step_output(env: Any, out: tuple) -> bool:
    """Check one ``step`` result; returns whether the episode ended."""
    _require(isinstance(out, tuple) and len(out) == 5, "step() must return a 5-tuple")
    obs, reward, terminated, truncated, info = out
    check_observation(env, obs)
    _require(isinstance(reward, float) and bool(np.isfinite(reward)), f"reward {reward!r}")
    _require(isinstance(terminated, bool) and isinstance(truncated, bool), "flags must be bool")
    _require(isinstance(info, dict), "info must be a dict")
    check_finite_tree({k: v for k, v in info.items() if k != "image"}, "info")
    return terminated or truncated


def random_play(env: Any, steps: int, seed: int = 0) -> dict[str, int]:
    """``steps`` random valid steps (resetting at episode ends), every output checked."""
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    check_observation(env, obs)
    episodes = 0
    base = env.unwrapped
    for _ in range(steps):
        if hasattr(base, "action_masks"):
            action = int(rng.choice(np.flatnonzero(base.action_masks())))
        else:
            action = env.action_space.sample()
        if check_step_output(env, env.step(action)):
            episodes += 1
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            check_observation(env, obs)
    return {"steps": steps, "episodes": episodes}
