"""Stable-Baselines3 on ``PromptAppend-v0``: PPO, DQN and sb3-contrib's MaskablePPO.

``PromptAppend-v0`` is a plain Gymnasium env with a flat ``Box`` observation (or a ``Dict`` one,
for ``MultiInputPolicy``) and a ``Discrete`` action, so SB3 runs on it as is. What this adapter adds
(the config is :class:`agents.adapters.sb3.config.SB3PromptConfig`):

* **Masks.** MaskablePPO reads ``env.action_masks()`` through the wrappers and never picks a
  repeated word. PPO and DQN cannot mask, so their env is made with ``masked_action="redirect"``
  (a masked choice becomes the next allowed word, reported in ``info["redirected_from"]``).
* **Budget.** ``budget`` reward evaluations = ``budget × n_appends`` env steps with the terminal
  reward, so the run is comparable with SQL, REINFORCE and random search.
* **Report.** Greedy decoding of the trained policy, scored by
  :func:`agents.common.prompt_env.final_report`, and a safetensors checkpoint of the policy (SB3's
  ``.zip`` holds pickled objects, which this project never loads).

    python -m agents.adapters.sb3.prompt --algo maskable_ppo --budget 48
"""

from __future__ import annotations

import json
import time
from typing import Any

import gymnasium as gym
import numpy as np
import tyro
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor

from agents.adapters.sb3.config import SB3PromptConfig
from agents.common.prompt_env import decode, final_report, make_env, task_indices
from agents.common.runs import config_json, run_dir
from agents.common.seeding import seed_everything
from diffenvs.io import save_tensors, write_json


def make_sb3_env(cfg: SB3PromptConfig) -> gym.Env:
    """PromptAppend-v0 in a Monitor; masked actions redirected unless the algorithm masks."""
    redirect = "raise" if cfg.algo == "maskable_ppo" else "redirect"
    return Monitor(make_env(cfg.env, masked_action=redirect))


def make_model(cfg: SB3PromptConfig, env: gym.Env) -> BaseAlgorithm:
    policy = (
        "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    )
    common: dict[str, Any] = {
        "learning_rate": cfg.learning_rate,
        "gamma": 1.0,
        "seed": cfg.seed,
        "verbose": 0,
        "device": "cpu",
        "policy_kwargs": {"net_arch": list(cfg.net_arch)},
    }
    ppo_kwargs = {
        "n_steps": cfg.n_steps,
        "batch_size": cfg.batch_size,
        "n_epochs": cfg.n_epochs,
        "ent_coef": cfg.ent_coef,
        **common,
    }
    if cfg.algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO(policy, env, **ppo_kwargs)
    if cfg.algo == "ppo":
        return PPO(policy, env, **ppo_kwargs)
    if cfg.algo == "dqn":
        steps = cfg.budget * cfg.env.n_appends
        return DQN(
            policy,
            env,
            buffer_size=10_000,
            learning_starts=min(32, steps // 4),
            batch_size=cfg.batch_size,
            train_freq=1,
            target_update_interval=max(1, steps // 10),
            exploration_fraction=0.5,
            **common,
        )
    raise ValueError(f"Unknown algo {cfg.algo!r}; use 'maskable_ppo', 'ppo' or 'dqn'.")


def greedy_choice(model: BaseAlgorithm, masked: bool) -> Any:
    """``choose(obs, mask)`` for :func:`agents.common.prompt_env.decode` from a trained model."""

    def choose(obs: Any, mask: np.ndarray) -> int:
        if masked:
            action, _ = model.predict(obs, deterministic=True, action_masks=mask)
        else:
            action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return choose


def train(cfg: SB3PromptConfig) -> dict[str, Any]:
    seed_everything(cfg.seed, cfg.threads)
    env = make_sb3_env(cfg)
    env.reset(seed=cfg.seed)
    model = make_model(cfg, env)
    u = env.unwrapped
    start = time.perf_counter()
    model.learn(total_timesteps=cfg.budget * cfg.env.n_appends, progress_bar=cfg.progress)
    train_time = time.perf_counter() - start
    spent = u.reward_evaluations
    choose = greedy_choice(model, cfg.algo == "maskable_ppo")
    prompts = {t: u.prompt_of(decode(env, choose, t)) for t in task_indices(env)}
    report = final_report(
        env,
        prompts,
        cfg.env.eval_seeds,
        reward_evaluations=spent,
        train_time_s=train_time,
        cache_hit_rate=u.cache_stats.hit_rate,
    )
    out = run_dir(cfg.output_dir, cfg.run_name, f"{cfg.algo}_seed{cfg.seed}")
    if cfg.save:
        save_tensors(
            dict(model.policy.state_dict()),
            out / "policy.safetensors",
            metadata={"algo": cfg.algo, "config": config_json(cfg)},
        )
        write_json(out / "report.json", report)
    return {"model": model, "report": report, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    result = train(tyro.cli(SB3PromptConfig))
    print(json.dumps(result["report"], indent=2, default=str))
