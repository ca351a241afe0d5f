"""Building blocks of the diffusion-policy PPO agent (:mod:`agents.ppo_diffusion`).

Kept apart from the training script so they can be tested on plain tensors:

* :class:`RolloutBuffer`: one update's trajectories, laid out (B trajectories, T steps).
* :func:`per_prompt_advantages` (critic-free, DDPO-style) and :func:`gae_advantages`.
* :class:`FixedKLController` / :class:`AdaptiveKLController`: the coefficient β of seed 004
  eq. 5.3 (the adaptive one is Ziegler et al.'s target-KL controller).
* Prompt sets: :func:`make_prompt_source` (adds the count captions of
  :func:`diffenvs.envs.denoise_prompts.count_prompts`).

Checkpoint helpers live in :mod:`agents.ppo_diffusion_checkpoint`, plots in
:mod:`agents.ppo_diffusion_eval`.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    exact_kl: torch.Tensor | None = None  # (B, T) closed-form KL(policy step || base step)
    base_means: torch.Tensor | None = None  # (B, T, C, h, w) the base model's step means

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.log_probs.shape)  # type: ignore[return-value]

    def kl(self, estimator: str = "exact") -> torch.Tensor:
        """Per-step KL(policy || base), (B, T): closed form ("exact") or k3 (eq. 5.3, "k3").

        Both steps are Gaussians with the scheduler's std, so the exact value is cheap; k3 is the
        sample estimate from the taken actions' log-probs and is what seed 004 uses.
        """
        from diffenvs.logprob import k3_kl

        if estimator == "exact" and self.exact_kl is not None:
            return self.exact_kl
        if estimator not in ("exact", "k3"):
            raise ValueError(f"KL estimator must be 'exact' or 'k3', got {estimator!r}.")
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
    returns: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6, scale: bool = True
) -> torch.Tensor:
    """Critic-free advantages: returns standardised within each prompt group, per step index.

    Every trajectory of a group shares its prompt, so the group mean is a per-prompt baseline
    (DDPO's per-prompt stat tracking, here within one rollout). Groups of a single trajectory fall
    back to the statistics of the whole batch, which is then plain batch normalisation.
    ``scale=False`` only subtracts the baseline (as Dr. GRPO does): a group whose returns differ by
    noise alone then gives small advantages rather than unit-variance ones.
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
        adv[rows] = (returns[rows] - mean) / (std + eps) if scale else returns[rows] - mean
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
# World prompt sets


def make_prompt_source(spec: str) -> Any:
    """A prompt source for a name: the env's own specs plus 'counts' / 'counts:heldout' (64
    prompts) and 'counts:SPLIT:N' (N of them)."""
    from diffenvs.envs.denoise_prompts import ListPrompts, count_prompts
    from diffenvs.envs.denoise_prompts import make_prompt_source as env_source

    if spec == "counts" or spec.startswith("counts:"):
        split, _, size = spec.partition(":")[2].partition(":")
        if size and not (size.isdigit() and int(size) >= 1):
            raise ValueError(
                f"prompts={spec!r}: write 'counts:SPLIT:N' with N a positive number of prompts "
                "(e.g. counts:train:2048)."
            )
        return ListPrompts(count_prompts(split or "train", n=int(size or 64)), origin=spec)
    return env_source(spec)
