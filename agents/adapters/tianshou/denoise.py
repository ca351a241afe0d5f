"""Tianshou 2 adapter for ``DiffusionDenoise-v0``, and a runnable PPO script.

* :class:`DenoiseTianshouVectorEnv` presents the native batched vector env as a Tianshou
  ``BaseVectorEnv``: ``reset(env_id)`` / ``step(action, id)`` on any subset of envs, one model
  forward per call, observations as a ``Batch`` of stacked arrays.
* :class:`DenoiseActor` / :class:`DenoiseCritic` are a Gaussian actor and a value network over the
  env's dict observations (the shared :class:`~agents.adapters.nets.LatentEncoder`); the actor starts
  at mean 0 and std 1, the base sampler in noise mode.
* :func:`make_ppo` builds Tianshou's PPO on them.

See ``examples/denoise_tianshou_ppo.py``; the config of :func:`train` is
:class:`agents.adapters.tianshou.config.TianshouDenoiseConfig`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from tianshou.data import Batch
from tianshou.env import BaseVectorEnv
from tianshou.utils.net.common import AbstractContinuousActorProbabilistic, ModuleWithVectorOutput
from torch import nn
from torch.distributions import Independent, Normal

from agents.adapters.nets import LatentEncoder, obs_to_tensors
from agents.adapters.tianshou.config import TianshouDenoiseConfig
from agents.common.runs import run_dir
from agents.common.seeding import seed_everything
from agents.common.vector import unbatch_infos
from diffenvs.envs.denoise_vector import DiffusionDenoiseVectorEnv

#: Info keys kept per step: small scalars (the latent-sized means and the image stay out of the
#: replay buffer; read them from the native env if needed).
DEFAULT_INFO_KEYS = ("prompt", "step", "timestep", "std", "log_prob", "kl", "terminal_reward")


class DenoiseTianshouVectorEnv(BaseVectorEnv):
    """A :class:`DiffusionDenoiseVectorEnv` (autoreset disabled) as a Tianshou vector env.

    Tianshou resets finished envs itself with ``reset(env_id=...)``; every call runs one batched
    forward for the envs it touches. ``seed(s)`` seeds env i with ``s + i`` at the next reset.
    """

    def __init__(
        self, env: DiffusionDenoiseVectorEnv, info_keys: tuple[str, ...] = DEFAULT_INFO_KEYS
    ) -> None:
        if env.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError(
                "DenoiseTianshouVectorEnv needs the vector env built with autoreset_mode='Disabled' "
                "(make_tianshou_vector_env does this): Tianshou resets finished envs itself."
            )
        # BaseVectorEnv.__init__ builds one worker per env; the native env needs none.
        self.env = env
        self.info_keys = tuple(info_keys)
        self.env_num = env.num_envs
        self.wait_num = env.num_envs
        self.timeout = None
        self.is_async = False
        self.waiting_conn: list[Any] = []
        self.waiting_id: list[int] = []
        self.ready_id = list(range(self.env_num))
        self.is_closed = False
        self._next_seeds: list[int | None] | None = None

    def __len__(self) -> int:
        return self.env_num

    def get_env_attr(self, key: str, id: Any = None) -> list[Any]:
        ids = self._wrap_id(id)
        single = {
            "action_space": self.env.single_action_space,
            "observation_space": self.env.single_observation_space,
        }
        value = single[key] if key in single else getattr(self.env, key)
        return [value for _ in ids]

    def set_env_attr(self, key: str, value: Any, id: Any = None) -> None:
        setattr(self.env, key, value)

    def _infos(self, infos: list[dict[str, Any]], ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids), dtype=object)
        for j, (info, i) in enumerate(zip(infos, ids, strict=True)):
            out[j] = {k: info[k] for k in self.info_keys if k in info} | {"env_id": int(i)}
        return out

    def reset(self, env_id: Any = None, **kwargs: Any) -> tuple[Batch, np.ndarray]:
        self._assert_is_not_closed()
        ids = np.asarray(self._wrap_id(env_id), dtype=np.int64)
        mask = np.zeros(self.env_num, dtype=bool)
        mask[ids] = True
        seeds = self._next_seeds
        self._next_seeds = None
        if seeds is not None and any(s is not None for s in seeds):
            fresh = np.random.SeedSequence().generate_state(self.env_num)
            seed: list[int] | None = [
                int(fresh[i]) if s is None else int(s) for i, s in enumerate(seeds)
            ]
        else:
            seed = None
        options = dict(kwargs.get("options") or {})
        options["reset_mask"] = mask
        obs, infos = self.env.reset(seed=seed, options=options)
        per_env = unbatch_infos(infos, self.env_num)
        return Batch({k: v[ids] for k, v in obs.items()}), self._infos(
            [per_env[i] for i in ids], ids
        )

    def step(self, action: Any, id: Any = None):
        self._assert_is_not_closed()
        if action is None:
            raise ValueError("action must not be None: this vector env is synchronous.")
        ids = np.asarray(self._wrap_id(id), dtype=np.int64)
        obs, rewards, terminated, truncated, infos = self.env.step_envs(ids, action)
        return Batch(obs), rewards, terminated, truncated, self._infos(infos, ids)

    def seed(self, seed: int | list[int] | None = None) -> list[list[int] | None]:
        if seed is None:
            seeds: list[int | None] = [None] * self.env_num
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.env_num)]
        else:
            seeds = list(seed)
        self._next_seeds = seeds
        return [[s] if s is not None else None for s in seeds]

    def render(self, **kwargs: Any) -> list[Any]:
        frames = self.env.render()
        return list(frames) if frames is not None else [None] * self.env_num

    def close(self) -> None:
        self._assert_is_not_closed()
        self.env.close()
        self.is_closed = True


def make_tianshou_vector_env(num_envs: int = 4, **env_kwargs: Any) -> DenoiseTianshouVectorEnv:
    """A batched ``DiffusionDenoise-v0`` as a Tianshou vector env (kwargs as for ``gym.make``)."""
    env = DiffusionDenoiseVectorEnv(num_envs, autoreset_mode=AutoresetMode.DISABLED, **env_kwargs)
    return DenoiseTianshouVectorEnv(env)


class _Features(ModuleWithVectorOutput):
    def __init__(self, encoder: LatentEncoder) -> None:
        super().__init__(encoder.features_dim)
        self.encoder = encoder

    def forward(self, obs: Any, state: Any = None) -> tuple[torch.Tensor, Any]:
        device = next(self.parameters()).device
        return self.encoder(obs_to_tensors(obs, device)), state


class DenoiseActor(AbstractContinuousActorProbabilistic):
    """Gaussian policy over actions shaped like the latent: ``((mu, sigma), state)``.

    The mean head starts at zero and the state-independent log-std at 0, so the initial policy in
    noise mode is the base sampler.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_shape: tuple[int, ...],
        features_dim: int = 256,
    ) -> None:
        super().__init__(int(math.prod(action_shape)))
        self.action_shape = tuple(action_shape)
        self.preprocess = _Features(
            LatentEncoder.for_space(observation_space, features_dim=features_dim)
        )
        self.mu = nn.Linear(features_dim, self.output_dim)
        nn.init.zeros_(self.mu.weight)
        nn.init.zeros_(self.mu.bias)
        self.log_std = nn.Parameter(torch.zeros(self.action_shape))

    def get_preprocess_net(self) -> ModuleWithVectorOutput:
        return self.preprocess

    def forward(self, obs: Any, state: Any = None, info: Any = None):
        features, state = self.preprocess(obs, state)
        mu = self.mu(features).view(-1, *self.action_shape)
        return (mu, self.log_std.exp().expand_as(mu)), state


