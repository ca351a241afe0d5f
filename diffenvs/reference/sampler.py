"""The base samplers of the reference envs, with the public interface of :class:`diffenvs.sampler.BaseSampler`.

* DDIM (eta > 0) and DDPM: a real :class:`~diffenvs.sampler.BaseSampler` built from a diffusers
  scheduler (cosine ᾱ schedule, 1000 training steps) whose ``unet`` is the exact
  :class:`~diffenvs.reference.denoiser.MixtureDenoiser`, so the step Gaussians are computed by
  :mod:`diffenvs.logprob` exactly as ``DiffusionDenoise-v0`` computes them.
* ``"flow"``: :class:`ReferenceFlowSampler`, rectified flow (``x_t = (1-σ) x_0 + σ ε``, σ from 1 to 0 in
  equal steps) with the SDE step of Liu et al., "Flow-GRPO": with ``dt = σ_{k+1} - σ_k < 0`` and
  ``σ̃ = noise_level · sqrt(σ / (1 - σ))`` (σ = 1 replaced by the next σ in the denominator),

      x_{k+1} ~ N( x + [v + σ̃² / (2σ) · (x + (1 - σ) v)] dt ,  σ̃² |dt| I ),

  the Euler-Maruyama step of the reverse SDE whose marginals are the flow's (its drift adds
  ``-(σ̃²/2) ∇log p_σ``, and ``∇log p_σ(x) = -(x + (1 - σ) v) / σ`` on a rectified-flow path).

Both expose ``model_output(model, latents, k, embeds)``, ``distribution(out, latents, k)`` (a
:class:`~diffenvs.logprob.StepDistribution`), ``sigma``, ``timesteps``, ``num_steps``,
``latent_shape``, ``embed_shape`` and ``unet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from diffenvs.logprob import StepDistribution, gaussian_kl, previous_timestep, step_coefficients
from diffenvs.reference.denoiser import NUM_TRAIN_TIMESTEPS, MixtureDenoiser
from diffenvs.reference.mixture import GaussianMixture
from diffenvs.sampler import BaseSampler, guided_model_output

SAMPLERS = ("ddim", "ddpm", "flow")


@dataclass(frozen=True, eq=False)
class ReferenceFlowSampler:
    """Rectified flow with the Flow-GRPO SDE step (module docstring); same interface as BaseSampler.

    ``timesteps[k] = 1000 σ_k`` (float) is what the denoiser and the observation see.
    """

    noise_level: float
    sigmas: torch.Tensor  # (T + 1,) float64, 1 -> 0
    latent_shape: tuple[int, int, int]
    embed_shape: tuple[int, ...]
    unet: Any = field(repr=False)
    scheduler_name: str = "flow"
    family: str = "reference"
    guidance_scale: float = 1.0
    negative_embeds: torch.Tensor | None = None
    timestep_cond: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def do_cfg(self) -> bool:
        return False

    @property
    def timesteps(self) -> torch.Tensor:
        """(T,) float32: 1000 σ of each step's x_t."""
        return (self.sigmas[:-1] * NUM_TRAIN_TIMESTEPS).float()

    @property
    def prev_timesteps(self) -> torch.Tensor:
        return (self.sigmas[1:] * NUM_TRAIN_TIMESTEPS).float()

    def _noise_scale(self) -> torch.Tensor:
        s = self.sigmas[:-1]
        denom = 1 - torch.where(s >= 1, self.sigmas[1], s)
        return self.noise_level * torch.sqrt(s / denom)  # σ̃ per step

    @property
    def sigma(self) -> torch.Tensor:
        """(T,) float32: the std of each step's Gaussian, σ̃ sqrt(|dt|)."""
        dt = self.sigmas[:-1] - self.sigmas[1:]
        return (self._noise_scale() * dt.sqrt()).float()

    def model_output(
        self,
        unet: Any,
        latents: torch.Tensor,
        k: torch.Tensor,
        embeds: torch.Tensor,
        *,
        upcast: bool = False,
    ) -> torch.Tensor:
        """``unet``'s velocity for x_t = ``latents`` at step indices ``k`` (B,)."""
        t = self.timesteps.to(latents.device)[k.to(latents.device)]
        return self.forward_at(unet, latents, t, embeds, upcast=upcast)

    def forward_at(
        self,
        unet: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        *,
        upcast: bool = False,
    ) -> torch.Tensor:
        """As :meth:`model_output`, at explicit timesteps ``t`` (1000 σ) instead of step indices."""
        return guided_model_output(
            unet,
            latents,
            t,
            embeds,
            guidance_scale=1.0,
            negative_embeds=None,
            timestep_cond=None,
            upcast=upcast,
        )

    def kl(self, policy: StepDistribution, base: StepDistribution) -> torch.Tensor:
        """Closed-form KL(policy || base) (B,) of two steps (they share σ)."""
        return gaussian_kl(policy.mean, base.mean, policy.std)

    def distribution(
        self, model_output: torch.Tensor, latents: torch.Tensor, k: torch.Tensor
    ) -> StepDistribution:
        """The Gaussian of x_{k+1} given x_k = ``latents`` and the velocity ``model_output``."""
        if model_output.shape != latents.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but latents have shape {tuple(latents.shape)}."
            )
        kc = k.cpu().long()
        shape = (-1, *([1] * (latents.ndim - 1)))

        def c(x: torch.Tensor) -> torch.Tensor:
            return x[kc].reshape(shape).to(device=latents.device, dtype=latents.dtype)

        s, s_next = c(self.sigmas[:-1]), c(self.sigmas[1:])
        dt = s_next - s
        tilde = c(self._noise_scale())
        v, x = model_output, latents
        mean = x + (v + tilde**2 / (2 * s) * (x + (1 - s) * v)) * dt
        std = self.sigma[kc].to(device=latents.device, dtype=latents.dtype)
        return StepDistribution(
            mean=mean,
            std=std,
            pred_original_sample=x - s * v,
            timestep=self.timesteps[kc],
            prev_timestep=self.prev_timesteps[kc],
        )


