"""Tianshou adapters: the denoising PPO sends its Gaussian actions unchanged, its evaluation is
paired, and the prompt DQN's targets are episode returns (tiny pipeline / procedural renderer)."""

from __future__ import annotations

import numpy as np
import torch
from tiny_denoise import PROMPTS

from agents.adapters.tianshou.config import TianshouPromptConfig
from agents.adapters.tianshou.denoise import (
    evaluate,
    make_ppo,
    make_tianshou_vector_env,
    paired_stats,
)
from agents.adapters.tianshou.prompt import make_algorithm
from agents.common.prompt_env import PromptEnvArgs, make_env


def test_ppo_sends_gaussian_actions_unclipped(pipe) -> None:
    envs = make_tianshou_vector_env(2, model=pipe, prompts=PROMPTS, num_steps=2, reward="zero")
    algorithm = make_ppo(envs, lr=1e-3)
    act = np.full((2, 4, 8, 8), 3.0, np.float32)
    # Noise-mode actions are the sampler's noise: nothing may bound them to [-1, 1].
    np.testing.assert_array_equal(algorithm.policy.map_action(act), act)
    envs.close()


def test_evaluate_is_paired_and_keeps_the_callers_rng(pipe) -> None:
    envs = make_tianshou_vector_env(
        2, model=pipe, prompts=PROMPTS, num_steps=2, reward="colourfulness"
    )
    algorithm = make_ppo(envs)
    state = torch.get_rng_state()
    first = evaluate(algorithm, envs, episodes=4, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = evaluate(algorithm, envs, episodes=4, seed=7)
    assert len(first["rewards"]) == 4 and first["rewards"] == second["rewards"]
    stats = paired_stats(first, second)
    assert stats["paired_diff_mean"] == 0.0 and stats["improved_fraction"] == 0.0
    with torch.no_grad():
        algorithm.policy.actor.mu.bias.fill_(0.5)  # a different policy: different rewards
    moved = evaluate(algorithm, envs, episodes=4, seed=7)
    assert moved["rewards"] != first["rewards"]
    envs.close()


def test_prompt_dqn_targets_are_episode_returns_by_default() -> None:
    env_args = PromptEnvArgs(
        tasks="world:test", task=1, vocabulary="striped,dotted,outlined", model="renderer"
    )
    env = make_env(env_args, masked_action="redirect")
    obs, _ = env.reset(seed=0)
    cfg = TianshouPromptConfig(env=env_args, save=False)
    dqn = make_algorithm(cfg, obs.shape[0], int(env.action_space.n), env)
    assert dqn.n_step == env_args.n_appends  # the reward is terminal: nothing is bootstrapped
    custom = make_algorithm(
        TianshouPromptConfig(env=env_args, n_step_return_horizon=1, save=False),
        obs.shape[0],
        int(env.action_space.n),
        env,
    )
    assert custom.n_step == 1
