"""Advantages and the KL coefficient of the diffusion-policy PPO agent, on plain tensors.

* :func:`returns_to_go` and :func:`per_prompt_advantages`: critic-free advantages (DDPO's
  per-prompt normalisation) of a terminal reward minus the KL penalty to go (Kristiansen & Vågen
  2023, eq. 5.3); :func:`gae_advantages` when a value function is trained.
* :class:`FixedKLController` / :class:`AdaptiveKLController`: β, the weight of that penalty (the
  adaptive one is Ziegler et al.'s target-KL controller).

* :func:`step_log_ratio`, :func:`clipped_surrogate`, :func:`approx_kl`: PPO's ratio under the
  chosen log-prob reduction, its clipped objective, and the k3 estimate of how far the policy moved.

The minibatch loop that uses them is :func:`agents.ppo.update.ppo_update`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# PPO's ratio and clipped objective


def step_log_ratio(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    reduction: Literal["mean", "sum"],
    num_dims: int,
) -> torch.Tensor:
    """log π_θ(a|s) - log π_old(a|s) of a step, from log-probs summed over the latent's dims.

    ``"sum"``: the log-ratio of the whole latent (a joint Gaussian over ``num_dims`` dims).
    ``"mean"``: that divided by ``num_dims``, which is DDPO's formulation (log-probs averaged over
    the latent's dimensions): exp of it is the geometric mean of the per-dimension ratios.
    """
    diff = log_prob - old_log_prob
    if reduction == "mean":
        return diff / num_dims
    if reduction == "sum":
        return diff
    raise ValueError(f"logprob_reduction must be 'mean' or 'sum', got {reduction!r}.")


def clipped_surrogate(
    log_ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped loss per sample, the ratio, and where the clip acts.

    Returns ``(terms, ratio, clipped)``: ``terms = max(-A r, -A clip(r, 1-ε, 1+ε))`` (minimise its
    mean), and ``clipped`` (bool) marks samples whose clipped branch wins strictly, i.e. whose
    policy gradient the clip removes. Far outside the trust region that is half of the samples
    (those whose advantage pushes the ratio further out), so a clip fraction near 0.5 means the
    ratio is no longer held near 1.
    """
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped_term = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped_term), ratio, clipped_term > unclipped


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(π_old || π_θ) from actions drawn by π_old: mean of (r - 1) - log r.

    Unbiased and >= 0 (Schulman's estimator), in the units of the log-ratio's reduction: nats per
    latent dimension under ``"mean"``, per step under ``"sum"``.
    """
    lr = log_ratio.double().clamp(max=80.0)
    return (torch.expm1(lr) - lr).mean().to(log_ratio.dtype)


# --------------------------------------------------------------------------------------------
# Advantages


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


class PromptStatTracker:
    """DDPO's per-prompt reward statistics across updates (Black et al., "Training Diffusion
    Models with Reinforcement Learning"): each prompt keeps its last ``buffer`` terminal rewards,
    and a reward is standardised with its prompt's mean and std once ``min_count`` are stored (the
    whole batch's statistics before that)."""

    def __init__(self, buffer: int = 32, min_count: int = 16) -> None:
        self.buffer, self.min_count = buffer, min_count
        self.history: dict[str, list[float]] = {}

    def standardise(
        self, prompts: list[str], rewards: torch.Tensor, scale: bool = True
    ) -> torch.Tensor:
        """(rewards - baseline) [/ std] per prompt, after adding this batch to the history."""
        values = rewards.double()
        out = torch.empty_like(values)
        batch_mean, batch_std = values.mean(), values.std(unbiased=False)
        for prompt in dict.fromkeys(prompts):
            rows = torch.tensor([p == prompt for p in prompts])
            kept = (self.history.get(prompt, []) + values[rows].tolist())[-self.buffer :]
            self.history[prompt] = kept
            if len(kept) >= self.min_count:
                mean, std = float(np.mean(kept)), float(np.std(kept))
            else:
                mean, std = float(batch_mean), float(batch_std)
            centred = values[rows] - mean
            out[rows] = centred / (std + 1e-6) if scale else centred
        return out.to(rewards.dtype)

    def state(self) -> dict[str, list[float]]:
        return {p: list(v) for p, v in self.history.items()}


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
    """A constant β (Kristiansen & Vågen 2023 §6.5 used 0.02; their §7.1 reports that a fixed β
    fails)."""

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
