"""Tianshou 2 DQN and PPO on ``PromptAppend-v0``: a thin adapter and a runnable script.

Tianshou feeds the env's flat ``Box`` observation to an MLP (``tianshou.utils.net.common.Net``):
Q-values for DQN, logits plus a value head for PPO. Tianshou's collectors do not read
``action_masks()``, so the env is made with ``masked_action="redirect"`` (a repeated word becomes
the next allowed one), and :class:`DropInfo` hides the env's info from Tianshou's buffers. The
budget is counted in reward evaluations, as for every prompt agent: ``budget × n_appends`` env
steps with the terminal reward. DQN's n-step horizon defaults to the episode length, so its
targets are the episodes' returns and nothing is bootstrapped from an untrained Q. The config is
:class:`agents.adapters.tianshou.config.TianshouPromptConfig`.

    python -m agents.adapters.tianshou.prompt --algo dqn --budget 48
"""

from __future__ import annotations

import json
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

from agents.adapters.tianshou.config import TianshouPromptConfig
from agents.common.prompt_env import decode, final_report, make_env, task_indices
from agents.common.runs import config_json, run_dir
from agents.common.seeding import seed_everything
from diffenvs.io import save_tensors, write_json


class DropInfo(gym.Wrapper):
    """Pass no info to Tianshou: its buffers stack infos into arrays and reject keys that come
    and go (the env reports similarities only on reward steps) and strings of varying length."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(**kwargs)[0], {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, r, terminated, truncated, _ = self.env.step(action)
        return obs, r, terminated, truncated, {}


def make_venv(cfg: TianshouPromptConfig, n: int, seed: int) -> Any:
    from tianshou.env import DummyVectorEnv

    venv = DummyVectorEnv(
        [lambda: DropInfo(make_env(cfg.env, masked_action="redirect")) for _ in range(n)]
    )
    venv.seed(seed)
    return venv


def make_algorithm(cfg: TianshouPromptConfig, obs_dim: int, n_words: int, env: Any) -> Any:
    """DQN (``DiscreteQLearningPolicy``) or PPO (``DiscreteActorPolicy`` + critic), γ = 1."""
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.utils.net.common import Net

    optim = AdamOptimizerFactory(lr=cfg.learning_rate)
    if cfg.algo == "dqn":
        from tianshou.algorithm.modelfree.dqn import DQN, DiscreteQLearningPolicy

        net = Net(state_shape=obs_dim, action_shape=n_words, hidden_sizes=cfg.hidden)
        policy = DiscreteQLearningPolicy(
            model=net,
            action_space=env.action_space,
            observation_space=env.observation_space,
            eps_training=cfg.eps_start,
            eps_inference=0.0,
        )
        horizon = cfg.n_step_return_horizon or cfg.env.n_appends
        return DQN(
            policy=policy,
            optim=optim,
            gamma=1.0,
            n_step_return_horizon=horizon,
            target_update_freq=cfg.target_update_freq,
        )
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic

    actor = DiscreteActor(
        preprocess_net=Net(state_shape=obs_dim, hidden_sizes=cfg.hidden),
        action_shape=n_words,
        softmax_output=False,
    )
    critic = DiscreteCritic(preprocess_net=Net(state_shape=obs_dim, hidden_sizes=cfg.hidden))
    policy = DiscreteActorPolicy(
        actor=actor,
        action_space=env.action_space,
        observation_space=env.observation_space,
        deterministic_eval=True,
    )
    return PPO(policy=policy, critic=critic, optim=optim, gamma=1.0, gae_lambda=0.95)


def train(cfg: TianshouPromptConfig) -> dict[str, Any]:
    from tianshou.data import Batch, Collector, ReplayBuffer, VectorReplayBuffer
    from tianshou.trainer import OffPolicyTrainerParams, OnPolicyTrainerParams

    seed_everything(cfg.seed, cfg.threads)
    probe = make_env(cfg.env, masked_action="redirect")
    obs, _ = probe.reset(seed=cfg.seed)
    if not isinstance(obs, np.ndarray):
        raise ValueError("This adapter's MLPs need observation='flat' (a Box observation).")
    # Loading the world's models (the first env of a process) draws from torch's generator:
    # seed again so the networks start the same whether or not the models were loaded already.
    seed_everything(cfg.seed, cfg.threads)
    algorithm = make_algorithm(cfg, obs.shape[0], int(probe.action_space.n), probe)
    envs = make_venv(cfg, cfg.num_train_envs, cfg.seed)
    steps = cfg.budget * cfg.env.n_appends
    size = max(steps, 64)
    # One env needs no buffer manager (whose numba kernels take a while to compile on first use).
    n = cfg.num_train_envs
    buffer = ReplayBuffer(size) if n == 1 else VectorReplayBuffer(size, n)
    collector = Collector(algorithm, envs, buffer, exploration_noise=cfg.algo == "dqn")
    collector.reset()
    epoch_steps = max(cfg.collection_step_num_env_steps, steps // cfg.epochs)
    common = {
        "training_collector": collector,
        "max_epochs": cfg.epochs,
        "epoch_num_steps": epoch_steps,
        "collection_step_num_env_steps": cfg.collection_step_num_env_steps,
        "batch_size": cfg.batch_size,
        "test_in_training": False,
        "show_progress": cfg.progress,
        "verbose": False,
    }
    start = time.perf_counter()
    if cfg.algo == "dqn":
        policy = algorithm.policy

        def set_eps(epoch: int, env_step: int) -> None:
            frac = min(1.0, env_step / max(1, steps // 2))
            policy.set_eps_training(cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start))

        algorithm.run_training(
            OffPolicyTrainerParams(
                **common,
                update_step_num_gradient_steps_per_sample=cfg.gradient_steps_per_sample,
                training_fn=set_eps,
            )
        )
    else:
        algorithm.run_training(OnPolicyTrainerParams(**common, update_step_num_repetitions=4))
    train_time = time.perf_counter() - start
    spent = sum(e.unwrapped.reward_evaluations for e in envs.get_env_attr("unwrapped"))
    algorithm.policy.eval()

    def choose(obs: np.ndarray, mask: np.ndarray) -> int:
        with torch.no_grad():
            acted = algorithm.policy(Batch(obs=obs[None], info={}))
        return int(np.asarray(acted.act).reshape(-1)[0])

    u = probe.unwrapped
    prompts = {t: u.prompt_of(decode(probe, choose, t)) for t in task_indices(probe)}
    report = final_report(
        probe, prompts, cfg.env.eval_seeds, reward_evaluations=spent, train_time_s=train_time
    )
    out = run_dir(cfg.output_dir, cfg.run_name, f"{cfg.algo}_seed{cfg.seed}")
    if cfg.save:
        save_tensors(
            dict(algorithm.policy.state_dict()),
            out / "policy.safetensors",
            metadata={"config": config_json(cfg)},
        )
        write_json(out / "report.json", report)
    return {"algorithm": algorithm, "report": report, "run_dir": str(out) if cfg.save else None}


if __name__ == "__main__":
    result = train(tyro.cli(TianshouPromptConfig))
    print(json.dumps(result["report"], indent=2, default=str))
