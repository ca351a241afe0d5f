"""One PPO update of the diffusion policy, top to bottom.

An update takes one rollout (:func:`agents.ppo.rollout.collect_rollout`: B trajectories of T
sampler steps, with the policy's and the base model's log-probs of every action) and

1. turns the standardised terminal rewards and the per-step KL to the base model into advantages
   (:func:`compute_advantages`: per-prompt normalisation as in DDPO, or GAE with a critic);
2. runs ``num_epochs`` passes of minibatch SGD over (a random subset of) the per-step transitions
   on PPO's clipped objective, plus DPOK's directly differentiated KL loss and the critic's
   loss (:func:`ppo_update`), with gradient accumulation and synchronisation across processes.

The optimiser and its learning-rate schedule (:func:`make_optimizer`) come first: the training
loop (:func:`agents.ppo.train.train`) builds them once.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.ppo.losses import (
    PromptStatTracker,
    approx_kl,
    clipped_surrogate,
    gae_advantages,
    per_prompt_advantages,
    returns_to_go,
    step_log_ratio,
)
from agents.ppo.policy import DiffusionActorCritic
from agents.ppo.rollout import RolloutBuffer

if TYPE_CHECKING:
    from agents.ppo.config import PPOConfig

# --------------------------------------------------------------------------------------------
# The optimiser (built once per run)


def _schedule(warmup: int, decay_over: int = 0):
    """Linear warm-up over ``warmup`` optimiser steps, then (``decay_over`` > 0) a linear fall to
    0 at step ``decay_over``."""

    def factor(step: int) -> float:
        scale = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
        if decay_over > 0 and step >= warmup:
            scale *= max(0.0, 1.0 - (step - warmup) / max(1, decay_over - warmup))
        return scale

    return factor


def optimiser_steps(cfg: PPOConfig) -> int:
    """Optimiser steps of a whole run (every update takes the same number)."""
    per_update = (
        cfg.num_envs * cfg.episodes_per_update * math.ceil(cfg.timestep_fraction * cfg.num_steps)
    )
    return (
        cfg.num_updates * cfg.num_epochs * per_update // (cfg.minibatch_size * cfg.grad_accum_steps)
    )


def make_optimizer(model: DiffusionActorCritic, cfg: PPOConfig) -> tuple[Any, Any]:
    """AdamW over the trainable UNet weights (and the critic) and its learning-rate schedule
    (linear warm-up; for the policy, optionally a linear decay to 0 over the run)."""
    groups = [
        {
            "params": [p for p in model.unet.parameters() if p.requires_grad],
            "lr": cfg.learning_rate,
        }
    ]
    if model.value is not None:
        groups.append({"params": list(model.value.parameters()), "lr": cfg.value_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    decay_over = optimiser_steps(cfg) if cfg.lr_decay == "linear" else 0
    lambdas = [_schedule(cfg.warmup_steps, decay_over), _schedule(cfg.value_warmup_steps)]
    lambdas = lambdas[: len(groups)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return optimizer, scheduler


# --------------------------------------------------------------------------------------------
# 1. Advantages


def compute_advantages(
    terminal: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    buffer: RolloutBuffer,
    cfg: PPOConfig,
    tracker: PromptStatTracker | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(advantages (B, T), value targets (B, T) or None) of one rollout.

    ``terminal`` (B,) is the standardised terminal reward (Kristiansen & Vågen 2023, eq. 5.2) and
    ``kl`` (B, T) the per-step KL to the base model, weighted by ``beta`` (eq. 5.3). With a
    ``tracker`` (``prompt_stats='tracker'``) the terminal reward is standardised with its prompt's
    statistics across updates, and the KL still to come is subtracted unscaled.
    """
    if cfg.advantage == "gae":
        step_rewards = -beta * kl
        step_rewards[:, -1] += terminal
        advantages, returns = gae_advantages(step_rewards, buffer.values, cfg.gamma, cfg.gae_lambda)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return advantages, returns
    if tracker is not None:
        base = tracker.standardise(buffer.prompts, terminal, scale=cfg.group_std)
        return returns_to_go(base, kl, beta), None
    advantages = per_prompt_advantages(
        returns_to_go(terminal, kl, beta), buffer.groups, scale=cfg.group_std
    )
    return advantages, None


