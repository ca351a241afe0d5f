"""The batched engine of the reference envs: :class:`DenoiseCore`'s slots, with an exact mixture model.

:class:`ReferenceCore` keeps ``DenoiseCore``'s state, reset, stepping, KL penalty and validation
(so ``ReferenceGMM2D-v0`` behaves exactly like ``DiffusionDenoise-v0`` step for step) and swaps
what differs: the base model is the exact :class:`~diffenvs.reference.denoiser.MixtureDenoiser`
behind a DDIM/DDPM :class:`~diffenvs.sampler.BaseSampler` or a Flow-GRPO
:class:`~diffenvs.reference.sampler.ReferenceFlowSampler`; the "prompt embedding" is a one-hot over the
env's conditions; there is no VAE (x_0 *is* the sample) and the reward is a closed-form function
of x_0 (:mod:`diffenvs.reference.tasks`). The "image" of a finished episode is a small picture of
where x_0 landed on the base density (first two coordinates).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from diffenvs.envs import validate
from diffenvs.envs.denoise_args import check_core_arguments
from diffenvs.envs.denoise_core import DenoiseCore
from diffenvs.envs.denoise_prompts import ListPrompts, make_prompt_source
from diffenvs.errors import check_int, check_number
from diffenvs.reference.mixture import GaussianMixture
from diffenvs.reference.sampler import SAMPLERS, build_reference_sampler
from diffenvs.reference.tasks import ReferenceTask, make_mixture, make_quadratic_reward

DEFAULT_CONDITION = "reference"


def _conditions(prompts: Any) -> list[str]:
    """The env's finite condition set (one-hot embedded) from a list, 'prompt:X', a file or a ListPrompts."""
    if prompts is None:
        return [DEFAULT_CONDITION]
    source = make_prompt_source(prompts)
    if not isinstance(source, ListPrompts):
        raise ValueError(
            f"The reference envs embed each prompt as a one-hot over a fixed set, so prompts must be "
            f"a list, 'prompt:TEXT' or a prompt file, not {source!r}; e.g. prompts=['{DEFAULT_CONDITION}']."
        )
    return list(dict.fromkeys(source.prompts))


def marginal_2d(mixture: GaussianMixture) -> GaussianMixture:
    """The mixture's marginal over its first two coordinates (itself when 2-D; 1-D gets a zero axis)."""
    if mixture.dim >= 2:
        return GaussianMixture(mixture.weights, mixture.means[:, :2], mixture.covs[:, :2, :2])
    means = torch.cat([mixture.means, torch.zeros_like(mixture.means)], 1)
    covs = torch.stack([mixture.covs[:, 0, 0], torch.full_like(mixture.covs[:, 0, 0], 1e-2)], 1)
    return GaussianMixture(mixture.weights, means, covs)


