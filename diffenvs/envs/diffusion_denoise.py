"""``DiffusionDenoise-v0``: the reverse diffusion process as an MDP (Kristiansen & Vågen 2023, §5.1; DDPO; DPOK)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from diffenvs.envs.denoise_core import DenoiseCore, as_numpy
from diffenvs.errors import check_seed
from diffenvs.sampler import BaseSampler

_RESET_OPTIONS = ("prompt", "latents")


class GaussianBox(spaces.Box):
    """A bounded Box whose ``sample()`` draws standard-normal values, clipped to the bounds.

    In noise mode that *is* the base sampler's noise. The bounds are finite only because SB3 needs
    finite action bounds; the environment accepts any finite action within ±1e4.
    """

    def sample(self, mask: None = None, probability: None = None) -> np.ndarray:
        if mask is not None or probability is not None:
            raise ValueError("GaussianBox.sample() takes no mask or probability.")
        x = self.np_random.standard_normal(self.shape)
        return np.clip(x, self.low, self.high).astype(self.dtype)


@batch_space.register(GaussianBox)
def _batch_gaussian_box(space: GaussianBox, n: int = 1) -> GaussianBox:
    repeats = (n,) + (1,) * space.low.ndim
    low, high = np.tile(space.low, repeats), np.tile(space.high, repeats)
    return GaussianBox(low=low, high=high, dtype=space.dtype, seed=deepcopy(space.np_random))


def denoise_spaces(core: DenoiseCore, action_bound: float) -> tuple[spaces.Dict, GaussianBox]:
    """(observation space, action space) of one env."""
    if not np.isfinite(action_bound) or action_bound <= 0:
        raise ValueError(f"action_bound must be a positive finite number, got {action_bound}.")
    t_max = float(core.scheduler.config.num_train_timesteps)
    obs = spaces.Dict(
        {
            "latent": spaces.Box(-np.inf, np.inf, core.latent_shape, np.float32),
            "timestep": spaces.Box(0.0, t_max, (1,), np.float32),
            "prompt_embeds": spaces.Box(-np.inf, np.inf, core.embed_shape, np.float32),
        }
    )
    bound = float(action_bound)
    return obs, GaussianBox(-bound, bound, core.latent_shape, np.float32)


def to_numpy_details(details: dict[str, torch.Tensor], i: int) -> dict[str, Any]:
    """Row ``i`` of batched reward details as numpy scalars/arrays (info-friendly)."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        v = value[i].detach().float().cpu().numpy() if value.ndim else value.detach().cpu().numpy()
        out[key] = v.astype(np.float32) if v.ndim else np.float32(v)
    return out


def _batched(x: Any) -> Any:
    return x[None] if isinstance(x, torch.Tensor) else np.asarray(x)[None]


