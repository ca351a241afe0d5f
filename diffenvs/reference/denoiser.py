"""The exact noise/velocity predictor of a Gaussian mixture, shaped like a diffusers UNet.

:class:`MixtureDenoiser` is the base model of the reference envs: called as
``model(x, t, encoder_hidden_states=c, timestep_cond=None, return_dict=False)[0]``, like
``UNet2DConditionModel``, it returns the mixture's exact ε (DDPM/DDIM path, ``t`` an integer
training timestep) or exact velocity ``v = ε - x_0`` (rectified flow, ``x_t = (1-σ) x_0 + σ ε``
with ``σ = t / 1000``), plus a small residual MLP of (x, t, c) whose last layer starts at zero.
So a copy of it is a trainable diffusion policy that starts *exactly* at the base model: the
suite's diffusion agents (``agents/ppo``) fine-tune it as they fine-tune a UNet. The mixture's
parameters are buffers (never trained).
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from diffenvs.reference.mixture import GaussianMixture

PATHS = ("ddpm", "flow")
NUM_TRAIN_TIMESTEPS = 1000


class _Output(SimpleNamespace):
    """``return_dict=True`` result: ``.sample`` as diffusers' ``UNet2DConditionOutput``."""


class MixtureDenoiser(nn.Module):
    """Exact ε (``path="ddpm"``) or velocity (``path="flow"``) of a Gaussian mixture + a residual MLP.

    Args:
        mixture: the data distribution p_0.
        path: ``"ddpm"`` (``x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε``, ᾱ from ``alphas_cumprod``) or
            ``"flow"`` (``x_t = (1-σ) x_0 + σ ε``, σ = t / 1000).
        alphas_cumprod: (1000,) ᾱ of the DDPM path (the scheduler's); unused for flow.
        latent_shape: (C, h, w) of the env's latents, C·h·w = d.
        embed_dim: width of the flattened conditioning (the env's one-hot prompt embedding).
        hidden: width of the residual MLP; ``0`` gives no residual (then ``nn.Module`` has no
            parameters, which PPO cannot train).
    """

    def __init__(
        self,
        mixture: GaussianMixture,
        path: str,
        latent_shape: tuple[int, int, int],
        embed_dim: int,
        alphas_cumprod: torch.Tensor | None = None,
        hidden: int = 64,
        time_features: int = 8,
    ) -> None:
        super().__init__()
        if path not in PATHS:
            raise ValueError(f"Unknown noising path {path!r}; use one of {list(PATHS)}.")
        d = math.prod(latent_shape)
        if d != mixture.dim:
            raise ValueError(
                f"latent_shape {latent_shape} has {d} values but the mixture is {mixture.dim}-D."
            )
        if path == "ddpm" and (
            alphas_cumprod is None or len(alphas_cumprod) != NUM_TRAIN_TIMESTEPS
        ):
            raise ValueError("path='ddpm' needs the scheduler's alphas_cumprod (1000 values).")
        # A private copy: exact() points it at this module's buffers (which follow .to(device)).
        self.mixture, self.path = copy.copy(mixture), path
        self.latent_shape, self.embed_dim, self.time_features = (
            tuple(latent_shape),
            int(embed_dim),
            int(time_features),
        )
        ac = torch.ones(NUM_TRAIN_TIMESTEPS) if alphas_cumprod is None else alphas_cumprod
        self.register_buffer("alphas_cumprod", ac.detach().double().clone(), persistent=False)
        self.register_buffer("mix_weights", mixture.weights.clone(), persistent=False)
        self.register_buffer("mix_means", mixture.means.clone(), persistent=False)
        self.register_buffer("mix_eigvals", mixture.eigvals.clone(), persistent=False)
        self.register_buffer("mix_eigvecs", mixture.eigvecs.clone(), persistent=False)
        self.residual: nn.Module | None = None
        if hidden > 0:
            self.residual = nn.Sequential(
                nn.Linear(d + 2 * time_features + self.embed_dim, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, d),
            )
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)
        # Per-step gain of the residual (set_residual_gain); 1 until the sampler sets it.
        self.register_buffer("gain_timesteps", torch.zeros(1), persistent=False)
        self.register_buffer("gain_values", torch.ones(1), persistent=False)
        # What code written for UNet2DConditionModel reads.
        self.config = SimpleNamespace(
            in_channels=latent_shape[0],
            sample_size=latent_shape[1],
            time_cond_proj_dim=None,
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            prediction_type="epsilon" if path == "ddpm" else "flow_velocity",
        )

    @property
    def device(self) -> torch.device:
        return self.mix_means.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype if self.residual is not None else torch.float32

    def set_residual_gain(self, timesteps: torch.Tensor, gains: torch.Tensor) -> None:
        """Scale the residual at each schedule timestep (the nearest one for other t).

        The reference samplers set ``gain_k = σ_k² / (∂ mean_k / ∂ output)``, so the residual u moves
        step k's mean by σ_k² u and costs KL σ_k² ||u||² / 2: the parametrisation of a control
        (the optimal policy's mean shift is σ_k² ∇ log h). Without it a residual of the same size
        would shift the low-noise steps' means by far more than their σ, at enormous KL.
        """
        self.gain_timesteps = timesteps.detach().double().reshape(-1).to(self.mix_means.device)
        self.gain_values = gains.detach().double().reshape(-1).to(self.mix_means.device)

    def residual_gain(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) gain of the residual at timesteps t."""
        if self.gain_timesteps.numel() == 1 and float(self.gain_values[0]) == 1.0:
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        index = (t.double()[:, None] - self.gain_timesteps[None]).abs().argmin(1)
        return self.gain_values[index]

    def _coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, s_t) of x_t = a_t x_0 + s_t ε per sample, float64."""
        if self.path == "ddpm":
            ac = self.alphas_cumprod[t.long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)]
            return ac.sqrt(), (1 - ac).sqrt()
        sigma = (t.double() / NUM_TRAIN_TIMESTEPS).clamp(1e-6, 1.0)
        return 1 - sigma, sigma

    def exact(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The mixture's exact ε or velocity for flat x_t (B, d) at timesteps (B,), float64."""
        mix = self.mixture
        # The buffers follow .to(device); the mixture object reads them.
        mix.weights, mix.means = self.mix_weights, self.mix_means
        mix.eigvals, mix.eigvecs = self.mix_eigvals, self.mix_eigvecs
        a, s = self._coefficients(t)
        xd = x.double()
        x0 = mix.posterior_mean(xd, a, s)
        if self.path == "ddpm":
            return (xd - a[:, None] * x0) / s[:, None]
        return (xd - x0) / s[:, None]  # v = ε - x_0 = (x_t - x_0) / σ since a + s = 1

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features (B, 2F) of t / 1000."""
        u = (t.float() / NUM_TRAIN_TIMESTEPS)[:, None]
        freqs = math.pi * (2.0 ** torch.arange(self.time_features, device=u.device)).float()
        return torch.cat([torch.sin(freqs * u), torch.cos(freqs * u)], 1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        return_dict: bool = True,
        **_: Any,
    ) -> Any:
        """ε or v for latents (B, C, h, w) at ``timestep`` (0-d or (B,)), as a UNet is called."""
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(b) if t.ndim == 0 else t.reshape(b)
        flat = sample.reshape(b, -1)
        out = self.exact(flat, t).to(sample.dtype)
        if self.residual is not None:
            if encoder_hidden_states is None:
                cond = flat.new_zeros(b, self.embed_dim)
            else:
                cond = encoder_hidden_states.reshape(b, -1).to(flat.dtype)
            feats = torch.cat([flat, self.time_embedding(t).to(flat.dtype), cond], 1)
            gain = self.residual_gain(t).to(out.dtype)[:, None]
            out = out + gain * self.residual(feats).to(out.dtype)
        out = out.reshape(sample.shape)
        return _Output(sample=out) if return_dict else (out,)
