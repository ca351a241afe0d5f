"""Tianshou 2 DQN on ``GrammarGrid-v0``: a thin adapter and a runnable script.

Tianshou 2 splits an agent into a *policy* (acts) and an *algorithm* (learns). The adapter gives
both what GrammarGrid needs and nothing more (the config is
:class:`agents.adapters.tianshou.config.TianshouGrammarConfig`):

* :class:`OneHotQNet` — Tianshou feeds raw observations to the model, so the Q-network one-hot
  encodes the ``MultiDiscrete`` coordinates itself (SB3 does this in its preprocessing); it
  follows Tianshou's model protocol ``forward(obs, state, info) -> (q_values, state)``.
* :func:`make_venv` — ``GrammarGrid-v0`` instances in a ``DummyVectorEnv`` (the per-state image
  cache is shared inside the process, so subprocess vector envs would only duplicate it).
* :func:`train` — ``DiscreteQLearningPolicy`` + ``DQN`` + collectors + ``OffPolicyTrainerParams``
  with a linear ε schedule, then a greedy evaluation with every grid agent's statistics.

    python -m agents.adapters.tianshou.grammar --model renderer --detector exact --epochs 6
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch import nn

import diffenvs  # noqa: F401  (registers the environments)
from agents.adapters.tianshou.config import TianshouGrammarConfig
from agents.common.grid import episode_statistics, parse_target, run_episode
from agents.common.runs import run_dir
from agents.common.seeding import seed_everything
from diffenvs.io import save_tensors, write_json


class OneHotQNet(nn.Module):
    """Q-values from one-hot grid coordinates (Tianshou model protocol)."""

    def __init__(self, nvec: Any, n_actions: int, hidden: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        self.nvec = [int(n) for n in np.asarray(nvec).reshape(-1)]
        layers: list[nn.Module] = []
        width = sum(self.nvec)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions))
        self.mlp = nn.Sequential(*layers)

    def forward(self, obs: Any, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        x = torch.as_tensor(np.asarray(obs), dtype=torch.long).reshape(-1, len(self.nvec))
        onehot = torch.cat([F.one_hot(x[:, i], n) for i, n in enumerate(self.nvec)], dim=-1)
        return self.mlp(onehot.float()), state


def make_env(cfg: TianshouGrammarConfig) -> gym.Env:
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
    return gym.make("GrammarGrid-v0", max_episode_steps=cfg.max_episode_steps, **kwargs)


def make_venv(cfg: TianshouGrammarConfig, n: int, seed: int) -> Any:
    from tianshou.env import DummyVectorEnv

    venv = DummyVectorEnv([lambda: make_env(cfg) for _ in range(n)])
    venv.seed(seed)
    return venv


def evaluate(net: OneHotQNet, env: gym.Env, episodes: int, seed: int) -> dict[str, float]:
    """Greedy episodes from fixed starts; every grid agent's statistics."""

    def act(obs: Any) -> int:
        with torch.no_grad():
            return int(net(obs[None])[0].argmax())

    return episode_statistics([run_episode(env, act, seed + i) for i in range(episodes)])


def train(cfg: TianshouGrammarConfig) -> dict[str, Any]:
    from tianshou.algorithm.modelfree.dqn import DQN, DiscreteQLearningPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.trainer import OffPolicyTrainerParams

    # Tianshou's ε-greedy and buffer sampling draw from numpy's global RNG: seeded here.
    seed_everything(cfg.seed)
    probe = make_env(cfg)
    if not isinstance(probe.observation_space, gym.spaces.MultiDiscrete):
        raise ValueError(
            f"This adapter's Q-network one-hot encodes MultiDiscrete coordinates; observation "
            f"{cfg.observation!r} gives {probe.observation_space}. Use 'coords' or 'coords_target'."
        )
    net = OneHotQNet(probe.observation_space.nvec, int(probe.action_space.n), cfg.hidden)
    policy = DiscreteQLearningPolicy(
        model=net,
        action_space=probe.action_space,
        observation_space=probe.observation_space,
        eps_training=cfg.eps_start,
        eps_inference=0.0,
    )
    algorithm = DQN(
        policy=policy,
        optim=AdamOptimizerFactory(lr=cfg.learning_rate),
        gamma=cfg.gamma,
        n_step_return_horizon=1,
        target_update_freq=cfg.target_update_freq,
    )
    train_envs = make_venv(cfg, cfg.num_train_envs, cfg.seed)
    test_envs = make_venv(cfg, 2, cfg.seed + 10_000)
    buffer = VectorReplayBuffer(cfg.buffer_size, cfg.num_train_envs)
    train_collector = Collector(algorithm, train_envs, buffer, exploration_noise=True)
    test_collector = Collector(algorithm, test_envs, exploration_noise=False)
    train_collector.reset()
    train_collector.collect(n_step=cfg.batch_size * cfg.num_train_envs, random=True)

    def set_eps(epoch: int, env_step: int) -> None:
        frac = min(1.0, env_step / max(1, cfg.eps_decay_steps))
        policy.set_eps_training(cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start))

    start = time.perf_counter()
    algorithm.run_training(
        OffPolicyTrainerParams(
            training_collector=train_collector,
            test_collector=test_collector,
            max_epochs=cfg.epochs,
            epoch_num_steps=cfg.epoch_num_steps,
            collection_step_num_env_steps=cfg.collection_step_num_env_steps,
            test_step_num_episodes=cfg.test_episodes,
            batch_size=cfg.batch_size,
            update_step_num_gradient_steps_per_sample=cfg.gradient_steps_per_sample,
            training_fn=set_eps,
            show_progress=cfg.progress,
            verbose=False,
        )
    )
    train_time = time.perf_counter() - start
    stats = evaluate(net, make_env(cfg), cfg.eval_episodes, cfg.eval_seed)
    stats["train_time_s"] = train_time
    out = run_dir(cfg.output_dir, cfg.run_name, f"dqn_{cfg.reward}_seed{cfg.seed}")
    if cfg.save:
        save_tensors(
            dict(net.state_dict()),
            out / "q_network.safetensors",
            metadata={"config": json.dumps(asdict(cfg))},
        )
        write_json(out / "eval.json", stats)
    return {"net": net, "eval": stats, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    result = train(tyro.cli(TianshouGrammarConfig))
    print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
