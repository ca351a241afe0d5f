"""Differentiable rollouts of ``DiffusionDenoise-v0``'s base sampler: the env's episode as torch code.

A direct reward fine-tuner (ReFL, DRaFT, AlignProp; ``agents/direct``) back-propagates a
differentiable reward through the sampler into the UNet. :class:`DifferentiableSampler` runs the
env's own sampler for that, built only from its public parts:

* the step: :meth:`BaseSampler.model_output` (the env's guided UNet forward) and
  :meth:`BaseSampler.distribution` (the env's step Gaussian), so any sampler with that interface
  (DDIM, DDPM, or a flow-matching sampler) works unchanged;
* the prompt encoding and VAE decode of the env's pipeline, exactly as the env computes them, but
  without ``torch.no_grad``.

Seeding follows the env and ``StableDiffusionPipeline``: one CPU generator per image,
``torch.Generator().manual_seed(seed)``, draws x_T first and then one standard normal per step.
An env episode reset with ``seed`` and stepped (noise mode) with the step noises of
:meth:`DifferentiableSampler.initial_noise` ends at the same image as :meth:`rollout`::

    diff = DifferentiableSampler.from_env(env)
    embeds = diff.encode_prompts(["one red circle"])
    x_T, noise = diff.initial_noise([7])
    out = diff.rollout(unet, embeds, x_T, noise, grad_steps=2, checkpoint=True)
    images = diff.decode(out.latents)            # (B, 3, H, W) in [0, 1], keeps the graph
    reward.differentiable_score(images, prompts).sum().backward()

Options: ``grad_steps=K`` (truncated back-propagation: the first T - K steps run without a graph,
DRaFT-K / AlignProp), ``stop_at=k`` (stop at step k and return its one-step prediction of x_0,
ReFL), ``checkpoint=True`` (recompute each step's UNet activations in the backward pass instead
of storing them: memory per step falls to its inputs), ``base_unet`` (the closed-form KL of every
differentiated step to the frozen model's Gaussian).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from diffenvs.logprob import StepDistribution, gaussian_kl
from diffenvs.sampler import BaseSampler


@dataclass
class RolloutResult:
    """What :meth:`DifferentiableSampler.rollout` returns (tensors keep the graph where asked)."""

    latents: torch.Tensor
    """(B, C, h, w): x_0 after all T steps, or the one-step x_0 prediction at ``stop_at``."""
    kl: torch.Tensor
    """(B,): summed closed-form KL(policy step || base step) over the differentiated steps (0
    without ``base_unet``)."""
    kl_steps: list[torch.Tensor] = field(default_factory=list)
    """The per-step KL (B,) of each differentiated step, in order."""
    last_input: torch.Tensor | None = None
    """x_t of the last step run (detached): where DRaFT-LV re-noises from."""
    steps_run: int = 0
    """Sampler steps run (T, or ``stop_at + 1``)."""
    grad_from: int = 0
    """Index of the first step that kept the graph."""


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode latents to float images (B, 3, H, W) in [0, 1], keeping the graph; the same
    arithmetic as the env's decode (scaling and shift factor, ``image / 2 + 0.5``, clamp)."""
    z = latents / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    image = vae.decode(z.to(vae.dtype), return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1)