class DenoiseCritic(nn.Module):
    """State-value network V(s) (B, 1) over the env's dict observations."""

    def __init__(self, observation_space: gym.spaces.Dict, features_dim: int = 256) -> None:
        super().__init__()
        self.preprocess = _Features(
            LatentEncoder.for_space(observation_space, features_dim=features_dim)
        )
        self.value = nn.Sequential(nn.Linear(features_dim, 128), nn.Tanh(), nn.Linear(128, 1))

    def forward(self, obs: Any, act: Any = None, info: Any = None) -> torch.Tensor:
        features, _ = self.preprocess(obs)
        return self.value(features)


def gaussian_dist(loc_scale: tuple[torch.Tensor, torch.Tensor]) -> Independent:
    """A diagonal Gaussian over whole latents (one log-prob per sample)."""
    loc, scale = loc_scale
    return Independent(Normal(loc, scale), loc.ndim - 1)


def make_ppo(
    env: DenoiseTianshouVectorEnv, *, lr: float = 1e-5, features_dim: int = 256, **ppo_kwargs: Any
):
    """Tianshou PPO with :class:`DenoiseActor` / :class:`DenoiseCritic` (gamma 1: terminal reward)."""
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory

    obs_space = env.env.single_observation_space
    act_space = env.env.single_action_space
    actor = DenoiseActor(obs_space, act_space.shape, features_dim)
    critic = DenoiseCritic(obs_space, features_dim)
    policy = ProbabilisticActorPolicy(
        actor=actor,
        dist_fn=gaussian_dist,
        action_space=act_space,
        observation_space=obs_space,
        # Actions are noise (or latents) already: no rescaling to the nominal Box bounds and no
        # bounding ("clip" would clip every sample to [-1, 1], so the initial policy would not be
        # the base sampler and the env would not get the actions whose log-probabilities PPO uses).
        action_scaling=False,
        action_bound_method=None,
    )
    ppo_kwargs = {"gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.0, **ppo_kwargs}
    return PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=lr), **ppo_kwargs)


