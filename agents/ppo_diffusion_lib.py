"""Building blocks of the diffusion-policy PPO agent (:mod:`agents.ppo_diffusion`).

Kept apart from the training script so they can be tested on plain tensors:

* :class:`RolloutBuffer`: one update's trajectories, laid out (B trajectories, T steps).
* :func:`per_prompt_advantages` (critic-free, DDPO-style) and :func:`gae_advantages`.
* :class:`FixedKLController` / :class:`AdaptiveKLController`: the coefficient β of seed 004
  eq. 5.3 (the adaptive one is Ziegler et al.'s target-KL controller).
* Checkpoint helpers that turn optimizer and RNG state into flat tensor dicts (safetensors, no
  pickle) and back.
* Plots: before/after image grids, reward histograms (seed 004 Figs 6.6, 6.10), reward/KL curves.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Rollout buffer and advantages


@dataclass
class RolloutBuffer:
    """Per-step transitions of B trajectories of T sampler steps (all envs share the schedule).

    ``latents[b, k]`` is x_t before step k, ``next_latents[b, k]`` the x_{t-1} the policy chose;
    ``log_probs`` are the behaviour policy's log-probs of those actions (the PPO "old" log-probs)
    and ``base_log_probs`` the frozen base model's, as the env reports them.
    """

    latents: torch.Tensor  # (B, T, C, h, w)
    next_latents: torch.Tensor  # (B, T, C, h, w)
    embeds: torch.Tensor  # (B, L, D) prompt conditioning, one per trajectory
    log_probs: torch.Tensor  # (B, T)
    base_log_probs: torch.Tensor  # (B, T)
    rewards: torch.Tensor  # (B,) terminal rewards as the env reports them (raw)
    groups: torch.Tensor  # (B,) prompt-group id (trajectories of one prompt share it)
    prompts: list[str]
    values: torch.Tensor | None = None  # (B, T) critic estimates, when a value function is used

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.log_probs.shape)  # type: ignore[return-value]

    def kl(self) -> torch.Tensor:
        """Per-step k3 estimate of KL(policy || base) at the taken actions, (B, T) (eq. 5.3)."""
        from diffenvs.logprob import k3_kl

        return k3_kl(self.log_probs, self.base_log_probs)

    def validate(self) -> None:
        b, t = self.shape
        expect = {
            "latents": (b, t),
            "next_latents": (b, t),
            "base_log_probs": (b, t),
            "rewards": (b,),
            "groups": (b,),
        }
        for name, lead in expect.items():
            got = tuple(getattr(self, name).shape[: len(lead)])
            if got != lead:
                raise ValueError(f"RolloutBuffer.{name} starts with shape {got}, expected {lead}.")
        if self.values is not None and tuple(self.values.shape) != (b, t):
            raise ValueError(f"RolloutBuffer.values has shape {tuple(self.values.shape)}.")
        if len(self.prompts) != b or self.embeds.shape[0] != b:
            raise ValueError("RolloutBuffer needs one prompt and one embedding per trajectory.")


def returns_to_go(terminal: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """Undiscounted (γ = 1) return from each step: ``R - β Σ_{s >= t} k3_s``, shape (B, T)."""
    penalty = torch.flip(torch.cumsum(torch.flip(kl, [1]), 1), [1])
    return terminal[:, None] - beta * penalty


def per_prompt_advantages(
    returns: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Critic-free advantages: returns standardised within each prompt group, per step index.

    Every trajectory of a group shares its prompt, so the group mean is a per-prompt baseline
    (DDPO's per-prompt stat tracking, here within one rollout). Groups of a single trajectory fall
    back to the statistics of the whole batch, which is then plain batch normalisation.
    """
    adv = torch.empty_like(returns)
    ids, counts = torch.unique(groups, return_counts=True)
    batch_mean, batch_std = returns.mean(0), returns.std(0, unbiased=False)
    for gid, count in zip(ids.tolist(), counts.tolist(), strict=True):
        rows = groups == gid
        if count > 1:
            mean, std = returns[rows].mean(0), returns[rows].std(0, unbiased=False)
        else:
            mean, std = batch_mean, batch_std
        adv[rows] = (returns[rows] - mean) / (std + eps)
    return adv


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over fixed-length episodes: (advantages, value targets), both (B, T).

    ``rewards[:, k]`` is the reward of step k (the KL penalty, plus the terminal reward on the last
    step); the value after the last step is 0 because the episode ends there.
    """
    b, t = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    for k in reversed(range(t)):
        next_value = values[:, k + 1] if k + 1 < t else torch.zeros_like(last)
        delta = rewards[:, k] + gamma * next_value - values[:, k]
        last = delta + gamma * lam * last
        adv[:, k] = last
    return adv, adv + values


# --------------------------------------------------------------------------------------------
# KL coefficient controllers


class FixedKLController:
    """A constant β (seed 004 §6.5 used 0.02; its §7.1 reports that a fixed β fails)."""

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)

    def update(self, kl: float, n_steps: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Ziegler et al. (2019)'s controller: move β so the measured KL tracks ``target``.

    ``e = clip(KL / target - 1, -0.2, 0.2)``; ``β ← β (1 + e · n_steps / horizon)``: β grows while
    the policy is further from the base model than wanted and shrinks when it is closer.
    """

    def __init__(self, beta: float, target: float, horizon: float) -> None:
        if not target > 0 or not horizon > 0:
            raise ValueError(f"kl_target and kl_horizon must be > 0, got {target}, {horizon}.")
        self.beta, self.target, self.horizon = float(beta), float(target), float(horizon)

    def update(self, kl: float, n_steps: int) -> float:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


