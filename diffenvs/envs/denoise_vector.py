"""Native batched vector env of ``DiffusionDenoise-v0``: N envs, one UNet forward per step.

``gym.make_vec("DiffusionDenoise-v0", num_envs=N)`` builds :class:`DiffusionDenoiseVectorEnv`
(``vectorization_mode="sync"`` still gives a ``SyncVectorEnv`` of single envs, for comparison).
Observations, rewards, terminations and infos have exactly the layout ``SyncVectorEnv`` produces
(infos as ``{key: array, "_key": mask}``), and with the same seeds the same values (up to float
rounding of batched vs single forwards), so code written for one runs on the other.

Autoreset (``autoreset_mode``, Gymnasium's ``AutoresetMode``):

* ``NEXT_STEP`` (default, Gymnasium's default): the step after an episode ends resets that env,
  ignoring its action, and returns the first observation of the new episode with reward 0.
* ``SAME_STEP``: the ending step already returns the new episode's first observation; the last
  observation and info are in ``info["final_obs"]`` / ``info["final_info"]``.
* ``DISABLED``: the caller resets finished envs with ``reset(options={"reset_mask": mask})``.

All envs share the step schedule, so with ``NEXT_STEP`` they end and restart in unison; slots may
still be at different steps (after a masked reset) and are batched with per-sample timesteps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from diffenvs.envs.denoise_core import DenoiseCore, as_numpy, coerce_latents
from diffenvs.envs.diffusion_denoise import denoise_spaces, to_numpy_details
from diffenvs.errors import check_seed
from diffenvs.sampler import BaseSampler

_RESET_OPTIONS = ("prompts", "latents", "reset_mask")


class DiffusionDenoiseVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~diffenvs.envs.diffusion_denoise.DiffusionDenoiseEnv` run as
    one batch. Takes the single env's keyword arguments plus ``num_envs`` and ``autoreset_mode``.

    ``reset(seed=s)`` seeds env i with ``s + i`` (as ``SyncVectorEnv`` does). Reset options:
    ``prompts`` (one str or None per env), ``latents`` (N, C, h, w), ``reset_mask`` (bool (N,)).
    ``set_policy_log_prob(array (N,))`` feeds the KL penalty when ``kl_coef > 0``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        action_bound: float = 6.0,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.core = DenoiseCore(num_envs, **kwargs)
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
        self._rngs: list[np.random.Generator] = [
            seeding.np_random(None)[0] for _ in range(self.num_envs)
        ]
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP autoreset pending
        self._policy_log_prob: np.ndarray | None = None
        self._all = np.arange(self.num_envs)

    # ----------------------------------------------------------------------------------------
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
    def prompts(self) -> list[str]:
        return list(self.core.prompts)

    def set_policy_log_prob(self, log_prob: Any) -> None:
        """The acting policy's log-prob of each env's next action, shape (num_envs,)."""
        value = np.asarray(log_prob, dtype=np.float64).reshape(-1)
        if value.shape != (self.num_envs,) or not np.isfinite(value).all():
            raise ValueError(
                f"Policy log-probs must be {self.num_envs} finite numbers, got {value}."
            )
        self._policy_log_prob = value

    def _reset_info(self, ids: np.ndarray) -> list[dict[str, Any]]:
        timesteps = self.core.timestep_of(ids)
        infos = [
            {
                "prompt": self.core.prompts[i],
                "step": 0,
                "timestep": self.core.info_timestep(timesteps[j]),
            }
            for j, i in enumerate(ids)
        ]
        self._add_next(ids, dict(zip(ids.tolist(), infos, strict=True)))
        return infos

    def _collect(self, per_env: dict[int, dict[str, Any]]) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for i in sorted(per_env):
            infos = self._add_info(infos, per_env[i], i)
        return infos

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        for s in seed if isinstance(seed, list | tuple) else [seed]:
            check_seed("seed", s)
        super().reset(seed=seed if isinstance(seed, int) else None)
        options = dict(options or {})
        unknown = sorted(set(options) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(f"Unknown reset options {unknown}; supported: {list(_RESET_OPTIONS)}.")
        mask = options.get("reset_mask")
        if mask is None:
            ids = self._all
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with at least one True."
                )
            ids = np.flatnonzero(mask)
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(
                    f"Got {len(seeds)} seeds for {self.num_envs} envs; pass one int or one seed per env."
                )
        prompts = options.get("prompts")
        if prompts is not None:
            prompts = [prompts] * self.num_envs if isinstance(prompts, str) else list(prompts)
            if len(prompts) != self.num_envs:
                raise ValueError(
                    f"options['prompts'] needs one prompt (or None) per env ({self.num_envs}), got {len(prompts)}."
                )
            prompts = [prompts[i] for i in ids]
        latents = options.get("latents")
        if latents is not None:
            shape = (self.num_envs, *self.core.latent_shape)
            latents = coerce_latents(latents, shape, "options['latents']")[torch.as_tensor(ids)]
        for i in ids:
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        self.core.begin(
            ids, [self._rngs[i] for i in ids], [seeds[i] for i in ids], prompts, latents
        )
        self.core.refresh(ids)
        self._needs_reset[ids] = False
        self._policy_log_prob = None
        infos = self._collect(dict(zip(ids.tolist(), self._reset_info(ids), strict=True)))
        return self.core.observation(self._all), infos

    def _policy_lp(self, ids: np.ndarray) -> torch.Tensor | None:
        if self.core.kl_coef == 0 or len(ids) == 0:
            return None
        if self._policy_log_prob is None:
            raise ValueError(
                "kl_coef > 0 needs the policy's log-prob of every action: call "
                "envs.set_policy_log_prob(log_probs) before each step (see the docs)."
            )
        return torch.as_tensor(self._policy_log_prob[ids])

    def _advance(
        self, ids: np.ndarray, actions: torch.Tensor, policy_lp: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, Any]]]:
        """Step slots ``ids`` and score those that finish: rewards (N,), terminated (N,), infos."""
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        per_env: dict[int, dict[str, Any]] = {}
        if len(ids) == 0:
            return rewards, terminated, per_env
        res = self.core.advance(ids, actions, policy_lp)
        # Without the base pass (latent mode, base_step 'auto'/'never', no KL) there is no base
        # mean or log-prob to report: those keys are left out.
        mean_np = None if res["mean"] is None else as_numpy(res["mean"])
        std_np = as_numpy(res["std"])
        log_prob = None if res["log_prob"] is None else as_numpy(res["log_prob"], torch.float64)
        kl = None if res["kl"] is None else as_numpy(res["kl"], torch.float64)
        for j, i in enumerate(ids):
            per_env[i] = {
                "prompt": self.core.prompts[i],
                "step": int(self.core.step_index[i]),
                "timestep": self.core.info_timestep(res["timestep"][j]),
            }
            if mean_np is not None:
                per_env[i]["mean"] = mean_np[j]
            per_env[i]["std"] = float(std_np[j])
            if log_prob is not None:
                per_env[i]["log_prob"] = float(log_prob[j])
            if kl is not None:
                per_env[i]["kl"] = float(kl[j])
                rewards[i] -= self.core.kl_coef * kl[j]
        terminated[ids] = res["terminal"]
        ending = np.flatnonzero(terminated)
        if len(ending):
            r, details, images = self.core.finish(ending)
            r_np = as_numpy(r, torch.float64)
            for j, i in enumerate(ending):
                per_env[i]["terminal_reward"] = float(r_np[j])
                per_env[i]["reward_details"] = to_numpy_details(details, j)
                per_env[i]["image"] = images[j]
                rewards[i] += r_np[j]
        return rewards, terminated, per_env

    def _add_next(self, ids: np.ndarray, per_env: dict[int, dict[str, Any]]) -> None:
        if len(ids):
            mean_np = None
            if self.core.base_pass:
                mean, std, _ = self.core.pending(ids)
                mean_np = as_numpy(mean)
            else:
                std = self.core.pending_std(ids)
            std_np = as_numpy(std)
            for j, i in enumerate(ids):
                if mean_np is not None:
                    per_env[i]["next_mean"] = mean_np[j]
                per_env[i]["next_std"] = float(std_np[j])

    def step(self, actions: Any):
        if (self.core.step_index < 0).any():
            raise RuntimeError("Call reset() before step().")
        resetting = self._needs_reset.copy()
        active = np.flatnonzero(~resetting)
        actions_t = self.core.coerce_actions(actions, self.num_envs, rows=active)
        done_now = self.core.step_index >= self.num_steps
        if self.autoreset_mode == AutoresetMode.DISABLED and (done_now & ~resetting).any():
            raise RuntimeError(
                f"Envs {np.flatnonzero(done_now).tolist()} finished; with autoreset DISABLED reset "
                "them with reset(options={'reset_mask': mask}) before stepping."
            )
        policy_lp = self._policy_lp(active)
        self._policy_log_prob = None
        rewards, terminated, per_env = self._advance(
            active, actions_t[torch.as_tensor(active)], policy_lp
        )
        ending = np.flatnonzero(terminated)

        restart = np.flatnonzero(resetting)
        final_obs: dict[str, np.ndarray] = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP and len(ending):
            final_obs = self.core.observation(ending)
            restart = np.union1d(restart, ending)
        if len(restart):
            self.core.begin(restart, [self._rngs[i] for i in restart], [None] * len(restart))
        continuing = np.setdiff1d(active, ending)
        self.core.refresh(np.union1d(continuing, restart))  # one batched forward for all of them
        self._add_next(continuing, per_env)
        # Same layout as SyncVectorEnv: a restarted env reports its reset info; with SAME_STEP the
        # finished episode's last observation and info go to final_obs / final_info.
        top = dict(per_env)
        if len(restart):
            top.update(zip(restart.tolist(), self._reset_info(restart), strict=True))
        infos: dict[str, Any] = {}
        ending_pos = {int(i): j for j, i in enumerate(ending)}
        for i in sorted(top):
            if final_obs and i in ending_pos:
                j = ending_pos[i]
                final = {
                    "final_obs": {k: v[j] for k, v in final_obs.items()},
                    "final_info": per_env[i],
                }
                infos = self._add_info(infos, final, i)
            infos = self._add_info(infos, top[i], i)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self.core.observation(self._all), rewards, terminated, truncated, infos

    def step_envs(self, env_ids: Any, actions: Any):
        """Step only ``env_ids`` (no autoreset), for frameworks that step subsets (Tianshou).

        Returns observations, rewards, terminations and truncations of those envs (in that order)
        and a list with one info dict per env.
        """
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        if (
            len(ids) == 0
            or len(np.unique(ids)) != len(ids)
            or ids.min() < 0
            or ids.max() >= self.num_envs
        ):
            raise ValueError(
                f"env_ids must be distinct ids in 0..{self.num_envs - 1}, got {ids.tolist()}."
            )
        k = self.core.step_index[ids]
        if ((k < 0) | (k >= self.num_steps)).any():
            raise RuntimeError(
                f"Envs {ids[(k < 0) | (k >= self.num_steps)].tolist()} are not mid-episode; reset them first."
            )
        actions_t = self.core.coerce_actions(actions, len(ids))
        policy_lp = self._policy_lp(ids)
        self._policy_log_prob = None
        self._needs_reset[ids] = False
        rewards, terminated, per_env = self._advance(ids, actions_t, policy_lp)
        continuing = ids[~terminated[ids]]
        self.core.refresh(continuing)
        self._add_next(continuing, per_env)
        truncated = np.zeros(len(ids), dtype=bool)
        return (
            self.core.observation(ids),
            rewards[ids],
            terminated[ids],
            truncated,
            [per_env[i] for i in ids],
        )

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One image per env: the decoded image once done, else the current x_0 prediction."""
        if self.render_mode is None:
            return None
        if (self.core.step_index < 0).any():
            raise RuntimeError("Call reset() before render().")
        return tuple(self.core.preview(self._all))