class DifferentiableSampler:
    """The env's base sampler, prompt encoding and decode as graph-keeping torch functions.

    Args:
        sampler: the env's :class:`~diffenvs.sampler.BaseSampler` (``env.unwrapped.sampler``).
        pipe: the env's pipeline (its VAE decodes, its tokenizer and text encoder encode prompts):
            the same object the env was made with (``model=pipe``), or the env's own pipeline.
    """

    def __init__(self, sampler: BaseSampler, pipe: Any) -> None:
        for part in ("vae", "encode_prompt"):
            if not hasattr(pipe, part):
                raise TypeError(
                    f"DifferentiableSampler needs the env's Stable-Diffusion-layout pipeline (with "
                    f"{part!r}); got a {type(pipe).__name__}."
                )
        self.sampler, self.pipe = sampler, pipe

    @classmethod
    def from_env(cls, env: Any) -> DifferentiableSampler:
        """Build from a ``DiffusionDenoise-v0`` env (single or vector): its sampler and pipeline."""
        inner = env.unwrapped
        sampler = getattr(inner, "sampler", None)
        if not isinstance(sampler, BaseSampler):
            raise TypeError(
                "from_env needs a DiffusionDenoise-v0 env (its unwrapped env exposes .sampler); "
                f"got {type(inner).__name__}."
            )
        pipe = getattr(inner, "pipeline", None)
        if pipe is None:
            raise TypeError(
                f"from_env needs an env exposing its pipeline (.pipeline); {type(inner).__name__} "
                "has none: build DifferentiableSampler(env.unwrapped.sampler, pipe) directly."
            )
        return cls(sampler, pipe)

    # ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.sampler.timesteps.device

    @property
    def num_steps(self) -> int:
        return self.sampler.num_steps

    @property
    def init_noise_sigma(self) -> float:
        """The scale of x_T (1 for DDIM, DDPM and flow matching)."""
        return float(getattr(self.sampler, "init_noise_sigma", 1.0))

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompt embeddings (B, L, D), as the env encodes them (no classifier-free pair)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode_prompts takes a list of str, one prompt per image.")
        emb, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        return emb

    def initial_noise(
        self, seeds: list[int], dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_T (B, C, h, w), step noise (T, B, C, h, w)) drawn as the env and the pipeline draw them:
        per image a CPU generator seeded with its seed gives x_T, then one normal per step."""
        shape = tuple(self.sampler.latent_shape)
        x_t, steps = [], []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            x_t.append(torch.randn(shape, generator=gen))
            steps.append(
                torch.stack([torch.randn(shape, generator=gen) for _ in range(self.num_steps)])
            )
        dtype = dtype or self.sampler.unet.dtype
        x = torch.stack(x_t).to(self.device, dtype) * self.init_noise_sigma
        noise = torch.stack(steps, dim=1).to(self.device, dtype)
        return x, noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from latents, keeping the graph."""
        return decode_latents(self.pipe.vae, latents)

    # ----------------------------------------------------------------------------------------
    def distribution(
        self, unet: Any, latents: torch.Tensor, k: int, embeds: torch.Tensor
    ) -> StepDistribution:
        """``unet``'s Gaussian of step ``k`` for x_t = ``latents`` (the env's step with ``unet``)."""
        ks = torch.full((len(latents),), int(k), dtype=torch.long, device=latents.device)
        out = self.sampler.model_output(unet, latents, ks, embeds)
        return self.sampler.distribution(out, latents, ks)

    def step(
        self,
        unet: Any,
        latents: torch.Tensor,
        k: int,
        embeds: torch.Tensor,
        noise: torch.Tensor,
        *,
        checkpoint: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_{t-1}, mean, predicted x_0) of step ``k``: ``mean + σ_k · noise`` as the env steps."""

        def run(x: torch.Tensor, e: torch.Tensor, n: torch.Tensor):
            dist = self.distribution(unet, x, k, e)
            std = dist.std.reshape(-1, *([1] * (x.ndim - 1))).to(dist.mean)
            prev = torch.where(std > 0, dist.mean + std * n, dist.mean)
            return prev, dist.mean, dist.pred_original_sample

        if checkpoint and torch.is_grad_enabled():
            return _checkpoint(run, latents, embeds, noise, use_reentrant=False)
        return run(latents, embeds, noise)

    def base_mean(self, base_unet: Any, latents: torch.Tensor, k: int, embeds: torch.Tensor):
        """The frozen model's step mean (no graph): the reference of the closed-form KL."""
        with torch.no_grad():
            return self.distribution(base_unet, latents.detach(), k, embeds).mean

    def rollout(
        self,
        unet: Any,
        embeds: torch.Tensor,
        x_T: torch.Tensor,
        noise: torch.Tensor,
        *,
        grad_steps: int | None = None,
        stop_at: int | None = None,
        checkpoint: bool = False,
        base_unet: Any = None,
    ) -> RolloutResult:
        """Run the sampler from ``x_T`` with ``unet``; steps from ``grad_from`` on keep the graph.

        Args:
            unet: the UNet that denoises (a trainable copy of ``sampler.unet``, or it itself).
            embeds: prompt embeddings (B, L, D) (:meth:`encode_prompts`).
            x_T: (B, C, h, w); noise: (T, B, C, h, w) step noise (:meth:`initial_noise`).
            grad_steps: K, how many of the last steps keep the graph (truncated back-propagation;
                gradients stop at the input of step T - K, or of ``stop_at + 1 - K``). ``None``:
                every step.
            stop_at: stop after running step ``k`` and return its one-step x_0 prediction (ReFL).
            checkpoint: gradient checkpointing of each differentiated step.
            base_unet: the frozen model; with it, ``kl`` is the closed-form per-step KL.
        """
        steps = self.num_steps if stop_at is None else int(stop_at) + 1
        if not 1 <= steps <= self.num_steps:
            raise ValueError(
                f"stop_at={stop_at} is outside the schedule's steps 0..{self.num_steps - 1}."
            )
        if tuple(noise.shape[:2]) != (self.num_steps, len(x_T)):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}; expected (T={self.num_steps}, "
                f"B={len(x_T)}, C, h, w), as initial_noise returns it."
            )
        if grad_steps is not None and not 0 <= int(grad_steps) <= steps:
            raise ValueError(f"grad_steps={grad_steps} must be in 0..{steps} (or None for all).")
        grad_from = 0 if grad_steps is None else steps - int(grad_steps)
        x, kl_steps, x0 = x_T, [], None
        last_input = x_T
        for k in range(steps):
            keep = k >= grad_from and torch.is_grad_enabled()
            if k == grad_from and k > 0:
                x = x.detach()  # truncation: nothing flows back past step grad_from
            last_input = x.detach()
            with torch.set_grad_enabled(keep):
                prev, mean, x0 = self.step(unet, x, k, embeds, noise[k], checkpoint=checkpoint)
            if keep and base_unet is not None:
                ref = self.base_mean(base_unet, x, k, embeds)
                std = self.sampler.sigma[k].reshape(1).expand(len(x)).to(mean.device)
                kl_steps.append(gaussian_kl(mean.float(), ref.float(), std.float()))
            x = prev
        kl = torch.stack(kl_steps).sum(0) if kl_steps else x.new_zeros(len(x), dtype=torch.float32)
        latents = x if stop_at is None else x0
        return RolloutResult(latents, kl, kl_steps, last_input, steps, grad_from)

    def renoise(self, x0: torch.Tensor, k: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t of step ``k`` from a clean ``x0`` (the forward process; DRaFT-LV's re-noising).

        Uses the sampler's ``add_noise`` where it has one (e.g. a flow-matching sampler), else
        the DDIM/DDPM coefficients ``sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε``.
        """
        add_noise = getattr(self.sampler, "add_noise", None)
        if callable(add_noise):
            return add_noise(x0, k, noise)
        coeffs = self.sampler.coefficients[int(k)]
        if not hasattr(coeffs, "sqrt_alpha"):
            raise NotImplementedError(
                f"The {self.sampler.scheduler_name!r} sampler has neither add_noise nor DDIM/DDPM "
                "coefficients, so DRaFT-LV cannot re-noise x_0; use DRaFT-K or AlignProp."
            )
        a = coeffs.sqrt_alpha.reshape(1, 1, 1, 1).to(x0)
        b = coeffs.sqrt_beta.reshape(1, 1, 1, 1).to(x0)
        return a * x0 + b * noise