class DiffusionDenoiseEnv(gym.Env):
    """Generate one image by denoising: each step is one sampler step of a text-to-image model.

    The episode starts from Gaussian noise x_T for a prompt drawn from the prompt set and ends at
    x_0 after ``num_steps`` scheduler steps, when the decoded image is scored (Kristiansen & Vågen 2023, §5.1).

    ## Action space

    ``Box(-action_bound, action_bound, (C, h, w), float32)`` with the latent's shape ((8, 16, 16)
    in the world, (4, 64, 64) for SD at 512 px); ``sample()`` draws standard-normal values. The
    bound (6 by default) is nominal, for agents that need finite bounds: any finite action within
    ±1e4 is accepted (docs/validation.md). Two modes (``action_mode``):

    * ``"noise"`` (default): the action is the step's standard-normal noise ε; the env runs the
      base model and moves to ``x_{t-1} = mean + std * ε``. ``action_space.sample()`` *is* the base
      sampler, so any continuous-control agent (SB3, Tianshou) can act.
    * ``"latent"``: the action is ``x_{t-1}`` itself, as a diffusion policy outputs it (DDPO).

    Actions must be finite float arrays of exactly that shape; anything else raises an error.

    ## Observation space

    ``Dict`` with ``"latent"`` (x_t, float32 (C, h, w)), ``"timestep"`` (the scheduler timestep t
    of x_t, float32 (1,), 0 once done) and ``"prompt_embeds"`` (the text-encoder conditioning c the
    UNet reads, float32 (L, D)). The prompt text is in ``info["prompt"]``.

    ## Rewards

    0 on every step but the last, where ``reward`` scores the decoded image and its prompt (any
    name of :mod:`diffenvs.rewards`, a ``Reward``, or ``fn(images, prompts) -> scores``), optionally
    standardised with ``reward_standardisation=(mean, std)`` (Kristiansen & Vågen 2023, eq. 5.2). With
    ``kl_coef = β > 0`` every step also gets ``-β · k3`` (Kristiansen & Vågen 2023, eq. 5.3), the k3 estimate of
    KL(policy || base) at the taken action: report the policy's log-prob of each action (in the
    action's own space) with ``env.unwrapped.set_policy_log_prob(lp)`` before ``step``.

    ## Termination and truncation

    Terminates after exactly ``num_steps`` steps (x_0 reached). Never truncates.

    ## Info

    reset: ``prompt``, ``step``, ``timestep``, ``next_mean``/``next_std`` (the base model's Gaussian
    for the first action, in latent space). step: ``prompt``, ``step`` (steps done), ``timestep``
    (t of the step taken), ``mean``/``std``/``log_prob`` (the base model's Gaussian of the taken step
    and the log-density of the resulting x_{t-1}, summed over latent dims), ``kl`` (with a KL
    penalty), then either ``next_mean``/``next_std`` or, at the end, ``image`` (uint8 H x W x 3),
    ``terminal_reward`` and ``reward_details``. Without the base pass (below) ``mean``,
    ``log_prob`` and ``next_mean`` are left out (``std``/``next_std`` depend on the schedule only).

    ## Arguments

    * ``model``: ``"world"`` (default), a pipeline folder or hub id, or a loaded pipeline: SD 1.x/2.x,
      SDXL, or the flow-matching SD3 and FLUX layouts (docs/flow.md).
    * ``prompts``: ``"world"``/``"world:heldout"`` (the world's prompt sampler), a list of prompts,
      a ``.txt``/``.json``/``.jsonl`` file, or ``fn(rng) -> str``.
    * ``num_steps`` (20), ``scheduler`` (UNet pipelines: ``"ddim"`` (default) or ``"ddpm"``; flow
      models: ``"flow"``), ``eta`` (DDIM noise, > 0; 1.0), ``guidance_scale`` (4.0; <= 1 disables
      classifier-free guidance; FLUX: the embedded guidance), ``negative_prompt``.
    * Flow models (SD3, FLUX): ``noise_level`` (0.7, or one value per step; 0 is the deterministic
      Euler/ODE step), ``sde_type`` (``"sde"``: Flow-GRPO; ``"cps"``: coefficients-preserving),
      ``max_sequence_length`` (the T5 prompt length; the pipeline's default).
    * ``image_size``: an int or (height, width) in pixels (default: the model's own size).
    * ``reward`` (``"colourfulness"``), ``reward_kwargs``, ``reward_standardisation``, ``kl_coef``.
    * ``action_mode``, ``action_bound`` (6.0), ``device``, ``dtype``, ``render_mode``
      (``"rgb_array"``).
    * ``base_step``: when the frozen base model runs in latent mode. ``"always"`` (default): every
      step (one guided UNet pass), so infos carry its Gaussian and log-prob. ``"auto"``: only when
      the env needs it (a KL penalty); a latent-mode step without one runs no UNet. ``"never"``:
      as ``"auto"`` but an error where the base model is needed. Noise mode always runs it.

    ## Seeding

    ``reset(seed=s)`` draws x_T with ``torch.Generator().manual_seed(s)``, exactly as
    ``StableDiffusionPipeline(..., generator=torch.Generator().manual_seed(s))`` does, and draws the
    prompt from ``np_random``. ``reset(options={"prompt": ..., "latents": ...})`` fixes either.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
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
        action_bound: float = 6.0,
        render_mode: str | None = None,
        base_step: str = "always",
        noise_level: Any = None,
        sde_type: str | None = None,
        image_size: Any = None,
        max_sequence_length: int | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.render_mode = render_mode
        self.core = DenoiseCore(
            1,
            model=model,
            prompts=prompts,
            num_steps=num_steps,
            scheduler=scheduler,
            eta=eta,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            reward=reward,
            reward_kwargs=reward_kwargs,
            reward_standardisation=reward_standardisation,
            kl_coef=kl_coef,
            action_mode=action_mode,
            device=device,
            dtype=dtype,
            base_step=base_step,
            noise_level=noise_level,
            sde_type=sde_type,
            image_size=image_size,
            max_sequence_length=max_sequence_length,
        )
        self.observation_space, self.action_space = denoise_spaces(self.core, action_bound)
        self.action_mode = action_mode
        self.num_steps = self.core.num_steps
        self._policy_log_prob: float | None = None
        self._ids = np.zeros(1, dtype=np.int64)

    @property
    def sampler(self) -> BaseSampler:
        """The base sampler, read-only (timesteps, step coefficients, σ_t, guidance): what a
        policy needs to reproduce the env's step (:class:`~diffenvs.sampler.BaseSampler`)."""
        return self.core.sampler

    @property
    def pipeline(self) -> Any:
        """The text-to-image pipeline the env samples with, read-only (its tokenizer, text encoder
        and VAE encode prompts and decode latents as the env does; ``diffenvs.differentiable``)."""
        return self.core.pipe

    @property
    def prompt(self) -> str:
        return self.core.prompts[0]

    @property
    def reward_fn(self):
        return self.core.reward

    def set_policy_log_prob(self, log_prob: float) -> None:
        """The acting policy's log-prob of the next action (needed when ``kl_coef > 0``)."""
        value = float(np.asarray(log_prob, dtype=np.float64).reshape(()))
        if not np.isfinite(value):
            raise ValueError(f"The policy log-prob must be finite, got {value}.")
        self._policy_log_prob = value

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation(self._ids).items()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        check_seed("seed", seed)
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(f"Unknown reset options {unknown}; supported: {list(_RESET_OPTIONS)}.")
        latents = options.get("latents")
        self.core.begin(
            self._ids,
            [self.np_random],
            [seed],
            prompts=[options.get("prompt")],
            latents=None if latents is None else _batched(latents),
        )
        self.core.refresh(self._ids)
        self._policy_log_prob = None
        info = {
            "prompt": self.prompt,
            "step": 0,
            "timestep": self.core.info_timestep(self.core.timestep_of(self._ids)[0]),
        }
        self._add_next(info)
        return self._obs(), info

    def _add_next(self, info: dict[str, Any]) -> None:
        # Without the base pass only σ_t (schedule-only) is known; the base mean is never computed.
        if self.core.base_pass:
            mean, std, _ = self.core.pending(self._ids)
            info["next_mean"] = as_numpy(mean[0])
        else:
            std = self.core.pending_std(self._ids)
        info["next_std"] = float(std[0])

    def step(self, action: Any):
        k = int(self.core.step_index[0])
        if k < 0:
            raise RuntimeError("Call reset() before step().")
        if k >= self.num_steps:
            raise RuntimeError(
                f"The episode ended after {self.num_steps} steps; call reset() to start a new one."
            )
        actions = self.core.coerce_actions(action, 0)
        policy_lp = None
        if self.core.kl_coef > 0:
            if self._policy_log_prob is None:
                raise ValueError(
                    "kl_coef > 0 needs the policy's log-prob of every action: call "
                    "env.unwrapped.set_policy_log_prob(log_prob) before each step (see the docs), "
                    "or make the env with kl_coef=0 and use info['log_prob'] in your agent."
                )
            policy_lp = torch.tensor([self._policy_log_prob], dtype=torch.float64)
            self._policy_log_prob = None
        res = self.core.advance(self._ids, actions, policy_lp)
        reward = 0.0
        info: dict[str, Any] = {
            "prompt": self.prompt,
            "step": k + 1,
            "timestep": self.core.info_timestep(res["timestep"][0]),
        }
        if res["mean"] is not None:
            info["mean"] = as_numpy(res["mean"][0])
        info["std"] = float(res["std"][0])
        if res["log_prob"] is not None:
            info["log_prob"] = float(res["log_prob"][0])
        if res["kl"] is not None:
            info["kl"] = float(res["kl"][0])
            reward -= self.core.kl_coef * info["kl"]
        terminated = bool(res["terminal"][0])
        if terminated:
            rewards, details, images = self.core.finish(self._ids)
            info["terminal_reward"] = float(rewards[0])
            info["reward_details"] = to_numpy_details(details, 0)
            info["image"] = images[0]
            reward += info["terminal_reward"]
        else:
            self.core.refresh(self._ids)
            self._add_next(info)
        return self._obs(), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        """The decoded image once done; before that, the base model's current x_0 prediction."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without render_mode; make the env with render_mode='rgb_array'."
            )
            return None
        if self.core.step_index[0] < 0:
            raise RuntimeError("Call reset() before render().")
        return self.core.preview(self._ids)[0]
