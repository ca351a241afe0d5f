"""The base sampler of ``DiffusionDenoise-v0``: one guided UNet forward and a public description.

Two things live here so that the environment and every diffusion policy compute a sampler step the
same way:

* :func:`guided_model_output`: THE classifier-free-guided UNet forward (Ho & Salimans, "Classifier-Free
  Diffusion Guidance"), as ``StableDiffusionPipeline`` computes it, including the guidance
  embedding (``timestep_cond``) that guidance-distilled UNets such as LCMs take instead of a second,
  unconditional pass. It has no ``torch.no_grad`` inside, so a policy differentiates through it.
* :class:`BaseSampler`: a frozen, read-only description of the env's base sampler (timesteps, the
  per-step coefficients and σ_t of the reverse-step Gaussians, guidance, conditioning, shapes).
  The env builds one at construction and exposes it as ``env.unwrapped.sampler``; agents read
  it instead of the env's internals.

A policy that copies ``sampler.unet`` and computes its step with :meth:`BaseSampler.model_output` and
:meth:`BaseSampler.distribution` is, before any training, exactly the env's base step::

    sampler = env.unwrapped.sampler
    out = sampler.model_output(policy_unet, latents, k, embeds)
    dist = sampler.distribution(out, latents, k)       # dist.mean, dist.std, dist.log_prob(x_prev)

The step Gaussians themselves (DDIM with eta > 0, DDPM) are in :mod:`diffenvs.logprob`.

The interface, for every model family the env runs (``sampler.family``):

========================  =====================================================================
``model_output(model, latents, k, embeds, *, upcast=False)``
                          the guided output of ``model`` (``sampler.unet`` or a trainable copy)
                          for x_t = ``latents`` (B, C, h, w) at step indices ``k`` (B,), with the
                          prompt embeddings ``embeds`` (B, L', D) = ``obs["prompt_embeds"]``.
                          Differentiable (no ``torch.no_grad`` inside).
``distribution(out, latents, k)``
                          the Gaussian of x_{t-1}: a :class:`~diffenvs.logprob.StepDistribution`
                          with ``mean``, ``std`` (B,), ``log_prob(x_prev)`` (summed over dims),
                          ``sample(noise)``, ``noise_of(x_prev)``, ``pred_original_sample``.
``kl(p, q)``              closed-form KL(p || q) (B,) of two such Gaussians.
``add_noise(x0, k, eps)`` (flow models only) x_t of step k on the straight path (1 - σ) x0 + σ ε.
``sigma``                 (T,) the std of each step's Gaussian (schedule-only; 0 = deterministic).
``timesteps``             (T,) the timestep of each step (long for UNets, float for flow models).
``num_steps``             T.
``latent_shape``          (C, h, w) of one latent (FLUX's too: packing happens inside the call).
``embed_shape``           (L', D) of one prompt embedding.
``unet``                  the frozen base denoiser: the UNet, or the transformer of a flow model.
``family``                ``"sd"`` (SD 1.x/2.x, LCM), ``"sdxl"``, ``"sd3"`` or ``"flux"``.
========================  =====================================================================

SDXL, SD3 and FLUX also read a pooled text embedding: it rides in ``embeds`` as extra rows
(:class:`diffenvs.conditioning.PooledPacking`), and the family's constant conditioning (SDXL's
``time_ids``, FLUX's guidance value and position ids) lives in ``model_call``
(:mod:`diffenvs.conditioning`), so a policy passes ``obs["prompt_embeds"]`` and never needs to know
the family. Flow models (SD3, FLUX) use :class:`FlowSampler`: ``model_output`` is the velocity and
``distribution`` the Flow-GRPO SDE (or CPS) Gaussian of :mod:`diffenvs.flow_logprob`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffenvs.flow_logprob import FlowCoefficients, flow_distribution, step_kl
from diffenvs.logprob import StepCoefficients, StepDistribution, distribution_from_coefficients


def guided_model_output(
    unet: Any,
    latents: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    *,
    guidance_scale: float,
    negative_embeds: torch.Tensor | None,
    timestep_cond: torch.Tensor | None,
    upcast: bool = False,
) -> torch.Tensor:
    """The (classifier-free-guided) UNet output for a batch, as ``StableDiffusionPipeline`` computes it.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (or a trainable copy of one, e.g. with LoRA).
        latents: x_t, shape (B, C, h, w).
        t: the timestep of each sample, shape (B,), or one shared 0-d timestep.
        embeds: the prompt embeddings (B, L, D).
        guidance_scale: w of ``uncond + w * (text - uncond)``.
        negative_embeds: the unconditional (negative-prompt) embedding, (1, L, D). ``None`` turns
            classifier-free guidance off: one conditional pass (guidance_scale <= 1, or a
            guidance-distilled UNet that takes the scale through ``timestep_cond``).
        timestep_cond: the guidance-scale embedding (1, time_cond_proj_dim) of a UNet whose config
            sets ``time_cond_proj_dim`` (LCM-style), else ``None``.
        upcast: do the guidance combination in float32 (a policy under mixed precision wants its
            Gaussian in float32); ``False`` keeps the UNet's dtype, as the pipeline does.

    Returns:
        The guided prediction (epsilon, v or x_0, per the scheduler), shape (B, C, h, w).
    """
    b = latents.shape[0]
    # One timestep shared by the whole batch goes in as a 0-d tensor, as the pipeline passes it.
    t_in = t[0] if t.ndim == 1 and bool((t == t[0]).all()) else t
    x, emb = latents, embeds
    if negative_embeds is not None:
        # The pipeline's order: the unconditional half first.
        x = torch.cat([latents, latents])
        emb = torch.cat([negative_embeds.expand(b, -1, -1).to(embeds), embeds])
        t_in = t_in if t_in.ndim == 0 else torch.cat([t_in, t_in])
    cond = None if timestep_cond is None else timestep_cond.expand(x.shape[0], -1)
    out = unet(x, t_in, encoder_hidden_states=emb, timestep_cond=cond, return_dict=False)[0]
    if upcast:
        out = out.float()
    if negative_embeds is not None:
        uncond, text = out.chunk(2)
        out = uncond + guidance_scale * (text - uncond)
    return out


@dataclass(frozen=True, eq=False)
class BaseSampler:
    """The env's base sampler, read-only: what its frozen model does at each of the T steps.

    Step k (0 <= k < T) moves x_t, ``t = timesteps[k]``, to x_{t-1} ~ N(mean_k, σ_k² I) where
    ``mean_k`` applies ``coefficients[k]`` to the guided UNet output (:func:`guided_model_output`)
    and ``σ_k = sigma[k]`` depends only on the schedule. The tensors live on the env's device and
    are shared with the env: never write into them.
    """

    scheduler_name: str
    """``"ddim"`` or ``"ddpm"``."""
    eta: float
    """DDIM's noise weight (> 0, so every step is a Gaussian); unused by DDPM."""
    timesteps: torch.Tensor
    """(T,) long: the timestep t of each step, in sampling order (high noise first)."""
    prev_timesteps: torch.Tensor
    """(T,) long: the timestep each step moves to (-1 past the end of the schedule)."""
    coefficients: StepCoefficients | FlowCoefficients
    """The per-step scalars of the reverse-step Gaussians (:mod:`diffenvs.logprob`), one row per
    step; ``coefficients[k]`` selects steps ``k`` (an int or a (B,) index tensor)."""
    guidance_scale: float
    """Classifier-free guidance weight w (also what ``timestep_cond`` encodes)."""
    negative_embeds: torch.Tensor | None
    """(1, L, D) unconditional embedding when classifier-free guidance runs, else ``None``."""
    timestep_cond: torch.Tensor | None
    """(1, time_cond_proj_dim) guidance-scale embedding for LCM-style UNets, else ``None``."""
    latent_shape: tuple[int, int, int]
    """(C, h, w) of one latent x_t."""
    embed_shape: tuple[int, ...]
    """(L, D) of one prompt embedding."""
    unet: Any = field(repr=False)
    """The frozen base UNet the env runs (the transformer of a flow model). Agents copy it to build
    a trainable policy; never train it in place (the env's base log-probs and KL references come
    from it)."""
    family: str = "sd"
    """The pipeline family: ``"sd"`` (SD 1.x/2.x, LCM-style), ``"sdxl"``, ``"sd3"`` or ``"flux"``."""
    model_call: Any = field(default=None, repr=False)
    """The family's model call (:mod:`diffenvs.conditioning`), or ``None`` for the plain SD UNet
    call :func:`guided_model_output`."""

    @property
    def num_steps(self) -> int:
        """T, the number of sampler steps in an episode."""
        return len(self.timesteps)

    @property
    def do_cfg(self) -> bool:
        """Whether a step runs classifier-free guidance (two UNet passes per sample)."""
        return self.negative_embeds is not None

    @property
    def sigma(self) -> torch.Tensor:
        """(T,) σ_t, the standard deviation of each step's Gaussian (the same for every policy)."""
        return self.coefficients.std.reshape(-1)

    def model_output(
        self,
        unet: Any,
        latents: torch.Tensor,
        k: torch.Tensor,
        embeds: torch.Tensor,
        *,
        upcast: bool = False,
    ) -> torch.Tensor:
        """``unet``'s guided output for x_t = ``latents`` at step indices ``k`` (B,), with this
        sampler's guidance; pass ``self.unet`` for the base model or a trainable copy for a policy."""
        return self.forward_at(unet, latents, self.timesteps[k], embeds, upcast=upcast)

    def forward_at(
        self,
        unet: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        *,
        upcast: bool = False,
    ) -> torch.Tensor:
        """As :meth:`model_output`, at explicit timesteps ``t`` (B,) instead of step indices."""
        if self.model_call is not None:
            return self.model_call(
                unet,
                latents,
                t,
                embeds,
                guidance_scale=self.guidance_scale,
                negative_embeds=self.negative_embeds,
                upcast=upcast,
            )
        return guided_model_output(
            unet,
            latents,
            t,
            embeds,
            guidance_scale=self.guidance_scale,
            negative_embeds=self.negative_embeds,
            timestep_cond=self.timestep_cond,
            upcast=upcast,
        )

    def distribution(
        self, model_output: torch.Tensor, latents: torch.Tensor, k: torch.Tensor
    ) -> StepDistribution:
        """The Gaussian of x_{t-1} at step indices ``k`` (B,) for a guided ``model_output``."""
        return distribution_from_coefficients(self.coefficients[k], model_output, latents)

    def kl(self, policy: StepDistribution, base: StepDistribution) -> torch.Tensor:
        """Closed-form KL(policy || base) (B,) of two step Gaussians (:func:`~diffenvs.flow_logprob.step_kl`)."""
        return step_kl(policy, base)


