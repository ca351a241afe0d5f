"""GRPO rollouts: groups of G images per prompt, a window of SDE steps, the rest deterministic.

* :class:`GroupBuffer`: one update's window transitions, laid out per env batch so training can
  recompute each (env batch, step) block with exactly the batch the rollout used.
* :func:`run_window_episodes`: one env batch of episodes; inside the window the policy samples
  x_{t-1} from its Gaussian and stores its log-prob (and the reference model's step mean for the
  KL), outside it takes the sampler's deterministic step (:mod:`agents.grpo.sampling`).
* :func:`collect_groups`: ``episodes_per_update`` env batches, ``group_size`` consecutive envs
  sharing a prompt.

Every step draws its noise from one generator whether or not it uses it, so with the window
covering every step an episode is exactly the PPO agent's (:func:`agents.ppo.rollout.run_episodes`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.grpo.sampling import deterministic_step, ode_sampler
from agents.ppo.policy import DiffusionActorCritic
from diffenvs.logprob import gaussian_kl


@dataclass
class GroupBuffer:
    """Window transitions of E env batches of N trajectories, W window steps each.

    ``latents[e, j]`` is x_t of env batch e before window step ``steps[j]`` (N, C, h, w), and
    ``next_latents`` the x_{t-1} the policy sampled; ``log_probs`` are the rollout policy's
    log-probs (the "old" ones of the ratio), ``ref_means`` the reference model's step means
    (None without a KL term).
    """

    latents: torch.Tensor  # (E, W, N, C, h, w)
    next_latents: torch.Tensor  # (E, W, N, C, h, w)
    embeds: torch.Tensor  # (E, N, L, D)
    log_probs: torch.Tensor  # (E, W, N), summed over the latent's dimensions
    ref_means: torch.Tensor | None  # (E, W, N, C, h, w)
    ref_kl: torch.Tensor | None  # (E, W, N) closed-form KL(policy step || reference step)
    rewards: torch.Tensor  # (E, N) raw terminal rewards
    groups: torch.Tensor  # (E, N) group id (images of one prompt)
    steps: list[int]  # the window's step indices
    prompts: list[str]


@torch.no_grad()
def run_window_episodes(
    policy: DiffusionActorCritic,
    envs: Any,
    prompts: list[str],
    steps: list[int],
    env_seed: int,
    noise_seed: int,
    reference: Any = None,
    autocast: Any = nullcontext,
) -> dict[str, Any]:
    """One env batch of episodes: SDE steps at ``steps``, deterministic steps elsewhere.

    ``reference`` (the frozen base model, run through the policy's sampler so with the same
    guidance) gives each window step's reference mean for the closed-form KL; None skips it.
    """
    device = next(policy.unet.parameters()).device
    sampler = policy.sampler
    n, window = envs.num_envs, set(steps)
    # The deterministic steps outside the window (None when the window covers every step).
    ode = ode_sampler(sampler) if len(window) < envs.num_steps else None
    gen = torch.Generator().manual_seed(int(noise_seed))
    obs, _ = envs.reset(seed=int(env_seed), options={"prompts": list(prompts)})
    embeds = torch.as_tensor(obs["prompt_embeds"], device=device)
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("latents", "next_latents", "log_probs", "ref_means", "ref_kl")
    }
    info: dict[str, Any] = {}
    terminated = np.zeros(n, dtype=bool)
    for k in range(envs.num_steps):
        x = torch.as_tensor(obs["latent"], device=device)
        kk = torch.full((n,), k, dtype=torch.long, device=device)
        noise = torch.randn(x.shape, generator=gen).to(device)
        with autocast():
            if k in window:
                dist = policy.distribution(x, kk, embeds)
            else:
                output = sampler.model_output(policy.unet, x, kk, embeds, upcast=True)
        if k in window:
            prev = dist.sample(noise)
            out["latents"].append(x.cpu())
            out["next_latents"].append(prev.cpu())
            out["log_probs"].append(dist.log_prob(prev).cpu())
            if reference is not None:
                with autocast():
                    ref_out = sampler.model_output(reference, x, kk, embeds, upcast=True)
                ref_mean = sampler.distribution(ref_out, x.float(), kk).mean.float()
                out["ref_means"].append(ref_mean.cpu())
                out["ref_kl"].append(gaussian_kl(dist.mean.float(), ref_mean, dist.std).cpu())
        else:
            prev = deterministic_step(ode, output, x.float(), kk)
        obs, _, terminated, _, info = envs.step(prev.float().cpu().numpy())
    if not np.all(terminated):
        raise RuntimeError("Episodes did not end after num_steps steps.")
    stacked = {k: torch.stack(v) if v else None for k, v in out.items()}
    return {
        **stacked,
        "embeds": embeds.cpu(),
        "rewards": torch.as_tensor(info["terminal_reward"], dtype=torch.float32),
        "images": np.stack(list(info["image"])),
    }


def collect_groups(
    policy: DiffusionActorCritic,
    envs: Any,
    prompt_source: Any,
    steps: list[int],
    group_size: int,
    episodes: int,
    rng: np.random.Generator,
    reference: Any = None,
    autocast: Any = nullcontext,
) -> GroupBuffer:
    """``episodes`` env batches; ``group_size`` consecutive envs share a prompt (one group)."""
    n = envs.num_envs
    if n % group_size:
        raise ValueError(
            f"The env batch ({n} envs) is not a multiple of group_size ({group_size}): every group "
            "of images of one prompt must fit in one batch."
        )
    per_batch = n // group_size
    parts, prompts, groups = [], [], []
    for e in range(episodes):
        batch = [
            p
            for p in (prompt_source.sample(rng) for _ in range(per_batch))
            for _ in range(group_size)
        ]
        seeds = rng.integers(2**31 - 1, size=2)
        parts.append(
            run_window_episodes(policy, envs, batch, steps, seeds[0], seeds[1], reference, autocast)
        )
        prompts += batch
        groups.append(torch.arange(n) // group_size + e * per_batch)

    def cat(key: str) -> torch.Tensor | None:
        return None if parts[0][key] is None else torch.stack([p[key] for p in parts])

    return GroupBuffer(
        latents=cat("latents"),
        next_latents=cat("next_latents"),
        embeds=cat("embeds"),
        log_probs=cat("log_probs"),
        ref_means=cat("ref_means"),
        ref_kl=cat("ref_kl"),
        rewards=cat("rewards"),
        groups=torch.stack(groups),
        steps=list(steps),
        prompts=prompts,
    )