# --------------------------------------------------------------------------------------------
# A runnable PPO script (examples/denoise_tianshou_ppo.py)


def evaluate(
    algorithm: Any, env: DenoiseTianshouVectorEnv, episodes: int, seed: int
) -> dict[str, Any]:
    """Terminal rewards of ``episodes`` stochastic episodes from fixed seeds.

    The env seeds fix each episode's initial latent and the policy's Gaussian draws come from a
    torch generator seeded with ``seed`` (inside ``torch.random.fork_rng``, so the caller's random
    stream is untouched): two calls with the same seed draw the same standard-normal noise, and a
    before/after comparison is paired episode by episode.
    """
    from tianshou.data import Collector, VectorReplayBuffer

    env.seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Returns are summed as steps arrive, so a small ring buffer will do (Tianshou's default
        # holds 10,000 steps per env: gigabytes of latents and prompt embeddings).
        buffer = VectorReplayBuffer(256 * env.env_num, env.env_num)
        collector = Collector(algorithm, env, buffer)
        collector.reset()
        stats = collector.collect(n_episode=episodes, reset_before_collect=False)
    returns = np.asarray(stats.returns, dtype=np.float64)
    return {
        "reward_mean": float(returns.mean()),
        "reward_std": float(returns.std()),
        "rewards": returns.tolist(),
    }


def paired_stats(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Before/after statistics of two :func:`evaluate` results with the same seed."""
    b, a = np.asarray(before["rewards"]), np.asarray(after["rewards"])
    diff = a - b
    return {
        "reward_before": before["reward_mean"],
        "reward_std_before": before["reward_std"],
        "reward_after": after["reward_mean"],
        "reward_std_after": after["reward_std"],
        "paired_diff_mean": float(diff.mean()),
        "paired_diff_sem": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0,
        "improved_fraction": float((diff > 0).mean()),
    }


def train(cfg: TianshouDenoiseConfig) -> dict[str, Any]:
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.trainer import OnPolicyTrainerParams

    from diffenvs.io import save_tensors, write_json

    # Tianshou logs a warning per step for multi-dimensional action stds; they are expected here.
    logging.getLogger("tianshou.data.stats").setLevel(logging.ERROR)
    seed_everything(cfg.seed)
    env_kwargs = {
        "model": cfg.model,
        "prompts": cfg.prompts,
        "reward": cfg.reward,
        "num_steps": cfg.num_steps,
        "guidance_scale": cfg.guidance_scale,
        "device": cfg.device,
        **cfg.env_kwargs,
    }
    train_envs = make_tianshou_vector_env(cfg.num_envs, **env_kwargs)
    eval_envs = make_tianshou_vector_env(cfg.num_envs, **env_kwargs)
    algorithm = make_ppo(train_envs, lr=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm).to(
        cfg.device
    )
    before = evaluate(algorithm, eval_envs, cfg.eval_episodes, cfg.eval_seed)
    train_envs.seed(cfg.seed)
    collector = Collector(
        algorithm, train_envs, VectorReplayBuffer(cfg.collection_step_num_env_steps, cfg.num_envs)
    )
    collector.reset()
    start = time.perf_counter()
    algorithm.run_training(
        OnPolicyTrainerParams(
            training_collector=collector,
            max_epochs=cfg.epochs,
            epoch_num_steps=cfg.epoch_num_steps,
            collection_step_num_env_steps=cfg.collection_step_num_env_steps,
            update_step_num_repetitions=cfg.update_step_num_repetitions,
            batch_size=cfg.batch_size,
            test_in_training=False,
            show_progress=cfg.progress,
            verbose=False,
        )
    )
    train_time = time.perf_counter() - start
    after = evaluate(algorithm, eval_envs, cfg.eval_episodes, cfg.eval_seed)
    stats = paired_stats(before, after) | {"train_time_s": train_time}
    out = run_dir(cfg.output_dir, cfg.run_name, f"ppo_{cfg.reward}_seed{cfg.seed}")
    if cfg.save:
        save_tensors(
            {f"policy.{k}": v for k, v in algorithm.policy.state_dict().items()}
            | {f"critic.{k}": v for k, v in algorithm.critic.state_dict().items()},
            out / "ppo.safetensors",
            metadata={"config": json.dumps(asdict(cfg), default=repr)},
        )
        write_json(out / "eval.json", stats)
        write_json(out / "config.json", json.loads(json.dumps(asdict(cfg), default=repr)))
    return {"algorithm": algorithm, "eval": stats, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    import tyro

    result = train(tyro.cli(TianshouDenoiseConfig))
    print(json.dumps({k: round(v, 4) for k, v in result["eval"].items()}, indent=2))
