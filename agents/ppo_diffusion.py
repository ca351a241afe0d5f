"""Diffusion-policy PPO (seed 004 §5.3, DDPO, DPOK) on ``DiffusionDenoise-v0`` in latent mode.

The policy is a trainable copy of the world's UNet (LoRA adapters on the attention projections by
default, or every weight): at step k it outputs the Gaussian of x_{t-1} given x_t (the sampler's
step with its own noise prediction), samples x_{t-1} and hands it to the env as the action. The
env keeps running the frozen base UNet and reports the base model's log-prob of each action, which
gives the per-step KL penalty (eq. 5.3, k3 estimator). The terminal reward is standardised with
the base model's reward statistics (eq. 5.2). Updates use PPO's clipped objective over per-step
transitions, with critic-free per-prompt advantages (default) or a value function with GAE.

One script for 1 CPU, N GPUs or several nodes (``accelerate``)::

    python -m agents.ppo_diffusion --preset quick                 # ~5 min demo on 2 CPU cores
    diffenvs train ppo --preset target-image                      # the same through the CLI
    accelerate launch --num_processes 4 -m agents.ppo_diffusion --preset colourfulness-kl
    torchrun --standalone --nproc_per_node 2 -m agents.ppo_diffusion --preset quick --cpu

See ``docs/agents/ppo.md``.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from agents.ppo_diffusion_lib import (
    AdaptiveKLController,
    FixedKLController,
    RolloutBuffer,
    count_prompts,
    gae_advantages,
    optimizer_from_tensors,
    optimizer_to_tensors,
    per_prompt_advantages,
    returns_to_go,
    rng_from_tensors,
    rng_to_tensors,
    save_before_after,
    save_curves,
    save_reward_histogram,
)

Preset = Literal["target-image", "colourfulness-kl", "prompt-alignment", "quick"]


@dataclass
class PPODiffusionConfig:
    """PPO on a diffusion policy (the world's UNet) through DiffusionDenoise-v0 in latent mode."""

    preset: Preset | None = None
    """Start from a preset; options you set explicitly (to non-default values) override it."""
    model: str = "world"
    prompts: str = "world"
    """Training prompts: 'world', 'world:heldout', 'counts' (world captions naming counts), a file."""
    eval_prompts: str = "world:heldout"
    """Held-out evaluation prompts ('counts:heldout' for the count prompts)."""
    reward: str = "target_rmse"
    """Any diffenvs reward name: target_rmse, colourfulness, clip_score, oracle, ..."""
    num_steps: int = 10
    """Sampler steps per image (episode length T)."""
    guidance_scale: float = 4.0
    eta: float = 1.0
    """DDIM noise (> 0 so every step is a Gaussian policy)."""
    num_envs: int = 8
    """Images per env batch, per process."""
    episodes_per_update: int = 1
    """Env batches per update: num_envs * episodes_per_update trajectories per process."""
    samples_per_prompt: int = 4
    """Trajectories that share a prompt (the groups of per-prompt advantage normalisation)."""
    num_updates: int = 50
    num_epochs: int = 1
    """Passes over each rollout."""
    minibatch_size: int = 16
    """Per-step transitions per minibatch (per process)."""
    grad_accum_steps: int = 1
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's steps trained on (a fresh random subset per update)."""
    clip_range: float = 1e-3
    """PPO ratio clip; small because a step's log-prob sums over every latent dimension."""
    adv_clip: float = 5.0
    advantage: Literal["per-prompt", "gae"] = "per-prompt"
    """'per-prompt': critic-free, returns standardised per prompt (DDPO); 'gae': value net + GAE."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    vf_coef: float = 0.5
    kl: Literal["none", "fixed", "adaptive"] = "none"
    kl_coef: float = 0.02
    """β (the starting β for 'adaptive')."""
    kl_target: float = 2.0
    """Target KL per image (sum of per-step k3 estimates) for the adaptive controller."""
    kl_horizon: float = 2000.0
    reward_norm: Literal["fit", "none"] = "fit"
    """'fit': (r - mu) / sigma with the base model's reward statistics on the eval samples."""
    finetune: Literal["lora", "full"] = "lora"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    learning_rate: float = 3e-4
    value_learning_rate: float = 1e-4
    warmup_steps: int = 0
    """Linear warm-up of the policy learning rate, in optimiser steps."""
    value_warmup_steps: int = 0
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto': bf16 autocast on CUDA devices that support it, off on CPU."""
    eval_episodes: int = 32
    """Held-out images before and after training (same prompts and seeds); 0 skips evaluation."""
    eval_seed: int = 1_000_000
    eval_oracle: bool = True
    """Also report the world oracle's prompt-following accuracy."""
    grid_images: int = 16
    seed: int = 0
    torch_threads: int = 1
    cpu: bool = False
    """Force the CPU even when a GPU is visible."""
    output_dir: str = "runs/ppo_diffusion"
    run_name: str | None = None
    save: bool = True
    """Write checkpoints, logs and figures to output_dir/run_name."""
    save_every: int = 10
    resume: bool = False
    """Continue from the run folder's latest checkpoint."""
    stop_after_updates: int | None = None
    """Stop (after checkpointing) once this many updates are done, as if the run were killed."""
    tensorboard: bool = True
    progress: bool = True


PRESETS: dict[str, dict[str, Any]] = {
    # Seed 004 Exp. 1: collapse every sample onto one target image; no KL penalty, value function.
    "target-image": {
        "reward": "target_rmse",
        "num_steps": 20,
        "num_envs": 16,
        "episodes_per_update": 2,
        "advantage": "gae",
        "kl": "none",
        "num_updates": 300,
        "minibatch_size": 32,
        "timestep_fraction": 0.5,
        "learning_rate": 3e-4,
        "eval_episodes": 64,
    },
    # Seed 004 Exp. 2 with the fix its §7.1 asks for: an adaptive (target-KL) coefficient.
    "colourfulness-kl": {
        "reward": "colourfulness",
        "num_steps": 20,
        "num_envs": 16,
        "episodes_per_update": 2,
        "kl": "adaptive",
        "kl_coef": 0.02,
        "kl_target": 2.0,
        "num_updates": 300,
        "minibatch_size": 32,
        "timestep_fraction": 0.5,
        "eval_episodes": 64,
    },
    # Prompt following on captions that name counts, scored by the world oracle (DDPO-style).
    "prompt-alignment": {
        "reward": "oracle",
        "prompts": "counts",
        "eval_prompts": "counts:heldout",
        "num_steps": 20,
        "num_envs": 16,
        "episodes_per_update": 2,
        "kl": "adaptive",
        "kl_coef": 0.01,
        "num_updates": 300,
        "minibatch_size": 32,
        "timestep_fraction": 0.5,
        "eval_episodes": 64,
    },
    # The demo: a few minutes on 2 CPU cores. Full fine-tuning of the small world UNet learns
    # fastest in this budget; one optimiser step per rollout keeps PPO's ratio meaningful.
    "quick": {
        "reward": "target_rmse",
        "num_steps": 4,
        "num_envs": 8,
        "samples_per_prompt": 4,
        "num_updates": 40,
        "minibatch_size": 16,
        "grad_accum_steps": 2,
        "finetune": "full",
        "learning_rate": 1e-4,
        "eval_episodes": 32,
        "save_every": 10,
    },
}


def resolve_config(cfg: PPODiffusionConfig) -> PPODiffusionConfig:
    """Apply ``cfg.preset`` (explicitly changed options win), then validate."""
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"Unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}.")
        default = PPODiffusionConfig()
        changed = {
            f.name: getattr(cfg, f.name)
            for f in fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)
        }
        cfg = replace(replace(default, **PRESETS[cfg.preset]), **changed)
    validate_config(cfg)
    return cfg


