"""Stable-Baselines3 adapter for ``DiffusionDenoise-v0``, and a runnable PPO/A2C script.

* :class:`DenoiseSB3VecEnv` turns the native batched vector env into an SB3 ``VecEnv`` (one model
  forward for all envs per step, SB3's same-step autoreset with ``terminal_observation``).
* :class:`LatentFeaturesExtractor` is a small CNN over the latent plus timestep and prompt
  features, for SB3's ``MultiInputPolicy`` on the env's ``Dict`` observations.
* :func:`denoise_policy_kwargs` wires it up so that the initial Gaussian policy in noise mode is
  (close to) the base sampler: mean ≈ 0, std = 1.

Example (noise mode; see ``examples/denoise_sb3_ppo.py``)::

    from stable_baselines3 import PPO
    from agents.adapters.sb3.denoise import make_sb3_vec_env, denoise_policy_kwargs

    venv = make_sb3_vec_env(num_envs=8, num_steps=10, reward="colourfulness")
    model = PPO("MultiInputPolicy", venv, n_steps=10, batch_size=40, gamma=1.0,
                policy_kwargs=denoise_policy_kwargs())
    model.learn(800)

The config of :func:`train` is :class:`agents.adapters.sb3.config.SB3DenoiseConfig`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from agents.adapters.nets import LatentEncoder
from agents.adapters.sb3.config import SB3DenoiseConfig
from agents.common.runs import run_dir
from agents.common.seeding import seed_everything
from agents.common.vector import unbatch_infos
from diffenvs.envs.denoise_vector import DiffusionDenoiseVectorEnv


class LatentFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features extractor around :class:`~agents.adapters.nets.LatentEncoder`: a small CNN over
    the latent x_t, sinusoidal timestep features and mean-pooled prompt embeddings."""

    def __init__(
        self, observation_space: gym.spaces.Dict, features_dim: int = 256, **kwargs: Any
    ) -> None:
        super().__init__(observation_space, features_dim)
        self.encoder = LatentEncoder.for_space(
            observation_space, features_dim=features_dim, **kwargs
        )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(observations)


def denoise_policy_kwargs(features_dim: int = 256, **extractor_kwargs: Any) -> dict[str, Any]:
    """``policy_kwargs`` for SB3 PPO/A2C/SAC on the denoising env with the latent CNN.

    PPO's Gaussian starts at std 1 (``log_std_init=0``) and a near-zero mean, i.e. at the base
    sampler's noise in noise mode.
    """
    return {
        "features_extractor_class": LatentFeaturesExtractor,
        "features_extractor_kwargs": {"features_dim": features_dim, **extractor_kwargs},
        "net_arch": {"pi": [], "vf": [128]},
    }


class DenoiseSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of :class:`~diffenvs.envs.denoise_vector.DiffusionDenoiseVectorEnv`.

    Uses same-step autoreset: when the episodes end, ``step_wait`` returns the next episodes' first
    observations and puts the last ones in ``info["terminal_observation"]``; each ending env's info
    is its final step info (``terminal_reward``, ``image``, ``reward_details``, ...).
    """

    def __init__(self, env: DiffusionDenoiseVectorEnv) -> None:
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "DenoiseSB3VecEnv needs the vector env built with autoreset_mode='SameStep' "
                "(make_sb3_vec_env does this)."
            )
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seeds = list(self._seeds)
        if all(s is None for s in seeds):
            obs, infos = self.env.reset()
        else:
            base = np.random.SeedSequence().generate_state(1)[0]
            obs, infos = self.env.reset(
                seed=[int(base + i) if s is None else int(s) for i, s in enumerate(seeds)]
            )
        self.reset_infos = unbatch_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async must be called before step_wait.")
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        per_env = unbatch_infos(infos, self.num_envs)
        dones = terminated | truncated
        for i in np.flatnonzero(dones):
            final = dict(per_env[i].get("final_info", {}))
            final["terminal_observation"] = per_env[i]["final_obs"]
            final["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self.reset_infos[i] = {
                k: v for k, v in per_env[i].items() if k not in ("final_obs", "final_info")
            }
            per_env[i] = final
        for i in np.flatnonzero(~dones):
            per_env[i]["TimeLimit.truncated"] = False
        return obs, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.env.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.env.render())


def make_sb3_vec_env(num_envs: int = 4, **env_kwargs: Any) -> DenoiseSB3VecEnv:
    """A batched ``DiffusionDenoise-v0`` as an SB3 ``VecEnv`` (kwargs as for ``gym.make``)."""
    env = DiffusionDenoiseVectorEnv(num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
    return DenoiseSB3VecEnv(env)


# --------------------------------------------------------------------------------------------
# A runnable PPO/A2C script (examples/denoise_sb3_ppo.py)


def denoise_env_kwargs(cfg: SB3DenoiseConfig) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "prompts": cfg.prompts,
        "reward": cfg.reward,
        "num_steps": cfg.num_steps,
        "guidance_scale": cfg.guidance_scale,
        "device": cfg.device,
        **cfg.env_kwargs,
    }


def evaluate(
    model: BaseAlgorithm, venv: DenoiseSB3VecEnv, episodes: int, seed: int
) -> dict[str, float]:
    """Mean/std terminal reward of ``episodes`` stochastic episodes from fixed seeds."""
    rewards: list[float] = []
    batch = venv.num_envs
    for start in range(0, episodes, batch):
        venv.seed(seed + start)
        obs = venv.reset()
        done = np.zeros(batch, dtype=bool)
        while not done.all():
            actions, _ = model.predict(obs, deterministic=False)
            obs, _, dones, infos = venv.step(actions)
            for i in np.flatnonzero(dones & ~done):
                rewards.append(float(infos[i]["terminal_reward"]))
            done |= dones
    r = np.asarray(rewards[:episodes])
    return {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "episodes": float(len(r))}


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without aliases (SB3 shares the features extractor between pi and vf, and
    safetensors refuses shared storage); load it back with ``load_state_dict(..., strict=False)``."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for key, value in state.items():
        ident = (
            value.untyped_storage().data_ptr() + value.storage_offset() * value.element_size(),
            tuple(value.shape),
        )
        if ident not in seen:
            seen.add(ident)
            out[key] = value
    return out


def train(cfg: SB3DenoiseConfig) -> dict[str, Any]:
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecMonitor

    from diffenvs.io import save_tensors, write_json

    seed_everything(cfg.seed)
    out = run_dir(cfg.output_dir, cfg.run_name, f"{cfg.algo}_{cfg.reward}_seed{cfg.seed}")
    venv = VecMonitor(make_sb3_vec_env(cfg.num_envs, **denoise_env_kwargs(cfg)))
    venv.seed(cfg.seed)
    common = {
        "learning_rate": cfg.learning_rate,
        "n_steps": cfg.rollout_episodes * cfg.num_steps,
        "gamma": 1.0,  # the reward comes at the end of a fixed-length episode
        "policy_kwargs": denoise_policy_kwargs(),
        "seed": cfg.seed,
        "device": cfg.device,
        "verbose": 0,
    }
    if cfg.algo == "ppo":
        model: BaseAlgorithm = PPO(
            "MultiInputPolicy",
            venv,
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            gae_lambda=0.95,
            **common,
        )
    elif cfg.algo == "a2c":
        model = A2C("MultiInputPolicy", venv, **common)
    else:
        raise ValueError(f"Unknown algo {cfg.algo!r}; use 'ppo' or 'a2c'.")
    if cfg.save:
        model.set_logger(
            configure(str(out), ["csv", *(["tensorboard"] if cfg.tensorboard else [])])
        )
    eval_env = make_sb3_vec_env(cfg.num_envs, **denoise_env_kwargs(cfg))
    before = evaluate(model, eval_env, cfg.eval_episodes, cfg.eval_seed)
    start = time.perf_counter()
    model.learn(total_timesteps=cfg.total_timesteps, progress_bar=cfg.progress)
    train_time = time.perf_counter() - start
    after = evaluate(model, eval_env, cfg.eval_episodes, cfg.eval_seed)
    stats = {
        "reward_before": before["reward_mean"],
        "reward_after": after["reward_mean"],
        "reward_std_after": after["reward_std"],
        "train_time_s": train_time,
    }
    if cfg.save:
        save_tensors(
            unique_tensors(model.policy.state_dict()),
            out / "policy.safetensors",
            metadata={"algo": cfg.algo, "config": json.dumps(asdict(cfg), default=repr)},
        )
        write_json(out / "eval.json", stats)
        write_json(out / "config.json", json.loads(json.dumps(asdict(cfg), default=repr)))
    return {"model": model, "eval": stats, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    import tyro

    result = train(tyro.cli(SB3DenoiseConfig))
    print(json.dumps({k: round(v, 4) for k, v in result["eval"].items()}, indent=2))