class PointPainter:
    """Small uint8 pictures of points (first two coordinates) over the base density."""

    def __init__(self, mixture: GaussianMixture, size: int) -> None:
        m = marginal_2d(mixture)
        spread = float(m.eigvals.max().sqrt())
        self.lo = float(m.means.min()) - 3.5 * spread
        self.hi = float(m.means.max()) + 3.5 * spread
        self.size = int(size)
        u = torch.linspace(self.lo, self.hi, self.size, dtype=torch.float64)
        gy, gx = torch.meshgrid(u.flip(0), u, indexing="ij")
        dens = (
            m.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp().reshape(size, size)
        )
        shade = (dens / dens.max()).numpy()
        bg = np.stack([1 - 0.55 * shade, 1 - 0.35 * shade, 1 - 0.05 * shade], -1)
        self.background = (255 * bg).round().astype(np.uint8)

    def pixels(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of each point, clipped to the picture."""
        scale = (self.size - 1) / (self.hi - self.lo)
        col = np.clip(np.round((xy[:, 0] - self.lo) * scale), 0, self.size - 1).astype(int)
        row = np.clip(np.round((self.hi - xy[:, 1]) * scale), 0, self.size - 1).astype(int)
        return row, col

    def paint(self, points: list[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
        """One picture per row of the point arrays (B, ≥1); each list entry is (xy (B, 2), colour)."""
        b = len(points[0][0])
        out = np.repeat(self.background[None], b, 0)
        idx = np.arange(b)
        for xy, colour in points:
            row, col = self.pixels(xy)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r = np.clip(row + dr, 0, self.size - 1)
                    c = np.clip(col + dc, 0, self.size - 1)
                    out[idx, r, c] = colour
        return out


def _xy(x: torch.Tensor) -> np.ndarray:
    flat = x.detach().reshape(x.shape[0], -1).double().cpu().numpy()
    return flat[:, :2] if flat.shape[1] >= 2 else np.concatenate([flat, np.zeros_like(flat)], 1)


class ReferenceCore(DenoiseCore):
    """N trajectory slots of a reference task (see the module docstring and docs/envs/reference.md)."""

    def __init__(
        self,
        num_envs: int,
        *,
        model: Any = "ring",
        dim: int = 2,
        prompts: Any = None,
        num_steps: int = 20,
        scheduler: str = "ddim",
        eta: float = 1.0,
        noise_level: float = 0.7,
        guidance_scale: float = 1.0,
        negative_prompt: str | None = None,
        reward: Any = "linear",
        reward_kwargs: dict[str, Any] | None = None,
        reward_standardisation: tuple[float, float] | None = None,
        kl_coef: float = 0.0,
        action_mode: str = "noise",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        base_step: str = "always",
        hidden: int = 64,
        mixture_seed: int = 0,
    ) -> None:
        validate.check_denoise_arguments(num_envs, num_steps, eta, guidance_scale, kl_coef, device)
        check_core_arguments(
            num_envs, action_mode, num_steps, kl_coef, guidance_scale, negative_prompt, base_step
        )
        check_int("dim", dim, 1, 4096)
        check_int("hidden", hidden, 0, 1 << 16)
        check_number("noise_level", noise_level, 0.0, 10.0)
        if guidance_scale > 1 or negative_prompt is not None:
            raise ValueError(
                "The reference envs have no classifier-free guidance (the base model is the exact "
                f"mixture); pass guidance_scale=1 (got {guidance_scale}) and no negative_prompt."
            )
        if reward_kwargs:
            raise ValueError(
                f"The reference envs take no reward_kwargs (got {sorted(reward_kwargs)}); put the "
                "reward's numbers in its spec, e.g. reward='linear:1,0' or 'quadratic:1,1@4'."
            )
        if not isinstance(scheduler, str) or scheduler not in SAMPLERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; use one of {list(SAMPLERS)}.")
        if dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
        self.num_envs, self.action_mode, self.base_step = int(num_envs), action_mode, base_step
        self.base_pass = action_mode == "noise" or float(kl_coef) > 0 or base_step == "always"
        self.task = ReferenceTask(
            make_mixture(model, int(dim), int(mixture_seed)),
            make_quadratic_reward(reward, int(dim)),
        )
        self.conditions = _conditions(prompts)
        self.prompt_source = ListPrompts(self.conditions, origin="reference conditions")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or torch.float32
        self.latent_shape = (int(dim), 1, 1)
        self.embed_shape = (1, len(self.conditions))
        self.image_shape = (32, 32, 3)
        self._sampler, self.scheduler = build_reference_sampler(
            scheduler,
            self.task.base,
            num_steps=int(num_steps),
            latent_shape=self.latent_shape,
            embed_shape=self.embed_shape,
            eta=float(eta),
            noise_level=float(noise_level),
            hidden=int(hidden),
            device=self.device,
        )
        self._sampler.unet.requires_grad_(False)
        if not hasattr(self.scheduler, "init_noise_sigma"):
            self.scheduler.init_noise_sigma = 1.0
        self.scheduler_name, self.eta = scheduler, float(eta)
        self.noise_level = float(noise_level)
        self.timesteps = self._sampler.timesteps.to(self.device)
        self.num_steps = self._sampler.num_steps
        self.prev_timesteps = self._sampler.prev_timesteps
        self.coeffs = (
            self._sampler.coefficients
            if scheduler != "flow"
            else SimpleNamespace(std=self._sampler.sigma.to(self.device))
        )
        self._t_list = [float(t) if scheduler == "flow" else int(t) for t in self.timesteps]
        self.guidance_scale, self.negative_prompt = 1.0, None
        self.do_cfg, self.negative_embeds, self.timestep_cond = False, None, None
        self.kl_coef = float(kl_coef)
        self.reward = self.task.reward
        self.reward_standardisation = reward_standardisation
        self._encode_lock = threading.Lock()
        self._embed_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._painter = PointPainter(self.task.base, self.image_shape[0])
        self._preview_painter = PointPainter(self.task.base, 96)

        n = self.num_envs
        self.latents = torch.zeros((n, *self.latent_shape), device=self.device, dtype=self.dtype)
        self.embeds = torch.zeros((n, *self.embed_shape), device=self.device, dtype=self.dtype)
        self.step_index = np.full(n, -1, dtype=np.int64)
        self.prompts: list[str] = [""] * n
        self.generators: list[torch.Generator | None] = [None] * n
        self._mean = torch.zeros_like(self.latents)
        self._x0 = torch.zeros_like(self.latents)
        self._std = torch.zeros(n, device=self.device, dtype=self.dtype)
        self._stale = np.ones(n, dtype=bool)

    # ------------------------------------------------------------------------------------------
    def info_timestep(self, t: Any) -> int | float:
        """A timestep as infos report it: an int for DDIM/DDPM, a float (1000 σ) for the flow."""
        return float(t) if self.scheduler_name == "flow" else int(t)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        """One-hot embeddings (B, 1, n_conditions) of the prompts."""
        unknown = sorted({p for p in prompts if p not in self.conditions})
        if unknown:
            raise ValueError(
                f"Prompts {unknown} are not conditions of this env {self.conditions}; make the env "
                "with prompts=[...] naming every condition it should accept."
            )
        index = torch.tensor([self.conditions.index(p) for p in prompts])
        onehot = torch.nn.functional.one_hot(index, len(self.conditions))
        return onehot.to(device=self.device, dtype=self.dtype)[:, None, :]

    @torch.no_grad()
    def model_output(
        self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        """The exact base model's ε or velocity at timesteps ``t`` (B,)."""
        out = self._sampler.unet(latents, t, encoder_hidden_states=embeds, return_dict=False)[0]
        return out.to(latents.dtype)

    def _base_step(self, ids: np.ndarray) -> None:
        rows = self._rows(ids)
        k = torch.as_tensor(self.step_index[ids], device=self.device)
        x = self.latents[rows]
        with torch.no_grad():
            out = self._sampler.model_output(self._sampler.unet, x, k, self.embeds[rows])
            dist = self._sampler.distribution(out.to(x.dtype), x, k)
        validate.check_base_output(self, ids, dist.mean, dist.pred_original_sample)
        self._write("_mean", rows, dist.mean)
        self._write("_std", rows, dist.std)
        self._write("_x0", rows, dist.pred_original_sample)
        self._stale[ids] = False

    def rewards_of(self, x0: torch.Tensor) -> torch.Tensor:
        """The task reward (float64, (B,)) of final latents (B, C, h, w), before standardisation."""
        return self.task.reward(x0.reshape(x0.shape[0], -1).double())

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pictures (B, 3, H, W) in [0, 1] of where the latents lie on the base density."""
        images = self._painter.paint([(_xy(latents), (200, 30, 30))])
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    @torch.no_grad()
    def finish(self, ids: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
        """Score finished slots: (rewards (b,), details ``raw`` and ``sample`` (x_0 flat), pictures)."""
        ids = np.asarray(ids, dtype=np.int64)
        x0 = self.latents[self._rows(ids)]
        raw = self.rewards_of(x0)
        rewards = raw
        if self.reward_standardisation is not None:
            mean, std = self.reward_standardisation
            rewards = (raw - float(mean)) / float(std)
        images = self._painter.paint([(_xy(x0), (200, 30, 30))])
        details = {"raw": raw, "sample": x0.reshape(len(ids), -1).double()}
        return rewards, details, images

    @torch.no_grad()
    def preview(self, ids: np.ndarray) -> np.ndarray:
        """Pictures of x_t (blue) and the base model's predicted x_0 (red; the sample once done)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self._rows(ids)
        done = torch.as_tensor(self.step_index[ids] >= self.num_steps, device=self.device)
        _, _, x0 = self.pending(ids)
        x0 = torch.where(done.reshape(-1, 1, 1, 1), self.latents[rows], x0)
        points = [(_xy(self.latents[rows]), (40, 60, 220)), (_xy(x0), (200, 30, 30))]
        return self._preview_painter.paint(points)
