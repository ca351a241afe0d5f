"""The diffusion-policy PPO agent's policy (:mod:`agents.ppo_diffusion`): how it acts and learns.

* :class:`DiffusionActorCritic`: a trainable copy of the world's UNet as a Gaussian policy over
  x_{t-1}, plus an optional value network (:class:`ValueNet`); :func:`build_policy_unet` makes
  the trainable copy (LoRA adapters or every weight), :func:`make_optimizer` its optimiser.
* :func:`run_episodes` / :func:`collect_rollout`: episodes in ``DiffusionDenoise-v0`` with the
  policy acting, gathered into a :class:`~agents.ppo_diffusion_lib.RolloutBuffer`.
* :func:`ppo_update`: clipped-PPO minibatch SGD over a rollout.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.ppo_diffusion_lib import RolloutBuffer
from diffenvs.logprob import gaussian_kl

if TYPE_CHECKING:
    from agents.ppo_diffusion import PPODiffusionConfig

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

    def step_std(self, k: torch.Tensor) -> torch.Tensor:
        """σ_t of the reverse step at step indices ``k`` (the policy's and the base model's)."""
        return self._coeffs.std.reshape(-1)[k.cpu()]

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
        base_means: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(log-prob of ``next_latents`` (B,), value (B,) or None, exact KL to the base step (B,)
        or None when ``base_means`` is None): one call, so DDP sees every parameter it uses."""
        dist = self.distribution(latents, k, embeds)
        log_prob = dist.log_prob(next_latents.float())
        value = self.value_of(latents, k, embeds) if self.value is not None else None
        kl = None
        if base_means is not None:
            kl = gaussian_kl(dist.mean.float(), base_means.float(), dist.std.float())
        return log_prob, value, kl


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
    """A trainable copy of the base UNet: LoRA adapters (peft), every weight, the
    cross-attention keys and values, or the weights of named modules."""
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
    elif cfg.finetune == "cross_attention":
        # Custom Diffusion's choice: only the keys and values that read the text move, so what a
        # prompt does can change while the image pathway (layout, colours) stays the base model's.
        trained = [
            p
            for name, module in unet.named_modules()
            if name.endswith("attn2")
            for proj in ("to_k", "to_v")
            for p in getattr(module, proj).parameters()
        ]
        if not trained:
            raise ValueError(
                "finetune='cross_attention' found no cross-attention (attn2) modules in the UNet; "
                "use finetune='lora' or 'full' for a UNet without text cross-attention."
            )
        for p in trained:
            p.requires_grad_(True)
    elif cfg.finetune == "modules":
        names = [n for n, _ in unet.named_modules() if n]
        for wanted in cfg.train_modules:
            matched = [n for n in names if n == wanted or n.startswith(wanted + ".")]
            if not matched:
                tops = sorted({n.split(".")[0] for n in names})
                raise ValueError(
                    f"train_modules entry {wanted!r} names no UNet module; use a module name or "
                    f"prefix such as {tops} (or 'up_blocks.2')."
                )
            unet.get_submodule(wanted).requires_grad_(True)
    else:
        raise ValueError(
            "finetune must be 'lora', 'full', 'cross_attention' or 'modules', got "
            f"{cfg.finetune!r}."
        )
    return unet


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that training changes (LoRA weights or the whole UNet, and the critic)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _schedule(warmup: int, decay_over: int = 0):
    """Linear warm-up over ``warmup`` optimiser steps, then (``decay_over`` > 0) a linear fall to
    0 at step ``decay_over``."""

    def factor(step: int) -> float:
        scale = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
        if decay_over > 0 and step >= warmup:
            scale *= max(0.0, 1.0 - (step - warmup) / max(1, decay_over - warmup))
        return scale

    return factor


def optimiser_steps(cfg: PPODiffusionConfig) -> int:
    """Optimiser steps of a whole run (every update takes the same number)."""
    per_update = (
        cfg.num_envs * cfg.episodes_per_update * math.ceil(cfg.timestep_fraction * cfg.num_steps)
    )
    return (
        cfg.num_updates * cfg.num_epochs * per_update // (cfg.minibatch_size * cfg.grad_accum_steps)
    )


def make_optimizer(model: DiffusionActorCritic, cfg: PPODiffusionConfig) -> tuple[Any, Any]:
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
    """One env batch of episodes with the policy acting; everything a rollout buffer needs."""
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
        base_log_probs.append(torch.as_tensor(info["log_prob"], dtype=torch.float32))
        base_mean = torch.as_tensor(np.asarray(info["mean"]), dtype=torch.float32)
        exact_kl.append(gaussian_kl(dist.mean.float().cpu(), base_mean, dist.std.float().cpu()))
        base_means.append(base_mean)
    if not terminated.all():
        raise RuntimeError("Episodes did not end after num_steps steps.")
    return {
        "latents": torch.stack(latents, 1),
        "next_latents": torch.stack(next_latents, 1),
        "embeds": embeds.cpu(),
        "log_probs": torch.stack(log_probs, 1),
        "base_log_probs": torch.stack(base_log_probs, 1),
        "exact_kl": torch.stack(exact_kl, 1),
        "base_means": torch.stack(base_means, 1),
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
    # Steps below pg_min_std keep their KL terms but give no policy gradient (see the option).
    step_std = accelerator.unwrap_model(model).step_std(torch.arange(t))
    pg_steps = step_std >= cfg.pg_min_std
    if not bool(pg_steps.any()):
        raise ValueError(
            f"pg_min_std={cfg.pg_min_std} excludes every step (the largest σ_t is "
            f"{float(step_std.max()):.3f}); lower it."
        )
    keys = ("pg_loss", "v_loss", "kl_loss", "approx_kl", "clipfrac")
    stats: dict[str, list[float]] = {k: [] for k in keys}
    direct_kl = cfg.kl_loss_coef > 0
    if direct_kl and buffer.base_means is None:
        raise ValueError(
            "kl_loss_coef > 0 needs the base model's step means (RolloutBuffer.base_means), which "
            "this buffer lacks: build it with collect_rollout, or set kl_loss_coef=0."
        )
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
                    log_prob, value, kl = model(
                        buffer.latents[r, k].to(device),
                        k.to(device),
                        buffer.embeds[r].to(device),
                        buffer.next_latents[r, k].to(device),
                        buffer.base_means[r, k].to(device) if direct_kl else None,
                    )
                old = buffer.log_probs[r, k].to(device)
                a = adv[r, k].to(device)
                ratio = torch.exp(log_prob - old)
                pg_terms = torch.maximum(
                    -a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                )
                pg = (pg_terms * pg_steps[k].to(device)).mean()
                loss = pg
                if kl is not None:
                    # DPOK's KL regulariser: the exact per-step KL is differentiable in θ, so it
                    # pulls the policy back to the base model without the policy gradient's noise.
                    kl_loss = kl.mean()
                    loss = loss + cfg.kl_loss_coef * kl_loss
                    stats["kl_loss"].append(float(kl_loss.detach()))
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
