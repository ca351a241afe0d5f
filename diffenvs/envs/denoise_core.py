"""The batched engine behind ``DiffusionDenoise-v0`` and its native vector env.

:class:`DenoiseCore` holds N trajectory slots of one text-to-image pipeline and advances any subset
of them with a single (classifier-free-guided) model forward: the single env is N = 1, the vector
env is N = num_envs. Slots may sit at different steps (per-sample timesteps), so autoreset and
stepping a subset of envs (Tianshou) stay batched.

What differs between pipeline families (SD 1.x/2.x, SDXL, and the flow-matching SD3 and FLUX
layouts: prompt encoding, schedule, model call, decoding) lives in
:mod:`diffenvs.envs.denoise_family` and :mod:`diffenvs.envs.denoise_flow_family`; the step
Gaussians in :mod:`diffenvs.logprob` and :mod:`diffenvs.flow_logprob`. The math is exactly the
pipeline's, which is what makes noise-mode (and, for flow models, ODE-mode) episodes reproduce the
diffusers pipelines' images.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffenvs.envs import validate
from diffenvs.envs.denoise_args import ACTION_MODES as ACTION_MODES
from diffenvs.envs.denoise_args import BASE_STEPS as BASE_STEPS
from diffenvs.envs.denoise_args import check_core_arguments
from diffenvs.envs.denoise_family import UNET_SCHEDULERS, pipeline_family
from diffenvs.envs.denoise_flow_family import make_family
from diffenvs.envs.denoise_prompts import make_prompt_source
from diffenvs.logprob import gaussian_log_prob, k3_kl, noise_log_prob
from diffenvs.models.cache import shared_pipeline
from diffenvs.rewards import Reward, Standardised, make_reward
from diffenvs.sampler import BaseSampler

SCHEDULERS = UNET_SCHEDULERS  # the UNet families' samplers; flow models use "flow"
_EMBED_CACHE_SIZE = 1024


def as_numpy(tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """A fresh numpy copy: never a view of the env's internal state, which changes every step."""
    return tensor.detach().to("cpu", dtype).numpy().copy()