@dataclass(frozen=True, eq=False)
class FlowSampler(BaseSampler):
    """The base sampler of a flow-matching model (SD3, FLUX): same interface, flow Gaussians.

    ``unet`` is the transformer, :meth:`model_output` its (guided) velocity, and step k moves x_t to
    x_{t-1} ~ N(A_k x_t + B_k v, s_k² I) (:mod:`diffenvs.flow_logprob`): the Flow-GRPO SDE step
    (``sde_type="sde"``) or the coefficients-preserving one (``"cps"``) with ``noise_level[k]``;
    a step with noise level 0 is the deterministic Euler (ODE) step of the diffusers pipeline (its
    ``sigma`` is 0). ``coefficients`` is a :class:`~diffenvs.flow_logprob.FlowCoefficients`,
    ``timesteps`` are floats (σ · 1000), ``eta`` is unused (0).
    """

    sde_type: str = "sde"
    """``"sde"`` (Flow-GRPO, Liu et al.) or ``"cps"`` (Wang & Yu, coefficients-preserving)."""
    noise_level: tuple[float, ...] = ()
    """The noise level a of each step (0: the ODE step)."""

    @property
    def sigmas(self) -> torch.Tensor:
        """(T + 1,) the flow sigmas σ of the schedule (the noise weight of x_t; the last is 0)."""
        c: FlowCoefficients = self.coefficients  # type: ignore[assignment]
        return torch.cat([c.sigma.reshape(-1), c.sigma_next.reshape(-1)[-1:]])

    def add_noise(
        self, x0: torch.Tensor, k: int | torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t of step ``k`` (an int or (B,) indices) for clean latents ``x0``: the straight path
        (1 - σ_k) x0 + σ_k ε of flow matching (the forward process the model was trained on)."""
        c: FlowCoefficients = self.coefficients  # type: ignore[assignment]
        sigma = c.sigma[torch.as_tensor(k, device=c.sigma.device)].to(x0)
        sigma = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        return (1 - sigma) * x0 + sigma * noise

    def distribution(
        self, model_output: torch.Tensor, latents: torch.Tensor, k: torch.Tensor
    ) -> StepDistribution:
        """The flow step's Gaussian of x_{t-1} at step indices ``k`` (B,) for velocity ``model_output``."""
        return flow_distribution(self.coefficients[k], model_output, latents)
