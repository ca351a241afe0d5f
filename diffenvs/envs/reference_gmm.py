"""``ReferenceGMM2D-v0`` / ``ReferenceGMM2DFlow-v0`` / ``ReferenceGMMND-v0``: denoising MDPs whose base model is an exact diffusion
model of a Gaussian mixture, so the KL-regularised optimum of the reward is known exactly.

Same spaces, step, info and KL interface as ``DiffusionDenoise-v0`` (these classes reuse its env
and vector env over a :class:`~diffenvs.envs.reference_core.ReferenceCore`); the latent is the
sample itself, shape (d, 1, 1). ``env.unwrapped.task`` holds the base mixture, the reward and
their optimum p*_β ∝ p_base exp(r/β) (:mod:`diffenvs.reference`); docs/envs/reference.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from diffenvs.envs.denoise_vector import DiffusionDenoiseVectorEnv
from diffenvs.envs.diffusion_denoise import DiffusionDenoiseEnv, denoise_spaces
from diffenvs.envs.reference_core import ReferenceCore
from diffenvs.reference.tasks import ReferenceTask


class ReferenceGMM2DEnv(DiffusionDenoiseEnv):
    """Denoise to a sample of a 2-D Gaussian mixture with its exact score; reward with a known optimum.

    ## Spaces, steps, info

    As ``DiffusionDenoise-v0``: action ``Box(-6, 6, (d, 1, 1))`` (noise mode: the step's ε;
    latent mode: x_{t-1}); observation ``{"latent": x_t (d, 1, 1), "timestep": (1,),
    "prompt_embeds": one-hot condition (1, n_conditions)}``; ``info`` with the base step's
    ``mean``/``std``/``log_prob``, ``next_mean``/``next_std``, ``kl`` (with ``kl_coef`` > 0) and, at
    the end, ``terminal_reward``, ``reward_details`` (``raw``, ``sample`` = x_0) and ``image`` (a
    32 x 32 picture of x_0 on the base density).

    ## Arguments

    * ``model``: the base mixture, ``"ring"`` (default; 8 components on a circle), ``"ring:K"``,
      ``"random[:K]"`` or a :class:`~diffenvs.reference.mixture.GaussianMixture`; ``dim`` (2).
    * ``reward``: ``"linear"`` (r = x_1, default), ``"linear:w1,..."``, ``"quadratic"``
      (r = -½||x - (1,1)||²), ``"quadratic:c1,...@scale"`` or a ``QuadraticReward``.
    * ``scheduler``: ``"ddim"`` (default, ``eta`` 1), ``"ddpm"`` or ``"flow"`` (rectified flow with
      Flow-GRPO's SDE step, ``noise_level`` 0.7); ``num_steps`` (20).
    * ``prompts``: the conditions (default ``["reference"]``), one-hot embedded.
    * ``kl_coef``, ``reward_standardisation``, ``action_mode``, ``base_step``, ``action_bound``,
      ``device``, ``dtype``, ``render_mode`` as in ``DiffusionDenoise-v0``; ``hidden`` (64), the
      width of the base denoiser's zero-initialised residual MLP that agents fine-tune.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}
    default_model: ClassVar[str] = "ring"
    default_dim: ClassVar[int] = 2
    default_scheduler: ClassVar[str] = "ddim"

    def __init__(
        self,
        model: Any = None,
        dim: int | None = None,
        *,
        action_bound: float = 6.0,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.render_mode = render_mode
        kwargs.setdefault("scheduler", self.default_scheduler)
        self.core = ReferenceCore(
            1,
            model=self.default_model if model is None else model,
            dim=self.default_dim if dim is None else dim,
            **kwargs,
        )
        self.observation_space, self.action_space = denoise_spaces(self.core, action_bound)
        self.action_mode = self.core.action_mode
        self.num_steps = self.core.num_steps
        self._policy_log_prob: float | None = None
        self._ids = np.zeros(1, dtype=np.int64)

    @property
    def task(self) -> ReferenceTask:
        """The base mixture, the reward and their exact optimum (:class:`ReferenceTask`)."""
        return self.core.task


class ReferenceGMM2DFlowEnv(ReferenceGMM2DEnv):
    """Denoise to a 2-D Gaussian-mixture sample with the exact velocity and Flow-GRPO's SDE step.

    As :class:`ReferenceGMM2DEnv` with ``scheduler="flow"`` (rectified flow, ``noise_level`` 0.7).
    """

    default_scheduler: ClassVar[str] = "flow"


class ReferenceGMMNDEnv(ReferenceGMM2DEnv):
    """Denoise to a sample of a d-D Gaussian mixture (default 8-D, 4 components); known optimum.

    As :class:`ReferenceGMM2DEnv` with ``model="random"`` and ``dim=8`` by default.
    """

    default_model: ClassVar[str] = "random"
    default_dim: ClassVar[int] = 8


class ReferenceGMM2DVectorEnv(DiffusionDenoiseVectorEnv):
    """``num_envs`` reference-task episodes as one batch (the native vector env of the reference ids).

    Takes :class:`ReferenceGMM2DEnv`'s keyword arguments plus ``num_envs`` and ``autoreset_mode``;
    everything else (seeding, reset options, autoreset, ``step_envs``) is ``DiffusionDenoiseVectorEnv``'s.
    """

    default_model: ClassVar[str] = "ring"
    default_dim: ClassVar[int] = 2
    default_scheduler: ClassVar[str] = "ddim"

    def __init__(
        self,
        num_envs: int = 1,
        *,
        model: Any = None,
        dim: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        action_bound: float = 6.0,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        kwargs.setdefault("scheduler", self.default_scheduler)
        self.core = ReferenceCore(
            num_envs,
            model=self.default_model if model is None else model,
            dim=self.default_dim if dim is None else dim,
            **kwargs,
        )
        if max_episode_steps is not None and max_episode_steps < self.core.num_steps:
            raise ValueError(
                f"max_episode_steps={max_episode_steps} would cut episodes of num_steps="
                f"{self.core.num_steps} short; episodes always last num_steps steps."
            )
        self.num_envs = self.core.num_envs
        self.num_steps = self.core.num_steps
        self.action_mode = self.core.action_mode
        self.render_mode = render_mode
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": 4,
            "autoreset_mode": self.autoreset_mode,
        }
        obs_space, act_space = denoise_spaces(self.core, action_bound)
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, self.num_envs)
        self.action_space = batch_space(act_space, self.num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._policy_log_prob: np.ndarray | None = None
        self._all = np.arange(self.num_envs)

    @property
    def task(self) -> ReferenceTask:
        """The base mixture, the reward and their exact optimum (:class:`ReferenceTask`)."""
        return self.core.task


class ReferenceGMMNDVectorEnv(ReferenceGMM2DVectorEnv):
    """The native vector env of ``ReferenceGMMND-v0`` (default 8-D ``"random"`` mixture)."""

    default_model: ClassVar[str] = "random"
    default_dim: ClassVar[int] = 8


class ReferenceGMM2DFlowVectorEnv(ReferenceGMM2DVectorEnv):
    """The native vector env of ``ReferenceGMM2DFlow-v0`` (rectified flow, Flow-GRPO SDE step)."""

    default_scheduler: ClassVar[str] = "flow"