def set_control_gain(sampler: Any) -> None:
    """Give ``sampler.unet``'s residual the gain σ_k² / (∂ mean_k / ∂ output) of each step (0 for a
    deterministic step), measured from the sampler's own (linear) step: see
    :meth:`MixtureDenoiser.set_residual_gain`."""
    unet = sampler.unet
    shape = (sampler.num_steps, *sampler.latent_shape)
    k = torch.arange(sampler.num_steps, device=unet.device)
    zeros = torch.zeros(shape, device=unet.device)
    slope = (
        sampler.distribution(torch.ones_like(zeros), zeros, k).mean
        - sampler.distribution(zeros, zeros, k).mean
    )
    slope = slope.reshape(sampler.num_steps, -1)[:, 0].double()
    var = sampler.sigma.to(unet.device).double() ** 2
    ok = (var > 0) & (slope.abs() > 1e-12)
    gain = torch.where(
        ok, var / torch.where(ok, slope, torch.ones_like(slope)), torch.zeros_like(var)
    )
    unet.set_residual_gain(sampler.timesteps.to(unet.device).double(), gain)


def make_reference_scheduler(kind: str) -> Any:
    """The diffusers DDIM/DDPM scheduler of the reference envs (cosine ᾱ, ε-prediction).

    DDIM uses ``"trailing"`` spacing (the first step starts from t = 999) and
    ``set_alpha_to_one=False``, so even its last step is a Gaussian with σ > 0 (no deterministic
    step whose mean a policy could move without paying KL). DDPM uses ``"leading"`` spacing; its
    last step (t = 0) is deterministic, as in diffusers, where x_t carries noise of std 0.006.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    common = {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_schedule": "squaredcos_cap_v2",
        "clip_sample": False,
        "prediction_type": "epsilon",
    }
    if kind == "ddim":
        return DDIMScheduler(**common, set_alpha_to_one=False, timestep_spacing="trailing")
    if kind == "ddpm":
        return DDPMScheduler(**common, variance_type="fixed_small", timestep_spacing="leading")
    if kind == "flow":
        return SimpleNamespace(config=SimpleNamespace(num_train_timesteps=NUM_TRAIN_TIMESTEPS))
    raise ValueError(f"Unknown scheduler {kind!r}; use one of {list(SAMPLERS)}.")


def build_reference_sampler(
    kind: str,
    mixture: GaussianMixture,
    *,
    num_steps: int,
    latent_shape: tuple[int, int, int],
    embed_shape: tuple[int, ...],
    eta: float = 1.0,
    noise_level: float = 0.7,
    hidden: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[BaseSampler | ReferenceFlowSampler, Any]:
    """(the base sampler with an exact :class:`MixtureDenoiser`, the scheduler) for ``kind``."""
    scheduler = make_reference_scheduler(kind)
    embed_dim = int(torch.Size(embed_shape).numel())
    if kind == "flow":
        if not noise_level > 0:
            raise ValueError(
                f"noise_level must be > 0 (the flow SDE step's noise), got {noise_level}."
            )
        unet = MixtureDenoiser(mixture, "flow", latent_shape, embed_dim, hidden=hidden).to(device)
        sigmas = torch.linspace(1.0, 0.0, int(num_steps) + 1, dtype=torch.float64)
        flow = ReferenceFlowSampler(
            float(noise_level), sigmas, latent_shape, tuple(embed_shape), unet
        )
        set_control_gain(flow)
        return flow, scheduler
    if kind == "ddim" and not eta > 0:
        raise ValueError(
            f"DDIM with eta={eta} is deterministic; use eta > 0 (1.0 as in DDPO) or 'ddpm'."
        )
    scheduler.set_timesteps(int(num_steps))
    timesteps = scheduler.timesteps.long()
    prev = previous_timestep(scheduler, timesteps)
    coeffs = step_coefficients(scheduler, timesteps, eta=eta, prev_timestep=prev)
    if kind == "ddim":
        # From pure noise (ᾱ_999 ~ 1e-9) DDIM's sqrt(1 - ᾱ_prev - σ²) rounds to sqrt of a tiny
        # negative number (NaN in diffusers too): clamp it at 0.
        rest = 1 - coeffs.x0_coeff**2 - coeffs.std.reshape(coeffs.x0_coeff.shape) ** 2
        coeffs.second_coeff = rest.clamp_min(0).sqrt()
    coeffs = coeffs.to(device)
    unet = MixtureDenoiser(
        mixture,
        "ddpm",
        latent_shape,
        embed_dim,
        alphas_cumprod=scheduler.alphas_cumprod,
        hidden=hidden,
    ).to(device)
    sampler = BaseSampler(
        scheduler_name=kind,
        eta=float(eta),
        timesteps=timesteps.to(device),
        prev_timesteps=prev.to(device),
        coefficients=coeffs,
        guidance_scale=1.0,
        negative_embeds=None,
        timestep_cond=None,
        latent_shape=tuple(latent_shape),
        embed_shape=tuple(embed_shape),
        unet=unet,
    )
    set_control_gain(sampler)
    return sampler, scheduler
