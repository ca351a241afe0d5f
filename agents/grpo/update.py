"""One GRPO update, top to bottom: group-relative advantages, then clipped-ratio SGD with the
closed-form KL to the reference model.

1. :func:`group_advantages`: each image's reward minus its group's mean (Shao et al., DeepSeekMath,
   GRPO's outcome supervision), optionally divided by the group's or the batch's reward std. Every
   window step of a trajectory gets its trajectory's advantage.
2. :func:`grpo_update`: ``num_epochs`` passes over the (env batch, window step) blocks in random
   order. A block is recomputed with exactly the batch the rollout computed, so before the first
   optimiser step of an update the new log-probs equal the stored ones bit for bit and the ratio is
   exactly 1. The loss is the clipped surrogate ``max(-A r, -A clip(r, 1 ± ε))`` (PPO's, as GRPO
   and Flow-GRPO use it; :func:`agents.ppo.losses.clipped_surrogate`) plus ``kl_coef`` times the
   closed-form KL ``‖μ_θ − μ_ref‖² / (2σ_t²)`` of the step (Liu et al., Flow-GRPO).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.grpo.config import accum_steps
from agents.grpo.rollout import GroupBuffer
from agents.ppo.losses import approx_kl, clipped_surrogate, step_log_ratio

if TYPE_CHECKING:
    from agents.grpo.config import GRPOConfig


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, std: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages (any shape; ``groups`` the same shape): reward minus the mean of
    its group, divided by the group's std (``"group"``), the std of every reward (``"batch"``) or
    nothing (``"none"``). A group whose rewards are all equal gets advantages 0."""
    flat, ids = rewards.reshape(-1).double(), groups.reshape(-1)
    if std not in ("group", "batch", "none"):
        raise ValueError(f"adv_std must be 'group', 'batch' or 'none', got {std!r}.")
    adv = torch.empty_like(flat)
    for gid in torch.unique(ids).tolist():
        rows = ids == gid
        if int(rows.sum()) < 2:
            raise ValueError(f"Group {gid} has one image; GRPO needs groups of >= 2 per prompt.")
        centred = flat[rows] - flat[rows].mean()
        adv[rows] = centred / (flat[rows].std(unbiased=False) + eps) if std == "group" else centred
    if std == "batch":
        adv = adv / (flat.std(unbiased=False) + eps)
    return adv.to(rewards.dtype).reshape(rewards.shape)


def make_optimizer(model: nn.Module, cfg: GRPOConfig) -> tuple[Any, Any]:
    """AdamW over the trainable weights and a linear learning-rate warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_eps
    )
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
    )
    return optimizer, scheduler


def grpo_update(
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    buffer: GroupBuffer,
    advantages: torch.Tensor,
    cfg: GRPOConfig,
    accelerator: Any,
    gen: torch.Generator,
) -> dict[str, float]:
    """``num_epochs`` passes of clipped-ratio SGD over the buffer's blocks.

    ``advantages`` is (E, N): one per trajectory. Returns the means of ``pg_loss``, ``kl_loss``,
    ``approx_kl``, ``clipfrac``, the largest ratio, ``ratio_dev_first_step`` (the largest
    |ratio − 1| before the first optimiser step: 0 when the rollout's log-probs are reproduced
    exactly) and ``inner_steps``.
    """
    e_batches, w = buffer.log_probs.shape[:2]
    device = accelerator.device
    accum = accum_steps(cfg)
    num_dims = math.prod(buffer.latents.shape[3:])
    kl_scale = 1.0 / num_dims if cfg.logprob_reduction == "mean" else 1.0
    use_kl = cfg.kl_coef > 0
    if use_kl and buffer.ref_means is None:
        raise ValueError(
            "kl_coef > 0 needs the reference means in the buffer (collect_groups "
            "with reference=...)."
        )
    adv = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
    blocks = [(e, j) for e in range(e_batches) for j in range(w)]
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "kl_loss", "approx_kl", "clipfrac")}
    ratio_max, first_dev, steps_taken = 0.0, 0.0, 0
    for _ in range(cfg.num_epochs):
        order = torch.randperm(len(blocks), generator=gen).tolist()
        for i, b in enumerate(order):
            e, j = blocks[b]
            last = (i + 1) % accum == 0
            sync = nullcontext() if last else accelerator.no_sync(model)
            n = buffer.log_probs.shape[2]
            kk = torch.full((n,), buffer.steps[j], dtype=torch.long, device=device)
            with sync:
                with accelerator.autocast():
                    log_prob, _, kl = model(
                        buffer.latents[e, j].to(device),
                        kk,
                        buffer.embeds[e].to(device),
                        buffer.next_latents[e, j].to(device),
                        buffer.ref_means[e, j].to(device) if use_kl else None,
                    )
                log_ratio = step_log_ratio(
                    log_prob, buffer.log_probs[e, j].to(device), cfg.logprob_reduction, num_dims
                )
                terms, ratio, clipped = clipped_surrogate(
                    log_ratio, adv[e].to(device), cfg.clip_range
                )
                pg = terms.mean()
                loss = pg
                if kl is not None:
                    kl_loss = kl.mean() * kl_scale
                    loss = loss + cfg.kl_coef * kl_loss
                    stats["kl_loss"].append(float(kl_loss.detach()))
                accelerator.backward(loss / accum)
            dev = float((ratio.detach() - 1).abs().max())
            if steps_taken == 0:
                first_dev = max(first_dev, dev)
            ratio_max = max(ratio_max, float(ratio.detach().max()))
            stats["pg_loss"].append(float(pg.detach()))
            stats["approx_kl"].append(float(approx_kl(log_ratio.detach())))
            stats["clipfrac"].append(float(clipped.float().mean()))
            if last:
                accelerator.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm
                )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps_taken += 1
    out = {k: float(np.mean(v)) for k, v in stats.items() if v}
    return out | {
        "ratio_max": ratio_max,
        "ratio_dev_first_step": first_dev,
        "inner_steps": float(steps_taken),
    }