# --------------------------------------------------------------------------------------------
# Checkpoint helpers (tensors only, so checkpoints are safetensors without pickle)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Optimizer state → (flat tensors, JSON of the param groups and scalar state)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, json.dumps(meta)


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: str
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    info = json.loads(meta)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def rng_to_tensors() -> dict[str, torch.Tensor]:
    """Python, NumPy (legacy global) and torch RNG states as integer tensors."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_name != "MT19937":
        raise ValueError(f"Unexpected NumPy global RNG {np_name!r}.")
    out = {
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor(
            [gauss is not None, 0.0 if gauss is None else gauss], dtype=torch.float64
        ),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_extra": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def rng_from_tensors(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_to_tensors`."""
    py = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((int(py[0]), tuple(int(x) for x in py[1:]), gauss if has_gauss else None))
    pos, has_np_gauss = state["numpy_extra"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            int(pos),
            int(has_np_gauss),
            float(state["numpy_gauss"][0]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = sorted(k for k in state if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state[k] for k in cuda])


# --------------------------------------------------------------------------------------------
# World prompt sets


def count_prompts(split: str = "train", n: int = 64, seed: int = 0) -> list[str]:
    """World captions without style modifiers, the three counts in turn (``split``: train/heldout).

    The oracle reward checks every attribute a caption names, counts included; these short
    captions make counting a large share of what it checks.
    """
    from diffenvs.world.attributes import COUNTS
    from diffenvs.world.render import is_held_out, sample_scene

    if split not in ("train", "heldout"):
        raise ValueError(f"count prompt split must be 'train' or 'heldout', got {split!r}.")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        scene = sample_scene(rng, modifier_prob=0.0).with_(count=COUNTS[len(out) % len(COUNTS)])
        caption = scene.caption()
        if caption not in seen and is_held_out(caption) == (split == "heldout"):
            seen.add(caption)
            out.append(caption)
    return out


# --------------------------------------------------------------------------------------------
# Plots


def image_grid(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """uint8 images (N, H, W, 3) tiled in a white-padded grid."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return grid


def save_before_after(
    before: np.ndarray, after: np.ndarray, path: Path, cols: int = 8, scale: int = 3
) -> None:
    """Two grids side by side (same prompts and seeds), as seed 004 Figs 6.4 and 6.8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [image_grid(imgs, cols) for imgs in (before, after)]
    height, width = grids[0].shape[:2]
    # Size the figure from the grids so the images fill it at ``scale`` screen pixels per pixel.
    fig, axes = plt.subplots(
        1, 2, figsize=(2 * width * scale / 100 + 0.2, height * scale / 100 + 0.4)
    )
    for ax, grid, title in zip(axes, grids, ("base model", "after PPO"), strict=True):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_reward_histogram(
    before: Sequence[float], after: Sequence[float], path: Path, label: str = "reward"
) -> None:
    """Reward distributions before vs after, standardised by the base distribution (Fig. 6.6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    mu, sd = b.mean(), b.std() if b.std() > 0 else 1.0
    zb, za = (b - mu) / sd, (a - mu) / sd
    bins = np.linspace(min(zb.min(), za.min()), max(zb.max(), za.max()) + 1e-9, 30)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(zb, bins=bins, alpha=0.6, label=f"base (mean {b.mean():.3g})")
    ax.hist(za, bins=bins, alpha=0.6, label=f"after PPO (mean {a.mean():.3g})")
    ax.set_xlabel(f"{label}, standardised by the base distribution")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_curves(history: list[dict[str, float]], path: Path) -> None:
    """Mean rollout reward, KL and β per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x = [h["update"] for h in history]
    keys = [("reward_mean", "mean rollout reward (raw)"), ("kl", "KL to base (k3, per image)")]
    keys.append(("beta", "KL coefficient β"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, (key, title) in zip(axes, keys, strict=True):
        ax.plot(x, [h.get(key, float("nan")) for h in history])
        ax.set_title(title)
        ax.set_xlabel("update")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
