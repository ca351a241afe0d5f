"""Stable-Baselines3 on ``GrammarGrid-v0``: a thin adapter and a runnable script.

SB3 needs nothing special: ``GrammarGrid-v0`` is a plain Gymnasium env with a ``MultiDiscrete``
observation (SB3 one-hot encodes it per axis) and a ``Discrete`` action, so DQN, PPO and A2C run
on it as is. This module only adds the pieces every script repeats: building the env with a
``Monitor`` (episode returns and ``is_success``), sensible hyper-parameters for the grid, a greedy
evaluation with every grid agent's statistics, and a safetensors checkpoint of the policy weights
(SB3's own ``.zip`` holds pickled objects, which this project never loads from files). The config
is :class:`agents.adapters.sb3.config.SB3GrammarConfig`.

    python -m agents.adapters.sb3.grammar --algo dqn --model renderer --detector exact
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import tyro
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor

import diffenvs  # noqa: F401  (registers the environments)
from agents.adapters.sb3.config import SB3GrammarConfig
from agents.common.grid import episode_statistics, parse_target, run_episode
from agents.common.runs import run_dir
from agents.common.seeding import seed_everything
from diffenvs.io import save_tensors, write_json


def make_env(cfg: SB3GrammarConfig) -> gym.Env:
    """GrammarGrid-v0 with a Monitor, as SB3 expects."""
    kwargs: dict[str, Any] = {
        "grammar": cfg.grammar,
        "model": cfg.model,
        "reward": cfg.reward,
        "detector": cfg.detector,
        "observation": cfg.observation,
        **cfg.env_kwargs,
    }
    if cfg.target is not None:
        kwargs["target"] = parse_target(cfg.target)
    env = gym.make("GrammarGrid-v0", max_episode_steps=cfg.max_episode_steps, **kwargs)
    return Monitor(env, info_keywords=("is_success",))


def make_model(
    cfg: SB3GrammarConfig, env: gym.Env, tensorboard_log: str | None = None
) -> BaseAlgorithm:
    policy_kwargs = {"net_arch": list(cfg.net_arch)}
    common = {
        "learning_rate": cfg.learning_rate,
        "gamma": cfg.gamma,
        "seed": cfg.seed,
        "verbose": 0,
        "device": "cpu",
        "tensorboard_log": tensorboard_log,
        "policy_kwargs": policy_kwargs,
    }
    if cfg.algo == "dqn":
        return DQN(
            "MlpPolicy",
            env,
            buffer_size=50_000,
            learning_starts=1_000,
            batch_size=64,
            train_freq=4,
            target_update_interval=500,
            exploration_fraction=cfg.exploration_fraction,
            exploration_final_eps=cfg.exploration_final_eps,
            **common,
        )
    if cfg.algo == "ppo":
        return PPO("MlpPolicy", env, n_steps=1024, batch_size=128, ent_coef=0.01, **common)
    if cfg.algo == "a2c":
        return A2C("MlpPolicy", env, ent_coef=0.01, **common)
    raise ValueError(f"Unknown algo {cfg.algo!r}; use 'dqn', 'ppo' or 'a2c'.")


def evaluate(model: BaseAlgorithm, env: gym.Env, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic (greedy) episodes from fixed starts; every grid agent's statistics."""

    def act(obs: Any) -> int:
        return int(model.predict(obs, deterministic=True)[0])

    return episode_statistics([run_episode(env, act, seed + i) for i in range(episodes)])


def train(cfg: SB3GrammarConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    out = run_dir(cfg.output_dir, cfg.run_name, f"{cfg.algo}_{cfg.reward}_seed{cfg.seed}")
    env = make_env(cfg)
    model = make_model(cfg, env, str(out / "tb") if cfg.tensorboard and cfg.save else None)
    start = time.perf_counter()
    model.learn(total_timesteps=cfg.total_timesteps, progress_bar=cfg.progress)
    train_time = time.perf_counter() - start
    stats = evaluate(model, make_env(cfg), cfg.eval_episodes, cfg.eval_seed)
    stats["train_time_s"] = train_time
    if cfg.save:
        save_tensors(
            dict(model.policy.state_dict()),
            out / "policy.safetensors",
            metadata={"algo": cfg.algo, "config": json.dumps(asdict(cfg))},
        )
        write_json(out / "eval.json", stats)
        write_json(out / "config.json", asdict(cfg))
    return {"model": model, "eval": stats, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    result = train(tyro.cli(SB3GrammarConfig))
    print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