def resolve_pipeline(
    model: Any, device: str | torch.device | None, dtype: torch.dtype | None
) -> Any:
    """A loaded pipeline from a name/path (from the process-wide model cache, so SyncVectorEnv
    copies, other envs and rewards share its weights) or as is."""
    if isinstance(model, str | Path):
        return shared_pipeline(model, device, dtype)
    pipeline_family(model)  # a clear error for anything but an SD/SDXL/SD3/FLUX pipeline
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def coerce_latents(
    value: Any, shape: tuple[int, ...], what: str, check_finite: bool = True
) -> torch.Tensor:
    """A float tensor of exactly ``shape`` with only finite values, or a clear error about ``what``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        kind = "f" if tensor.is_floating_point() else "other"
        dtype_name = str(tensor.dtype)
    else:
        try:
            array = np.asarray(value)
        except Exception as err:
            raise TypeError(
                f"{what} must be a float array of shape {shape}; got {type(value).__name__}."
            ) from err
        kind, dtype_name = array.dtype.kind, str(array.dtype)
        tensor = torch.from_numpy(array.astype(np.float32, copy=False)) if kind == "f" else None
    if kind != "f":
        raise TypeError(
            f"{what} must hold floating-point values (float16/32/64), got dtype {dtype_name}. "
            "Cast it, e.g. action.astype(np.float32)."
        )
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}.")
    if check_finite:
        require_finite(tensor, what)
    return tensor


def require_finite(tensor: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(tensor).all()):
        n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise ValueError(
            f"{what} contains {n_nan} NaN and {n_inf} infinite values; every value must be finite."
        )


class DenoiseCore:
    """N trajectory slots of the denoising MDP sharing one pipeline (see the env docstrings)."""

    def __init__(
        self,
        num_envs: int,
        *,
        model: Any = "world",
        prompts: Any = "world",
        num_steps: int = 20,
        scheduler: Any = None,
        eta: float = 1.0,
        guidance_scale: float = 4.0,
        negative_prompt: str | None = None,
        reward: Any = "colourfulness",
        reward_kwargs: dict[str, Any] | None = None,
        reward_standardisation: tuple[float, float] | None = None,
        kl_coef: float = 0.0,
        action_mode: str = "noise",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        base_step: str = "always",
        noise_level: Any = None,
        sde_type: str | None = None,
        image_size: Any = None,
        max_sequence_length: int | None = None,
    ) -> None:
        validate.check_denoise_arguments(num_envs, num_steps, eta, guidance_scale, kl_coef, device)
        check_core_arguments(
            num_envs, action_mode, num_steps, kl_coef, guidance_scale, negative_prompt, base_step
        )
        self.num_envs, self.action_mode = int(num_envs), action_mode
        self.base_step = base_step
        # Whether the frozen base model runs on every latent (one guided UNet pass per step). In
        # noise mode it is the step itself, and a KL penalty needs its log-prob of every action;
        # otherwise only base_step='always' asks for it (info["mean"], ["log_prob"], ...).
        self.base_pass = action_mode == "noise" or float(kl_coef) > 0 or base_step == "always"
        self.prompt_source = make_prompt_source(prompts)
        self.pipe = resolve_pipeline(model, device, dtype)
        # What differs between SD, SDXL, SD3 and FLUX pipelines (denoise_family.py).
        self.family = make_family(
            self.pipe,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            image_size=image_size,
            max_sequence_length=max_sequence_length,
        )
        self.device, self.dtype = self.family.device, self.family.dtype
        self.eta = float(eta)
        sched = self.family.schedule(
            scheduler, int(num_steps), self.eta, noise_level=noise_level, sde_type=sde_type
        )
        self.scheduler, self.scheduler_name = sched.scheduler, sched.name
        self.timesteps, self.prev_timesteps = sched.timesteps, sched.prev_timesteps
        self.num_steps = len(self.timesteps)
        self.coeffs = sched.coeffs
        self._t_list = sched.t_list
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.kl_coef = float(kl_coef)

        reward_kwargs = dict(reward_kwargs or {})
        if isinstance(reward, str):
            reward_kwargs.setdefault("device", self.device)
        self.reward: Reward = make_reward(reward, **reward_kwargs)
        if reward_standardisation is not None:
            mean, std = reward_standardisation
            self.reward = Standardised(self.reward, mean, std)

        self.latent_shape = self.family.latent_shape
        self.image_shape = self.family.image_shape
        self.do_cfg = self.family.do_cfg
        self._encode_lock = threading.Lock()
        self._embed_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        with torch.no_grad():
            probe = self._encode([""])
            self.embed_shape = tuple(probe.shape[1:])
            self.negative_embeds = self.family.negative()
            self.timestep_cond = self.family.timestep_cond()
        self._sampler = self.family.sampler(
            sched,
            eta=self.eta,
            negative=self.negative_embeds,
            cond=self.timestep_cond,
            embed_shape=self.embed_shape,
        )

        n = self.num_envs
        self.latents = torch.zeros((n, *self.latent_shape), device=self.device, dtype=self.dtype)
        self.embeds = torch.zeros((n, *self.embed_shape), device=self.device, dtype=self.dtype)
        self.step_index = np.full(n, -1, dtype=np.int64)  # -1: never reset
        self.prompts: list[str] = [""] * n
        self.generators: list[torch.Generator | None] = [None] * n
        self._mean = torch.zeros_like(self.latents)
        self._x0 = torch.zeros_like(self.latents)
        self._std = torch.zeros(n, device=self.device, dtype=self.dtype)
        # Slots whose _mean/_x0 do not yet describe their current latent (lazy base step).
        self._stale = np.ones(n, dtype=bool)

    @property
    def sampler(self) -> BaseSampler:
        """The base sampler's public, read-only description (:class:`diffenvs.sampler.BaseSampler`)."""
        return self._sampler

    # ----------------------------------------------------------------------------------------
    def _rows(self, ids: np.ndarray) -> slice | torch.Tensor:
        """Index of slots ``ids`` into the state tensors (a plain slice when it is all of them)."""
        if len(ids) == self.num_envs and (ids == np.arange(self.num_envs)).all():
            return slice(None)
        return torch.as_tensor(ids, device=self.device)

    def _write(self, name: str, rows: slice | torch.Tensor, value: torch.Tensor) -> None:
        # Replace whole state tensors instead of writing into them, so tensors handed out earlier
        # (observations, infos) never change under the caller.
        if isinstance(rows, slice):
            setattr(self, name, value.to(getattr(self, name).dtype))
        else:
            new = getattr(self, name).clone()
            new[rows] = value
            setattr(self, name, new)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        with self._encode_lock:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._embed_cache))
            if missing:
                emb = self.family.encode(missing)
                for p, e in zip(missing, emb, strict=True):
                    self._embed_cache[p] = e
            for p in prompts:
                self._embed_cache.move_to_end(p)
            out = torch.stack([self._embed_cache[p] for p in prompts])
            while len(self._embed_cache) > _EMBED_CACHE_SIZE:
                self._embed_cache.popitem(last=False)
            return out

    def info_timestep(self, t: Any) -> int | float:
        """A timestep as infos report it: an int for UNet schedulers, a float for flow models."""
        return float(t) if self.scheduler_name == "flow" else int(t)

    def timestep_of(self, ids: np.ndarray) -> np.ndarray:
        """The timestep ``t`` of each slot's current latent (0 once the episode is over)."""
        k = self.step_index[ids]
        return np.array(
            [self._t_list[i] if 0 <= i < self.num_steps else 0 for i in k], dtype=np.float32
        )

    def begin(
        self,
        ids: np.ndarray,
        rngs: list[np.random.Generator],
        seeds: list[int | None],
        prompts: list[str | None] | None = None,
        latents: Any = None,
    ) -> None:
        """Start new episodes in slots ``ids``: draw prompts (from ``rngs``) and x_T.

        x_T of a slot reset with seed s is ``torch.randn(latent_shape, generator=
        torch.Generator().manual_seed(s))``: the latent ``StableDiffusionPipeline`` starts from
        with ``generator=torch.Generator().manual_seed(s)``.
        """
        ids = np.asarray(ids, dtype=np.int64)
        seeds = validate.check_reset_seeds(list(seeds))
        given_x = None
        if latents is not None:
            given_x = coerce_latents(latents, (len(ids), *self.latent_shape), "options['latents']")
            validate.check_action_range(given_x, "options['latents']")
        chosen: list[str] = []
        for j in range(len(ids)):
            given = None if prompts is None else prompts[j]
            validate.check_reset_prompt(given)
            chosen.append(given if given is not None else self.prompt_source.sample(rngs[j]))
        for j, i in enumerate(ids):
            if seeds[j] is not None:
                self.generators[i] = torch.Generator().manual_seed(int(seeds[j]))
            elif self.generators[i] is None:
                self.generators[i] = torch.Generator().manual_seed(int(rngs[j].integers(2**63 - 1)))
        if given_x is not None:
            x = given_x
        else:
            # Drawn from a CPU generator (as diffusers does for a CPU generator), then moved.
            x = torch.stack(
                [torch.randn(self.latent_shape, generator=self.generators[i]) for i in ids]
            )
        x = x.to(self.device, self.dtype) * getattr(self.scheduler, "init_noise_sigma", 1.0)
        with torch.no_grad():
            emb = self._encode(chosen)
        rows = self._rows(ids)
        self._write("latents", rows, x)
        self._stale[ids] = True
        self._write("embeds", rows, emb)
        self.step_index[ids] = 0
        for j, i in enumerate(ids):
            self.prompts[i] = chosen[j]

    @torch.no_grad()
    def model_output(
        self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        """The guided model output for a batch, exactly as the family's pipeline computes it."""
        return self._sampler.forward_at(self._sampler.unet, latents, t, embeds)

    def refresh(self, ids: np.ndarray) -> None:
        """The latents of ``ids`` changed: their next-action Gaussians are due.

        With ``base_pass`` the base model runs now (one batched guided UNet forward); otherwise
        only σ_t (schedule-only) is set and the base step waits until :meth:`pending` reads it.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if bool((self.step_index[ids] < 0).any() or (self.step_index[ids] >= self.num_steps).any()):
            raise RuntimeError(f"Slots {ids.tolist()} are not mid-episode; reset them first.")
        if self.base_pass:
            self._base_step(ids)
        else:
            k = torch.as_tensor(self.step_index[ids], device=self.device)
            self._write("_std", self._rows(ids), self.coeffs.std[k])
            self._stale[ids] = True

    def _base_step(self, ids: np.ndarray) -> None:
        """Run the base model on the current latents of ``ids``: their next-action Gaussians."""
        rows = self._rows(ids)
        k = torch.as_tensor(self.step_index[ids], device=self.device)
        x = self.latents[rows]
        out = self.model_output(x, self.timesteps[k], self.embeds[rows])
        with torch.no_grad():
            dist = self._sampler.distribution(out, x, k)
        validate.check_base_output(self, ids, dist.mean, dist.pred_original_sample)
        self._write("_mean", rows, dist.mean)
        self._write("_std", rows, dist.std)
        self._write("_x0", rows, dist.pred_original_sample)
        self._stale[ids] = False

    def observation(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Batched observations of ``ids`` as fresh float32 numpy arrays."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self._rows(ids)
        return {
            "latent": as_numpy(self.latents[rows]),
            "timestep": self.timestep_of(ids)[:, None],
            "prompt_embeds": as_numpy(self.embeds[rows]),
        }

    def pending(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, std, predicted x_0) of the next action for ``ids`` (the base step runs now for
        slots whose Gaussian was left lazy by :meth:`refresh`)."""
        ids = np.asarray(ids, dtype=np.int64)
        mid = (self.step_index[ids] >= 0) & (self.step_index[ids] < self.num_steps)
        stale = ids[self._stale[ids] & mid]
        if len(stale):
            self._base_step(stale)
        rows = self._rows(ids)
        return self._mean[rows], self._std[rows], self._x0[rows]

    def pending_std(self, ids: np.ndarray) -> torch.Tensor:
        """σ_t of the next action for ``ids`` (schedule-only: never runs the base model)."""
        return self._std[self._rows(np.asarray(ids, dtype=np.int64))]

    def coerce_actions(self, actions: Any, n: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """Validated actions (n, C, h, w) on the model's device (n = 0: one unbatched action).

        Only ``rows`` (default: all) must be finite: the actions of autoresetting envs are ignored.
        """
        what = "Noise action" if self.action_mode == "noise" else "Latent action (x_{t-1})"
        shape = (n, *self.latent_shape) if n > 0 else self.latent_shape
        x = coerce_latents(actions, shape, what, check_finite=rows is None)
        x = x.reshape(-1, *self.latent_shape)
        if rows is not None and len(rows):
            require_finite(x[torch.as_tensor(rows)], what)
        validate.check_action_range(x, what, rows)
        return x.to(self.device, self.dtype)

    @torch.no_grad()
    def advance(
        self, ids: np.ndarray, actions: torch.Tensor, policy_log_prob: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Apply validated actions (b, C, H, W) to slots ``ids``; returns per-slot step results.

        Without ``base_pass`` (latent mode, no KL penalty, ``base_step`` not 'always') the base
        model does not run: ``mean`` and ``log_prob`` are None and the step costs no UNet pass.
        """
        ids = np.asarray(ids, dtype=np.int64)
        k = self.step_index[ids]
        if self.base_pass:
            mean, std, _ = self.pending(ids)
        else:
            mean, std = None, self.pending_std(ids)
        std4 = std.reshape(-1, 1, 1, 1)
        if self.action_mode == "noise":
            prev = torch.where(std4 > 0, mean + std4 * actions, mean)
            noise = actions
            log_prob = noise_log_prob(noise, std)  # exact for x_{t-1} = mean + std * noise
        else:
            prev = actions
            log_prob = None if mean is None else gaussian_log_prob(prev, mean, std)
        kl = None
        if policy_log_prob is not None:
            # Compare in the action's own space: in noise space the base policy is N(0, I).
            base_lp = (
                noise_log_prob(noise, torch.ones_like(std))
                if self.action_mode == "noise"
                else log_prob
            )
            kl = k3_kl(policy_log_prob.to(base_lp), base_lp)
        validate.check_step_latents(prev, actions, self.action_mode)
        self._write("latents", self._rows(ids), prev)
        self._stale[ids] = True
        self.step_index[ids] = k + 1
        return {
            "mean": mean,
            "std": std,
            "log_prob": log_prob,
            "kl": kl,
            "timestep": np.array([self._t_list[i] for i in k]),
            "terminal": self.step_index[ids] >= self.num_steps,
        }

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to float images (B, 3, H, W) in [0, 1], as the pipeline does."""
        return self.family.decode(latents)

    @torch.no_grad()
    def finish(self, ids: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
        """Decode and score finished slots: (rewards (b,), details, uint8 images (b, H, W, 3))."""
        ids = np.asarray(ids, dtype=np.int64)
        images = self.decode(self.latents[self._rows(ids)])
        validate.check_decoded(images)
        out = self.reward.evaluate(images.float(), [self.prompts[i] for i in ids])
        uint8 = (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return out.rewards.detach(), out.details, uint8

    @torch.no_grad()
    def preview(self, ids: np.ndarray) -> np.ndarray:
        """uint8 images of the base model's current x_0 prediction (final images when done)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self._rows(ids)
        done = torch.as_tensor(self.step_index[ids] >= self.num_steps, device=self.device)
        _, _, x0 = self.pending(ids)  # runs the base step here if it was left lazy
        z = torch.where(done.reshape(-1, 1, 1, 1), self.latents[rows], x0)
        images = self.decode(z)
        return (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