def validate_config(cfg: PPODiffusionConfig) -> None:
    """Raise a ValueError that says what to change for an inconsistent configuration."""
    steps = max(1, math.ceil(cfg.timestep_fraction * cfg.num_steps))
    per_update = cfg.num_envs * cfg.episodes_per_update * steps
    checks = [
        (cfg.num_steps >= 1, f"num_steps must be >= 1, got {cfg.num_steps}."),
        (cfg.num_envs >= 1, f"num_envs must be >= 1, got {cfg.num_envs}."),
        (cfg.episodes_per_update >= 1, "episodes_per_update must be >= 1."),
        (cfg.num_updates >= 0, "num_updates must be >= 0."),
        (cfg.num_epochs >= 1, "num_epochs must be >= 1."),
        (cfg.samples_per_prompt >= 1, "samples_per_prompt must be >= 1."),
        (
            cfg.num_envs % cfg.samples_per_prompt == 0,
            f"num_envs ({cfg.num_envs}) must be a multiple of samples_per_prompt "
            f"({cfg.samples_per_prompt}) so every prompt group fits in one env batch.",
        ),
        (
            0 < cfg.timestep_fraction <= 1,
            f"timestep_fraction must be in (0, 1], got {cfg.timestep_fraction}.",
        ),
        (cfg.minibatch_size >= 1 and cfg.grad_accum_steps >= 1, "minibatch sizes must be >= 1."),
        (
            per_update % (cfg.minibatch_size * cfg.grad_accum_steps) == 0,
            f"Each update trains on num_envs * episodes_per_update * ceil(timestep_fraction * "
            f"num_steps) = {per_update} transitions per process, which must be a multiple of "
            f"minibatch_size * grad_accum_steps = {cfg.minibatch_size * cfg.grad_accum_steps}.",
        ),
        (cfg.clip_range > 0, f"clip_range must be > 0, got {cfg.clip_range}."),
        (cfg.adv_clip > 0, "adv_clip must be > 0."),
        (
            0 <= cfg.gamma <= 1 and 0 <= cfg.gae_lambda <= 1,
            "gamma and gae_lambda must be in [0, 1].",
        ),
        (cfg.learning_rate > 0 and cfg.value_learning_rate > 0, "learning rates must be > 0."),
        (cfg.warmup_steps >= 0 and cfg.value_warmup_steps >= 0, "warm-up steps must be >= 0."),
        (cfg.max_grad_norm > 0, "max_grad_norm must be > 0."),
        (cfg.kl_coef >= 0 and math.isfinite(cfg.kl_coef), "kl_coef must be a finite number >= 0."),
        (
            cfg.kl != "adaptive" or (cfg.kl_target > 0 and cfg.kl_horizon > 0),
            "kl='adaptive' needs kl_target > 0 and kl_horizon > 0.",
        ),
        (
            cfg.kl != "adaptive" or cfg.kl_coef > 0,
            "kl='adaptive' multiplies β, so its starting kl_coef must be > 0.",
        ),
        (cfg.finetune != "lora" or cfg.lora_rank >= 1, "lora_rank must be >= 1."),
        (cfg.eval_episodes >= 0, "eval_episodes must be >= 0."),
        (
            cfg.reward_norm != "fit" or cfg.eval_episodes >= 2,
            "reward_norm='fit' standardises with the base model's rewards on the evaluation "
            f"samples, so it needs eval_episodes >= 2 (got {cfg.eval_episodes}); or set "
            "reward_norm='none'.",
        ),
        (cfg.torch_threads >= 1, "torch_threads must be >= 1."),
        (cfg.save_every >= 1, "save_every must be >= 1."),
        (
            cfg.stop_after_updates is None or cfg.stop_after_updates >= 1,
            "stop_after_updates must be >= 1 (or unset).",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# --------------------------------------------------------------------------------------------
# The policy (and optional critic)


class DiffusionActorCritic(nn.Module):
    """A trainable UNet as a Gaussian policy over x_{t-1}, plus an optional value network.

    The step Gaussian is computed exactly as the env computes the base model's (classifier-free
    guidance, then :func:`diffenvs.logprob.distribution_from_coefficients` with the env's schedule
    coefficients), so at initialisation (zero LoRA update) the policy *is* the base sampler.
    """

    def __init__(self, unet: nn.Module, core: Any, value: nn.Module | None = None) -> None:
        super().__init__()
        self.unet, self.value = unet, value
        # Read-only schedule and conditioning shared with the env (not parameters, not buffers:
        # they never change and need no gradient synchronisation).
        self._coeffs = core.coeffs
        self._timesteps = core.timesteps
        self._negative = core.negative_embeds
        self._guidance = core.guidance_scale
        self._do_cfg = core.do_cfg

    def distribution(self, latents: torch.Tensor, k: torch.Tensor, embeds: torch.Tensor) -> Any:
        """The policy's Gaussian of x_{t-1} for x_t = ``latents`` at step indices ``k`` (B,)."""
        from diffenvs.logprob import distribution_from_coefficients

        t = self._timesteps[k]
        # One shared timestep goes in as a 0-d tensor, as the pipeline (and the env) passes it.
        t_in = t[0] if bool((t == t[0]).all()) else t
        x, emb = latents, embeds
        if self._do_cfg:
            x = torch.cat([latents, latents])
            emb = torch.cat([self._negative.expand(len(latents), -1, -1).to(embeds), embeds])
            t_in = t_in if t_in.ndim == 0 else torch.cat([t_in, t_in])
        out = self.unet(x, t_in, encoder_hidden_states=emb, return_dict=False)[0].float()
        if self._do_cfg:
            uncond, text = out.chunk(2)
            out = uncond + self._guidance * (text - uncond)
        return distribution_from_coefficients(self._coeffs[k], out, latents.float())

    def value_of(
        self, latents: torch.Tensor, k: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        obs = {
            "latent": latents.float(),
            "timestep": self._timesteps[k].float()[:, None],
            "prompt_embeds": embeds.float(),
        }
        return self.value(obs).float().reshape(-1)

    def forward(
        self,
        latents: torch.Tensor,
        k: torch.Tensor,
        embeds: torch.Tensor,
        next_latents: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-prob of ``next_latents`` (B,), value (B,) or None): one call, so DDP sees it."""
        log_prob = self.distribution(latents, k, embeds).log_prob(next_latents.float())
        value = self.value_of(latents, k, embeds) if self.value is not None else None
        return log_prob, value


class ValueNet(nn.Module):
    """V(x_t, t, c): the small latent CNN of the SB3/Tianshou adapters and a zero-initialised head."""

    def __init__(self, latent_channels: int, text_width: int) -> None:
        super().__init__()
        from agents.denoise_nets import LatentEncoder

        self.encoder = LatentEncoder(latent_channels, text_width, features_dim=128)
        self.head = nn.Linear(128, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(obs))


def build_policy_unet(base_unet: nn.Module, cfg: PPODiffusionConfig) -> nn.Module:
    """A trainable copy of the base UNet: LoRA adapters (peft) or every weight."""
    unet = copy.deepcopy(base_unet)
    unet.requires_grad_(False)
    if cfg.finetune == "lora":
        from peft import LoraConfig

        targets = list(cfg.lora_targets)
        names = [n for n, _ in unet.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise ValueError(
                f"LoRA targets {missing} match no UNet module; attention projections are named "
                "to_q, to_k, to_v, to_out.0."
            )
        unet.add_adapter(
            LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets)
        )
        for name, p in unet.named_parameters():
            p.requires_grad_("lora_" in name)
    elif cfg.finetune == "full":
        unet.requires_grad_(True)
    else:
        raise ValueError(f"finetune must be 'lora' or 'full', got {cfg.finetune!r}.")
    return unet


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that training changes (LoRA weights or the whole UNet, and the critic)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------
# Rollouts and evaluation


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
    """One env batch of episodes with the policy acting; everything a rollout buffer needs."""
    device = next(model.unet.parameters()).device
    n, steps = envs.num_envs, envs.num_steps
    gen = torch.Generator().manual_seed(int(noise_seed))
    obs, _ = envs.reset(seed=int(env_seed), options={"prompts": list(prompts)})
    embeds = torch.as_tensor(obs["prompt_embeds"], device=device)
    latents, next_latents, log_probs, base_log_probs, values = [], [], [], [], []
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
        base_log_probs.append(torch.as_tensor(info["log_prob"], dtype=torch.float32))
    if not terminated.all():
        raise RuntimeError("Episodes did not end after num_steps steps.")
    return {
        "latents": torch.stack(latents, 1),
        "next_latents": torch.stack(next_latents, 1),
        "embeds": embeds.cpu(),
        "log_probs": torch.stack(log_probs, 1),
        "base_log_probs": torch.stack(base_log_probs, 1),
        "values": torch.stack(values, 1) if values else None,
        "rewards": torch.as_tensor(info["terminal_reward"], dtype=torch.float32),
        "images": np.stack(list(info["image"])),
    }


def collect_rollout(
    model: DiffusionActorCritic,
    envs: Any,
    prompt_source: Any,
    cfg: PPODiffusionConfig,
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
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k not in ("values", "images")}
    values = torch.cat([p["values"] for p in parts]) if parts[0]["values"] is not None else None
    buffer = RolloutBuffer(**cat, groups=torch.tensor(groups), prompts=prompts, values=values)  # type: ignore[arg-type]
    buffer.validate()
    return buffer


def make_prompt_source(spec: str) -> Any:
    """A prompt source for a name: the env's own specs plus 'counts' / 'counts:heldout'."""
    from diffenvs.envs.denoise_prompts import ListPrompts
    from diffenvs.envs.denoise_prompts import make_prompt_source as env_source

    if spec == "counts" or spec.startswith("counts:"):
        split = spec.partition(":")[2] or "train"
        return ListPrompts(count_prompts(split), origin=spec)
    return env_source(spec)


@torch.no_grad()
def evaluate(
    model: DiffusionActorCritic,
    envs: Any,
    prompts: list[str],
    seed: int,
    accelerator: Any,
    oracle: Any = None,
) -> dict[str, np.ndarray]:
    """Terminal rewards (and oracle accuracy) of the policy on fixed prompts, seeds and noise.

    Env batch c uses env seed ``seed + c * num_envs`` and noise seed ``seed + c``, so two calls
    (before and after training) see the same x_T and the same step noise. Batches are shared out
    over processes and gathered.
    """
    from accelerate.utils import gather_object

    n, per = len(prompts), envs.num_envs
    rows: list[tuple[int, float, float, np.ndarray]] = []
    for c in range(accelerator.process_index, math.ceil(n / per), accelerator.num_processes):
        chunk = prompts[c * per : (c + 1) * per]
        padded = chunk + [chunk[-1]] * (per - len(chunk))
        out = run_episodes(model, envs, padded, seed + c * per, seed + c, accelerator.autocast)
        acc = np.full(per, np.nan)
        if oracle is not None:
            acc = oracle.evaluate(out["images"], padded).details["accuracy"].cpu().numpy()
        for i in range(len(chunk)):
            rows.append((c * per + i, float(out["rewards"][i]), float(acc[i]), out["images"][i]))
    rows = sorted(gather_object(rows), key=lambda r: r[0])
    return {
        "rewards": np.array([r[1] for r in rows]),
        "accuracy": np.array([r[2] for r in rows]),
        "images": np.stack([r[3] for r in rows]),
    }


def eval_summary(result: dict[str, np.ndarray]) -> dict[str, float]:
    r, acc = result["rewards"], result["accuracy"]
    out = {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "n": float(len(r))}
    if not np.isnan(acc).all():
        out["oracle_accuracy"] = float(np.nanmean(acc))
    return out


# --------------------------------------------------------------------------------------------
# PPO update


def ppo_update(
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    buffer: RolloutBuffer,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
    cfg: PPODiffusionConfig,
    accelerator: Any,
    gen: torch.Generator,
) -> dict[str, float]:
    """``num_epochs`` passes of clipped-PPO minibatch SGD over the buffer's (subsampled) steps."""
    b, t = buffer.shape
    device = accelerator.device
    n_sub = max(1, math.ceil(cfg.timestep_fraction * t))
    # A fresh subset of steps per trajectory (DDPO's timestep subsampling).
    steps = torch.stack([torch.randperm(t, generator=gen)[:n_sub] for _ in range(b)])
    rows = torch.arange(b)[:, None].expand(b, n_sub).reshape(-1)
    cols = steps.reshape(-1)
    adv = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "approx_kl", "clipfrac")}
    ratio_dev: list[float] = []
    total = len(rows)
    for _epoch in range(cfg.num_epochs):
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
                    log_prob, value = model(
                        buffer.latents[r, k].to(device),
                        k.to(device),
                        buffer.embeds[r].to(device),
                        buffer.next_latents[r, k].to(device),
                    )
                old = buffer.log_probs[r, k].to(device)
                a = adv[r, k].to(device)
                ratio = torch.exp(log_prob - old)
                pg = torch.maximum(
                    -a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                ).mean()
                loss = pg
                if value is not None and returns is not None:
                    v_loss = 0.5 * ((value - returns[r, k].to(device)) ** 2).mean()
                    loss = loss + cfg.vf_coef * v_loss
                    stats["v_loss"].append(float(v_loss.detach()))
                accelerator.backward(loss / cfg.grad_accum_steps)
            with torch.no_grad():
                diff = (log_prob - old).float()
                stats["pg_loss"].append(float(pg))
                stats["approx_kl"].append(float(0.5 * (diff**2).mean()))
                stats["clipfrac"].append(float(((ratio - 1).abs() > cfg.clip_range).float().mean()))
                dev = max(dev, float((ratio - 1).abs().max()))
            if last:
                accelerator.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm
                )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        ratio_dev.append(dev)
    out = {k: float(np.mean(v)) for k, v in stats.items() if v}
    out["ratio_dev_first_epoch"] = ratio_dev[0]
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    run_dir: Path,
    update: int,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    accelerator: Any,
) -> Path:
    """``checkpoints/update_NNNNNN/`` (safetensors + JSON), then the ``latest.json`` pointer.

    Every file is written atomically and the pointer last, so a run killed mid-save resumes from
    the previous complete checkpoint.
    """
    from diffenvs.io import save_tensors, write_json

    folder = run_dir / "checkpoints" / f"update_{update:06d}"
    # Each process saves its own RNG state; parameters and optimiser state are identical on all.
    save_tensors(rng_to_tensors(), folder / f"rng_rank{accelerator.process_index}.safetensors")
    if accelerator.is_main_process:
        save_tensors(trainable_state(accelerator.unwrap_model(model)), folder / "model.safetensors")
        inner = getattr(optimizer, "optimizer", optimizer)
        tensors, meta = optimizer_to_tensors(inner)
        save_tensors(tensors, folder / "optimizer.safetensors", metadata={"meta": meta})
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        write_json(folder / "state.json", {**state, "scheduler": sched, "update": update})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(run_dir / "checkpoints" / "latest.json", {"folder": folder.name})
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: Any, scheduler: Any, accelerator: Any
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the saved training state."""
    from safetensors import safe_open

    from diffenvs.io import load_tensors

    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.exists():
        raise FileNotFoundError(
            f"resume=True but {pointer} does not exist; start without --resume or point "
            "--output-dir/--run-name at an earlier run."
        )
    folder = run_dir / "checkpoints" / json.loads(pointer.read_text())["folder"]
    params = load_tensors(folder / "model.safetensors")
    unwrapped = accelerator.unwrap_model(model)
    expected = trainable_state(unwrapped)
    if set(params) != set(expected):
        raise ValueError(
            f"Checkpoint {folder} holds different trainable parameters than this configuration "
            "(was it saved with another finetune / lora_rank / advantage setting?)."
        )
    unwrapped.load_state_dict(params, strict=False)
    with safe_open(str(folder / "optimizer.safetensors"), "pt") as f:
        meta = f.metadata()["meta"]
    inner = getattr(optimizer, "optimizer", optimizer)
    optimizer_from_tensors(inner, load_tensors(folder / "optimizer.safetensors"), meta)
    state = json.loads((folder / "state.json").read_text())
    sched = scheduler.state_dict()
    sched.update(state.pop("scheduler"))
    scheduler.load_state_dict(sched)
    rng_file = folder / f"rng_rank{accelerator.process_index}.safetensors"
    if rng_file.exists():
        rng_from_tensors(load_tensors(rng_file))
    return state


# --------------------------------------------------------------------------------------------
# Training


def _mixed_precision(cfg: PPODiffusionConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    cuda = torch.cuda.is_available() and not cfg.cpu
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"


def _warmup(steps: int):
    return lambda step: 1.0 if steps <= 0 else min(1.0, (step + 1) / steps)


def train(cfg: PPODiffusionConfig) -> dict[str, Any]:
    """Train; returns the evaluation before/after, the per-update history and the run folder."""
    import gymnasium as gym
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    import diffenvs  # noqa: F401  (registers the environments)
    from diffenvs.io import write_json
    from diffenvs.rewards import make_reward

    cfg = resolve_config(cfg)
    torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=_mixed_precision(cfg))
    main_proc, rank = accelerator.is_main_process, accelerator.process_index
    # The same seed on every process: identical LoRA / critic initialisation everywhere.
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or f"{cfg.preset or 'custom'}_seed{cfg.seed}")

    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=cfg.num_envs,
        model=cfg.model,
        prompts=make_prompt_source(cfg.prompts),
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        reward=cfg.reward,
        action_mode="latent",
        kl_coef=0.0,  # the agent applies the KL penalty itself, with its (adaptive) β
        device=accelerator.device,
    )
    core = envs.core
    value = None
    if cfg.advantage == "gae":
        value = ValueNet(core.latent_shape[0], core.embed_shape[-1])
    model = DiffusionActorCritic(build_policy_unet(core.pipe.unet, cfg), core, value)
    model.to(accelerator.device)
    groups = [
        {
            "params": [p for p in model.unet.parameters() if p.requires_grad],
            "lr": cfg.learning_rate,
        }
    ]
    if value is not None:
        groups.append({"params": list(value.parameters()), "lr": cfg.value_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    lambdas = [_warmup(cfg.warmup_steps), _warmup(cfg.value_warmup_steps)][: len(groups)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    # The scheduler is stepped by hand once per optimiser step (accelerate's wrapper would step it
    # once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    policy: DiffusionActorCritic = accelerator.unwrap_model(model)
    initial = trainable_state(policy)

    train_prompts = make_prompt_source(cfg.prompts)
    eval_source = make_prompt_source(cfg.eval_prompts)
    eval_rng = np.random.default_rng(cfg.eval_seed)
    eval_prompts = [eval_source.sample(eval_rng) for _ in range(cfg.eval_episodes)]
    oracle = None
    if cfg.eval_oracle and cfg.eval_episodes:
        oracle = make_reward("oracle", soft=False, device=accelerator.device)

    start, history = 0, []
    state: dict[str, Any] = {}
    if cfg.resume:
        state = load_checkpoint(run_dir, model, optimizer, scheduler, accelerator)
        start, history = state["update"], state["history"]
    before = None
    before_file = run_dir / "eval_before.npz"
    if cfg.eval_episodes:
        if cfg.resume and before_file.exists():
            with np.load(before_file) as f:
                before = {k: f[k] for k in f.files}
        elif cfg.resume:
            # The base model is gone once training has started: no honest "before" to compare.
            print(f"warning: {before_file} is missing, so this resumed run has no before/after.")
        else:
            before = evaluate(policy, envs, eval_prompts, cfg.eval_seed, accelerator, oracle)
            if main_proc and cfg.save:
                run_dir.mkdir(parents=True, exist_ok=True)
                np.savez(before_file, **before)
    if "reward_mean_std" in state:
        mu, sigma = state["reward_mean_std"]
    elif cfg.reward_norm == "fit" and before is not None:
        mu, sigma = float(before["rewards"].mean()), float(before["rewards"].std()) or 1.0
    else:
        mu, sigma = 0.0, 1.0
    beta0 = 0.0 if cfg.kl == "none" else cfg.kl_coef
    beta0 = state.get("beta", beta0)
    controller = (
        AdaptiveKLController(beta0, cfg.kl_target, cfg.kl_horizon)
        if cfg.kl == "adaptive"
        else FixedKLController(beta0)
    )

    writer, csv_file, csv_writer = None, None, None
    if main_proc and cfg.save:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", json.loads(json.dumps(asdict(cfg), default=str)))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
    from tqdm.auto import tqdm

    bar = tqdm(
        range(start, cfg.num_updates),
        initial=start,
        total=cfg.num_updates,
        disable=not (main_proc and cfg.progress),
        desc="ppo",
    )
    stopped = False
    t0 = time.perf_counter()
    for update in bar:
        # Every random draw of an update comes from (seed, process, update): a resumed run repeats
        # an uninterrupted one exactly.
        rng = np.random.default_rng([cfg.seed, rank, update])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        buffer = collect_rollout(policy, envs, train_prompts, cfg, rng, accelerator.autocast)
        beta = controller.beta
        kl = buffer.kl().float()
        terminal = (buffer.rewards - mu) / sigma
        if cfg.advantage == "gae":
            step_rewards = -beta * kl
            step_rewards[:, -1] += terminal
            advantages, returns = gae_advantages(
                step_rewards, buffer.values, cfg.gamma, cfg.gae_lambda
            )
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        else:
            advantages = per_prompt_advantages(returns_to_go(terminal, kl, beta), buffer.groups)
            returns = None
        stats = ppo_update(
            model, optimizer, scheduler, buffer, advantages, returns, cfg, accelerator, gen
        )
        local = torch.tensor(
            [buffer.rewards.mean(), kl.sum(1).mean(), terminal.mean()], device=accelerator.device
        )
        reward_mean, kl_mean, norm_mean = accelerator.reduce(local, "mean").tolist()
        n_traj = buffer.shape[0] * accelerator.num_processes
        row = {
            "update": update + 1,
            "reward_mean": reward_mean,
            "reward_norm_mean": norm_mean,
            "kl": kl_mean,
            "beta": beta,
            "lr": scheduler.get_last_lr()[0],
            "time_s": time.perf_counter() - t0,
            **stats,
        }
        controller.update(kl_mean, n_traj)
        history.append(row)
        if main_proc:
            bar.set_postfix(reward=f"{reward_mean:.3f}", kl=f"{kl_mean:.3g}")
            if writer is not None:
                for key, v in row.items():
                    if key != "update":
                        writer.add_scalar(f"train/{key}", v, update + 1)
            if cfg.save:
                new = csv_file is None and not (run_dir / "progress.csv").exists()
                if csv_file is None:
                    csv_file = open(run_dir / "progress.csv", "a", newline="")  # noqa: SIM115
                    csv_writer = csv.DictWriter(
                        csv_file, fieldnames=list(row), extrasaction="ignore"
                    )
                    if new:
                        csv_writer.writeheader()
                csv_writer.writerow(row)
                csv_file.flush()
        done = update + 1
        stopped = cfg.stop_after_updates is not None and done >= cfg.stop_after_updates
        if cfg.save and (done % cfg.save_every == 0 or done == cfg.num_updates or stopped):
            snapshot = {
                "history": history,
                "beta": controller.beta,
                "reward_mean_std": [mu, sigma],
            }
            save_checkpoint(run_dir, done, model, optimizer, scheduler, snapshot, accelerator)
        if stopped and done < cfg.num_updates:
            break
    bar.close()
    if writer is not None:
        writer.close()
    if csv_file is not None:
        csv_file.close()

    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "history": history,
        "stopped": stopped and len(history) < cfg.num_updates,
        "initial_params": initial,
        "params": trainable_state(policy),
        "accelerator": accelerator,
    }
    if before is not None and not result["stopped"]:
        after = evaluate(policy, envs, eval_prompts, cfg.eval_seed, accelerator, oracle)
        summary = {"before": eval_summary(before), "after": eval_summary(after)}
        summary["train_time_s"] = time.perf_counter() - t0
        summary["updates"] = len(history)
        result["eval"] = summary
        if main_proc and cfg.save:
            grid = min(cfg.grid_images, len(eval_prompts))
            save_before_after(
                before["images"][:grid], after["images"][:grid], run_dir / "samples.png"
            )
            save_reward_histogram(
                before["rewards"], after["rewards"], run_dir / "reward_hist.png", cfg.reward
            )
            write_json(run_dir / "eval.json", summary)
    if main_proc and cfg.save:
        save_curves(history, run_dir / "curves.png")
    accelerator.wait_for_everyone()
    return result


def main(cfg: PPODiffusionConfig) -> dict[str, Any]:
    """Entry point of ``diffenvs train ppo`` and ``python -m agents.ppo_diffusion``."""
    result = train(cfg)
    if result["accelerator"].is_main_process and "eval" in result:
        print(json.dumps(result["eval"], indent=2))
        print(f"run folder: {result['run_dir']}")
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(PPODiffusionConfig))