# --------------------------------------------------------------------------------------------
# 2. Clipped-PPO minibatch SGD


def ppo_update(
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    buffer: RolloutBuffer,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
    cfg: PPOConfig,
    accelerator: Any,
    gen: torch.Generator,
) -> dict[str, Any]:
    """``num_epochs`` passes of clipped-PPO minibatch SGD over the buffer's (subsampled) steps.

    Returns the update's means (``pg_loss``, ``approx_kl``, ``clipfrac``, ``grad_norm`` before
    clipping, ``grad_clipped``: the share of steps where ``max_grad_norm`` bound, ...), the largest
    per-optimiser-step ``approx_kl_max``/``clipfrac_max``, ``inner_steps`` (optimiser steps
    taken), ``early_stop`` (1.0 when ``target_kl`` cut the update short) and ``inner``: one dict
    per optimiser step (epoch, approx_kl, clipfrac, ratio_max, grad_norm) for the per-step log.
    """
    b, t = buffer.shape
    device = accelerator.device
    n_sub = max(1, math.ceil(cfg.timestep_fraction * t))
    # A fresh subset of steps per trajectory (DDPO's timestep subsampling).
    steps = torch.stack([torch.randperm(t, generator=gen)[:n_sub] for _ in range(b)])
    rows = torch.arange(b)[:, None].expand(b, n_sub).reshape(-1)
    cols = steps.reshape(-1)
    adv = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
    # Steps below pg_min_std keep their KL terms but give no policy gradient (see the option).
    step_std = accelerator.unwrap_model(model).step_std(torch.arange(t))
    pg_steps = step_std >= cfg.pg_min_std
    if not bool(pg_steps.any()):
        raise ValueError(
            f"pg_min_std={cfg.pg_min_std} excludes every step (the largest σ_t is "
            f"{float(step_std.max()):.3f}); lower it."
        )
    num_dims = math.prod(buffer.latents.shape[2:])
    # The KL loss takes the log-prob's reduction, so kl_loss_coef weighs it against the policy
    # gradient the same way under 'mean' and 'sum'.
    kl_scale = 1.0 / num_dims if cfg.logprob_reduction == "mean" else 1.0
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "kl_loss")}
    direct_kl = cfg.kl_loss_coef > 0
    if direct_kl and buffer.base_means is None:
        raise ValueError(
            "kl_loss_coef > 0 needs the base model's step means (RolloutBuffer.base_means), which "
            "this buffer lacks: build it with collect_rollout, or set kl_loss_coef=0."
        )
    inner: list[dict[str, float]] = []
    window: dict[str, list[torch.Tensor]] = {"log_ratio": [], "clipped": []}
    ratio_dev: list[float] = []
    stop = False
    total = len(rows)
    for epoch in range(cfg.num_epochs):
        order = torch.randperm(total, generator=gen)
        dev = 0.0
        for start in range(0, total, cfg.minibatch_size):
            idx = order[start : start + cfg.minibatch_size]
            r, k = rows[idx], cols[idx]
            micro = (start // cfg.minibatch_size) % cfg.grad_accum_steps
            last = micro == cfg.grad_accum_steps - 1
            # Synchronise gradients across processes only on the last micro-batch of a group.
            sync = nullcontext() if last else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    log_prob, value, kl = model(
                        buffer.latents[r, k].to(device),
                        k.to(device),
                        buffer.embeds[r].to(device),
                        buffer.next_latents[r, k].to(device),
                        buffer.base_means[r, k].to(device) if direct_kl else None,
                    )
                log_ratio = step_log_ratio(
                    log_prob, buffer.log_probs[r, k].to(device), cfg.logprob_reduction, num_dims
                )
                pg_terms, ratio, clipped = clipped_surrogate(
                    log_ratio, adv[r, k].to(device), cfg.clip_range
                )
                pg = (pg_terms * pg_steps[k].to(device)).mean()
                loss = pg
                if kl is not None:
                    # DPOK's KL regulariser: the exact per-step KL is differentiable in θ, so it
                    # pulls the policy back to the base model without the policy gradient's noise.
                    kl_loss = kl.mean() * kl_scale
                    loss = loss + cfg.kl_loss_coef * kl_loss
                    stats["kl_loss"].append(float(kl_loss.detach()))
                if value is not None and returns is not None:
                    v_loss = 0.5 * ((value - returns[r, k].to(device)) ** 2).mean()
                    loss = loss + cfg.vf_coef * v_loss
                    stats["v_loss"].append(float(v_loss.detach()))
                accelerator.backward(loss / cfg.grad_accum_steps)
            stats["pg_loss"].append(float(pg.detach()))
            window["log_ratio"].append(log_ratio.detach().float().cpu())
            window["clipped"].append(clipped.detach().float().cpu())
            dev = max(dev, float((ratio.detach() - 1).abs().max()))
            if last:
                row = _inner_stats(window, accelerator, epoch)
                inner.append(row)
                window = {"log_ratio": [], "clipped": []}
                # Checked before the step: none is taken from a policy already past target_kl.
                stop = cfg.target_kl is not None and row["approx_kl"] > cfg.target_kl
                if stop:
                    optimizer.zero_grad(set_to_none=True)
                    break
                norm = accelerator.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm
                )
                # The norm before clipping: whether max_grad_norm binds depends on the reduction.
                row["grad_norm"] = float("nan") if norm is None else float(norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        ratio_dev.append(dev)
        if stop:
            break
    out: dict[str, Any] = {k: float(np.mean(v)) for k, v in stats.items() if v}
    out |= _update_stats(inner, cfg.max_grad_norm)
    out |= {"inner_steps": float(len(inner) - int(stop)), "early_stop": float(stop)}
    return out | {"ratio_dev_first_epoch": ratio_dev[0], "inner": inner}


def _update_stats(inner: list[dict[str, float]], max_grad_norm: float) -> dict[str, float]:
    """An update's summary of its optimiser steps: mean and largest approx KL and clip fraction,
    the largest ratio, the mean gradient norm before clipping and how often the clip bound."""
    out = {}
    for key in ("approx_kl", "clipfrac"):
        out[key] = float(np.mean([row[key] for row in inner]))
        out[f"{key}_max"] = float(np.max([row[key] for row in inner]))
    out["ratio_max"] = float(np.max([row["ratio_max"] for row in inner]))
    norms = [row["grad_norm"] for row in inner if "grad_norm" in row]
    if norms:
        out["grad_norm"] = float(np.mean(norms))
        out["grad_clipped"] = float(np.mean([n > max_grad_norm for n in norms]))
    return out


def _inner_stats(window: dict[str, list[torch.Tensor]], accelerator: Any, epoch: int) -> dict:
    """approx KL (k3), clip fraction and largest ratio over one optimiser step's minibatches,
    averaged over processes (so every process takes the same early-stopping decision)."""
    log_ratio = torch.cat(window["log_ratio"])
    local = torch.stack(
        [
            approx_kl(log_ratio).float(),
            torch.cat(window["clipped"]).mean(),
            torch.exp(log_ratio.clamp(max=80.0)).max(),
        ]
    ).to(accelerator.device)
    kl, clipfrac = accelerator.reduce(local[:2].clone(), "mean").tolist()
    # The largest ratio is this process's own (a diagnostic; it takes no decision).
    return {
        "epoch": float(epoch),
        "approx_kl": kl,
        "clipfrac": clipfrac,
        "ratio_max": float(local[2]),
    }
