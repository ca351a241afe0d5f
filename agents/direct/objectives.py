"""One batch's loss for each direct reward fine-tuning algorithm.

Every algorithm minimises ``-α · r̃(image) + β · KL`` (Võ Mạnh Quyền, eq. 5), where r̃ is the
standardised differentiable reward and KL the closed-form KL of each differentiated sampler step
to the frozen model's step. They differ in which image is scored and which steps carry gradients:

* ``refl`` (Xu et al., ImageReward): run the sampler without a graph to a random late step k,
  then step k with the graph; the reward scores that step's one-step prediction of x_0.
* ``draft`` (Clark et al., DRaFT-K): the full chain; gradients flow through the last K steps.
* ``draft-lv`` (Clark et al., DRaFT-LV): the full chain without a graph; the final image is
  re-noised ``lv_samples`` times to the last step's timestep and that step is re-run on each copy
  with the graph, averaging the reward over the copies (lower-variance gradient for the same K=1).
* ``alignprop`` (Prabhudesai et al.): K drawn uniformly from [alignprop_min_k, T] each batch,
  with gradient checkpointing so memory does not grow with K's activations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from agents.direct.config import DirectConfig
    from diffenvs.differentiable import DifferentiableSampler


def refl_step(cfg: DirectConfig, num_steps: int, rng: np.random.Generator) -> int:
    """ReFL's differentiated step k, uniform over [ceil(refl_min_step · T), T - 1]."""
    lo = min(num_steps - 1, math.ceil(cfg.refl_min_step * num_steps))
    return int(rng.integers(lo, num_steps))


def batch_loss(
    cfg: DirectConfig,
    diff: DifferentiableSampler,
    unet: Any,
    base_unet: Any,
    reward: Any,
    prompts: list[str],
    seeds: list[int],
    rng: np.random.Generator,
    norm: tuple[float, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to minimise, stats) for one micro-batch of ``prompts`` started from ``seeds``."""
    embeds = diff.encode_prompts(prompts)
    x_T, noise = diff.initial_noise(seeds)
    T = diff.num_steps
    kl_base = base_unet if cfg.kl_coef > 0 else None
    ckpt = cfg.gradient_checkpointing
    stats: dict[str, float] = {}
    if cfg.algorithm == "refl":
        k = refl_step(cfg, T, rng)
        out = diff.rollout(unet, embeds, x_T, noise, stop_at=k, grad_steps=1, base_unet=kl_base)
        images, kl = diff.decode(out.latents), out.kl
        scored_prompts = prompts
        stats["k"] = float(k)
    elif cfg.algorithm in ("draft", "alignprop"):
        K = (
            cfg.draft_k
            if cfg.algorithm == "draft"
            else int(rng.integers(cfg.alignprop_min_k, T + 1))
        )
        out = diff.rollout(
            unet, embeds, x_T, noise, grad_steps=K, checkpoint=ckpt and K > 1, base_unet=kl_base
        )
        images, kl, scored_prompts = diff.decode(out.latents), out.kl, prompts
        stats["k"] = float(K)
    elif cfg.algorithm == "draft-lv":
        with torch.no_grad():
            x0 = diff.rollout(unet, embeds, x_T, noise).latents
        n = cfg.lv_samples
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        eps = torch.randn((n * len(x0), *x0.shape[1:]), generator=gen).to(x0)
        step_noise = torch.randn((n * len(x0), *x0.shape[1:]), generator=gen).to(x0)
        x0_rep, emb_rep = x0.repeat(n, 1, 1, 1), embeds.repeat(n, 1, 1)
        x_t = diff.renoise(x0_rep, T - 1, eps)
        prev, mean, _ = diff.step(unet, x_t, T - 1, emb_rep, step_noise)
        kl = x0.new_zeros(len(x0), dtype=torch.float32)
        if kl_base is not None:
            from diffenvs.logprob import gaussian_kl

            ref = diff.base_mean(kl_base, x_t, T - 1, emb_rep)
            std = diff.sampler.sigma[T - 1].reshape(1).expand(len(x_t)).to(mean.device)
            kl = gaussian_kl(mean.float(), ref.float(), std.float()).reshape(n, -1).mean(0)
        images, scored_prompts = diff.decode(prev), list(prompts) * n
        stats["k"] = 1.0
    else:
        raise ValueError(f"Unknown algorithm {cfg.algorithm!r}.")
    scores = reward.differentiable_score(images, scored_prompts).float()
    if cfg.algorithm == "draft-lv":
        scores = scores.reshape(cfg.lv_samples, -1).mean(0)
    mu, sigma = norm
    r_norm = (scores - mu) / sigma
    loss = -cfg.reward_weight * r_norm.mean() + cfg.kl_coef * kl.float().mean()
    stats |= {
        "reward_mean": float(scores.detach().mean()),
        "reward_norm_mean": float(r_norm.detach().mean()),
        "kl": float(kl.detach().float().mean()),
    }
    return loss, stats
