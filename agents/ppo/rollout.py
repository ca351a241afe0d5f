"""Rollouts of the diffusion-policy PPO agent: episodes in ``DiffusionDenoise-v0`` with the policy acting.

* :class:`RolloutBuffer`: one update's trajectories, laid out (B trajectories, T steps).
* :func:`run_episodes`: one env batch of episodes (also what evaluation runs);
  :func:`collect_rollout`: ``episodes_per_update`` of them, prompts shared by groups of
  ``samples_per_prompt`` envs, gathered into a buffer.
* ``make_prompt_source`` is the env's own (:func:`diffenvs.envs.denoise_prompts.make_prompt_source`,
  which also reads the ``counts`` prompt sets), re-exported here.

In latent mode the action is x_{t-1} itself: the policy samples it from its own Gaussian. When
the run needs the KL to the base model (a KL penalty, the KL loss, ``track_base_kl``) the env is
made with ``base_step="always"`` and reports the frozen base model's Gaussian of the same step
(``info["mean"]``, ``info["log_prob"]``); otherwise (``base_step="auto"``) the env runs no UNet
and a rollout step costs the policy's own guided pass only. The buffer's base fields are then
None.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.ppo.policy import DiffusionActorCritic
from diffenvs.envs.denoise_prompts import make_prompt_source as make_prompt_source
from diffenvs.logprob import gaussian_kl

if TYPE_CHECKING:
    from agents.ppo.config import PPOConfig

# --------------------------------------------------------------------------------------------
# The rollout buffer


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
    log_probs: torch.Tensor  # (B, T), summed over the latent's dimensions
    base_log_probs: torch.Tensor | None  # (B, T); None when the base model did not run
    rewards: torch.Tensor  # (B,) terminal rewards as the env reports them (raw)
    groups: torch.Tensor  # (B,) prompt-group id (trajectories of one prompt share it)
    prompts: list[str]
    values: torch.Tensor | None = None  # (B, T) critic estimates, when a value function is used
    exact_kl: torch.Tensor | None = None  # (B, T) closed-form KL(policy step || base step)
    base_means: torch.Tensor | None = None  # (B, T, C, h, w) the base model's step means

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.log_probs.shape)  # type: ignore[return-value]

    @property
    def has_base(self) -> bool:
        """Whether the rollout ran the base model (so the KL to it is known)."""
        return self.base_log_probs is not None

    def kl(self, estimator: str = "exact") -> torch.Tensor:
        """Per-step KL(policy || base), (B, T): closed form ("exact") or k3 (eq. 5.3, "k3").

        Both steps are Gaussians with the scheduler's std, so the exact value is cheap; k3 is the
        sample estimate from the taken actions' log-probs, as Kristiansen & Vågen 2023 use.
        """
        from diffenvs.logprob import k3_kl

        if estimator == "exact" and self.exact_kl is not None:
            return self.exact_kl
        if estimator not in ("exact", "k3"):
            raise ValueError(f"KL estimator must be 'exact' or 'k3', got {estimator!r}.")
        if self.base_log_probs is None:
            raise ValueError(
                "This rollout has no base-model log-probs (the env skipped the base step because "
                "no KL term needed it); set track_base_kl=True (or a KL term) to measure the KL."
            )
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
            if getattr(self, name) is None and name == "base_log_probs":
                continue
            got = tuple(getattr(self, name).shape[: len(lead)])
            if got != lead:
                raise ValueError(f"RolloutBuffer.{name} starts with shape {got}, expected {lead}.")
        if self.values is not None and tuple(self.values.shape) != (b, t):
            raise ValueError(f"RolloutBuffer.values has shape {tuple(self.values.shape)}.")
        if len(self.prompts) != b or self.embeds.shape[0] != b:
            raise ValueError("RolloutBuffer needs one prompt and one embedding per trajectory.")


# --------------------------------------------------------------------------------------------
# Rollouts


def _step_index(k: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), k, dtype=torch.long, device=device)


@torch.no_grad()
def run_episodes(
    model: DiffusionActorCritic,
    envs: Any,
    prompts: list[str],
    env_seed: int,
    noise_seed: int,
    autocast: Any = nullcontext,
) -> dict[str, Any]:
    """One env batch of episodes with the policy acting; everything a rollout buffer needs.

    The base model's fields (``base_log_probs``, ``exact_kl``, ``base_means``) are None when the
    env does not report the base step (made with ``base_step="auto"`` in latent mode, no KL).
    """
    device = next(model.unet.parameters()).device
    n, steps = envs.num_envs, envs.num_steps
    gen = torch.Generator().manual_seed(int(noise_seed))
    obs, _ = envs.reset(seed=int(env_seed), options={"prompts": list(prompts)})
    embeds = torch.as_tensor(obs["prompt_embeds"], device=device)
    latents, next_latents, log_probs, base_log_probs, values = [], [], [], [], []
    exact_kl, base_means = [], []
    info: dict[str, Any] = {}
    for k in range(steps):
        x = torch.as_tensor(obs["latent"], device=device)
        kk = _step_index(k, n, device)
        with autocast():
            dist = model.distribution(x, kk, embeds)
            if model.value is not None:
                values.append(model.value_of(x, kk, embeds).cpu())
        noise = torch.randn(x.shape, generator=gen).to(device)
        prev = dist.sample(noise)
        log_probs.append(dist.log_prob(prev).cpu())
        obs, _, terminated, _, info = envs.step(prev.cpu().numpy())
        latents.append(x.cpu())
        next_latents.append(prev.cpu())
        if "mean" in info:
            base_log_probs.append(torch.as_tensor(info["log_prob"], dtype=torch.float32))
            base_mean = torch.as_tensor(np.asarray(info["mean"]), dtype=torch.float32)
            mean, std = dist.mean.float().cpu(), dist.std.float().cpu()
            exact_kl.append(gaussian_kl(mean, base_mean, std))
            base_means.append(base_mean)
    if not terminated.all():
        raise RuntimeError("Episodes did not end after num_steps steps.")
    return {
        "latents": torch.stack(latents, 1),
        "next_latents": torch.stack(next_latents, 1),
        "embeds": embeds.cpu(),
        "log_probs": torch.stack(log_probs, 1),
        "base_log_probs": torch.stack(base_log_probs, 1) if base_log_probs else None,
        "exact_kl": torch.stack(exact_kl, 1) if exact_kl else None,
        "base_means": torch.stack(base_means, 1) if base_means else None,
        "values": torch.stack(values, 1) if values else None,
        "rewards": torch.as_tensor(info["terminal_reward"], dtype=torch.float32),
        "images": np.stack(list(info["image"])),
    }


def collect_rollout(
    model: DiffusionActorCritic,
    envs: Any,
    prompt_source: Any,
    cfg: PPOConfig,
    rng: np.random.Generator,
    autocast: Any = nullcontext,
) -> RolloutBuffer:
    """``episodes_per_update`` env batches; ``samples_per_prompt`` consecutive envs share a prompt."""
    parts, prompts, groups = [], [], []
    per_batch = envs.num_envs // cfg.samples_per_prompt
    for j in range(cfg.episodes_per_update):
        batch_prompts = [
            p
            for p in (prompt_source.sample(rng) for _ in range(per_batch))
            for _ in range(cfg.samples_per_prompt)
        ]
        seeds = rng.integers(2**31 - 1, size=2)
        parts.append(run_episodes(model, envs, batch_prompts, seeds[0], seeds[1], autocast))
        prompts += batch_prompts
        groups += [j * per_batch + i // cfg.samples_per_prompt for i in range(envs.num_envs)]
    cat = {
        k: None if parts[0][k] is None else torch.cat([p[k] for p in parts])
        for k in parts[0]
        if k != "images"
    }
    buffer = RolloutBuffer(**cat, groups=torch.tensor(groups), prompts=prompts)  # type: ignore[arg-type]
    buffer.validate()
    return buffer
