"""DiffusionDenoise-v0's native vector env and its SB3 / Tianshou adapters, on a tiny random pipeline."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from tiny_denoise import ENV_ID, PROMPTS, make, run_episode, single_thread  # noqa: F401

import diffenvs  # noqa: F401
from diffenvs.envs.denoise_vector import DiffusionDenoiseVectorEnv

# --------------------------------------------------------------------------------------------
# Vector envs


@pytest.mark.parametrize("autoreset_mode", ["NextStep", "SameStep"])
def test_native_vector_env_matches_sync_vector_env(pipe, autoreset_mode):
    kwargs = {"model": pipe, "prompts": PROMPTS, "num_steps": 2, "reward": "colourfulness"}
    native = gym.make_vec(ENV_ID, num_envs=3, autoreset_mode=autoreset_mode, **kwargs)
    sync = gym.make_vec(
        ENV_ID,
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode(autoreset_mode)},
        **kwargs,
    )
    assert isinstance(native, DiffusionDenoiseVectorEnv)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]
    assert native.single_action_space.shape == sync.single_action_space.shape
    on, info_n = native.reset(seed=4)
    os_, info_s = sync.reset(seed=4)
    assert list(info_n["prompt"]) == list(info_s["prompt"])
    rng = np.random.default_rng(0)
    for _ in range(5):  # crosses two episode ends
        actions = rng.standard_normal((3, *native.single_action_space.shape)).astype(np.float32)
        on, rn, tn, un, info_n = native.step(actions)
        os_, rs, ts, us, info_s = sync.step(actions)
        assert sorted(info_n) == sorted(info_s)
        for key in on:
            np.testing.assert_allclose(on[key], os_[key], atol=1e-4)
        np.testing.assert_allclose(rn, rs, atol=1e-4)
        np.testing.assert_array_equal(tn, ts)
        np.testing.assert_array_equal(un, us)
        assert list(info_n["prompt"]) == list(info_s["prompt"])


def test_next_step_autoreset_semantics(pipe):
    envs = gym.make_vec(ENV_ID, num_envs=2, model=pipe, prompts=PROMPTS, num_steps=2, reward="zero")
    envs.reset(seed=0)
    actions = np.zeros((2, *envs.single_action_space.shape), np.float32)
    envs.step(actions)
    _, _, terminated, _, info = envs.step(actions)
    assert terminated.all() and info["_image"].all()
    obs, rewards, terminated, _, info = envs.step(actions * np.nan)  # ignored: autoreset step
    assert not terminated.any() and (rewards == 0).all()
    assert (info["step"] == 0).all() and "log_prob" not in info
    assert (obs["timestep"][:, 0] == envs.unwrapped.core.timesteps[0].item()).all()


def test_disabled_autoreset_and_masked_reset(pipe):
    envs = DiffusionDenoiseVectorEnv(
        2, autoreset_mode="Disabled", model=pipe, prompts=PROMPTS, num_steps=2, reward="zero"
    )
    envs.reset(seed=0)
    actions = np.zeros((2, *envs.single_action_space.shape), np.float32)
    envs.step(actions)
    # Restart env 0 mid-episode: the slots now sit at different steps and still share a forward.
    obs, info = envs.reset(
        options={"reset_mask": np.array([True, False]), "prompts": ["one red circle", None]}
    )
    assert info["_prompt"].tolist() == [True, False] and info["prompt"][0] == "one red circle"
    assert obs["timestep"][0, 0] > obs["timestep"][1, 0] > 0
    _, _, terminated, _, info = envs.step(actions)
    assert terminated.tolist() == [False, True] and info["_image"].tolist() == [False, True]
    with pytest.raises(RuntimeError, match="reset_mask"):
        envs.step(actions)
    envs.reset(options={"reset_mask": np.array([False, True])})
    envs.step(actions)


def test_vector_kl_penalty_and_render(pipe):
    envs = DiffusionDenoiseVectorEnv(
        2,
        model=pipe,
        prompts=PROMPTS,
        num_steps=2,
        reward="zero",
        kl_coef=1.0,
        render_mode="rgb_array",
    )
    envs.reset(seed=0)
    actions = np.zeros((2, *envs.single_action_space.shape), np.float32)
    with pytest.raises(ValueError, match="set_policy_log_prob"):
        envs.step(actions)
    base = -0.5 * math.prod(actions.shape[1:]) * math.log(2 * math.pi)
    envs.set_policy_log_prob([base, base + 2.0])
    _, rewards, _, _, info = envs.step(actions)
    assert rewards[0] == pytest.approx(0.0, abs=1e-9) and rewards[1] < 0
    assert info["kl"][1] == pytest.approx(math.expm1(-2.0) + 2.0, rel=1e-6)
    frames = envs.render()
    assert len(frames) == 2 and frames[0].shape == (16, 16, 3) and frames[0].dtype == np.uint8


# --------------------------------------------------------------------------------------------
# SB3 and Tianshou adapters


def test_sb3_vec_env_adapter_and_ppo(pipe):
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.adapters.sb3.config import SB3DenoiseConfig
    from agents.adapters.sb3.denoise import make_sb3_vec_env
    from agents.adapters.sb3.denoise import train as main

    venv = make_sb3_vec_env(2, model=pipe, prompts=PROMPTS, num_steps=2, reward="colourfulness")
    venv.seed(3)
    obs = venv.reset()
    assert obs["latent"].shape == (2, 4, 8, 8)
    actions = np.zeros((2, 4, 8, 8), np.float32)
    venv.step(actions)
    obs, rewards, dones, infos = venv.step(actions)
    assert dones.all() and (rewards > 0).all()
    assert infos[0]["terminal_observation"]["timestep"][0] == 0.0  # x_0 of the finished episode
    assert "terminal_reward" in infos[0] and obs["timestep"][0, 0] > 0  # already the next episode
    monitored = VecMonitor(venv)
    monitored.reset()
    cfg = SB3DenoiseConfig(
        num_steps=2,
        num_envs=2,
        total_timesteps=8,
        batch_size=4,
        n_epochs=1,
        eval_episodes=2,
        save=False,
        progress=False,
        env_kwargs={"model": pipe, "prompts": PROMPTS},
    )
    result = main(cfg)
    assert np.isfinite(result["eval"]["reward_before"]) and np.isfinite(
        result["eval"]["reward_after"]
    )


def test_tianshou_vector_env_adapter_and_ppo(pipe):
    from agents.adapters.tianshou.config import TianshouDenoiseConfig
    from agents.adapters.tianshou.denoise import make_tianshou_vector_env
    from agents.adapters.tianshou.denoise import train as main

    envs = make_tianshou_vector_env(3, model=pipe, prompts=PROMPTS, num_steps=2, reward="zero")
    assert len(envs) == 3 and envs.action_space[0].shape == (4, 8, 8)
    envs.seed(0)
    obs, infos = envs.reset()
    assert obs.latent.shape == (3, 4, 8, 8) and infos[2]["env_id"] == 2
    actions = np.zeros((2, 4, 8, 8), np.float32)
    obs, rewards, terminated, _, infos = envs.step(actions, id=[0, 2])  # a subset of the envs
    assert obs.latent.shape == (2, 4, 8, 8) and [i["env_id"] for i in infos] == [0, 2]
    assert rewards.shape == terminated.shape == (2,)
    _, _, terminated, _, _ = envs.step(actions, id=[0, 2])
    assert terminated.all()
    with pytest.raises(RuntimeError, match="not mid-episode"):
        envs.step(actions, id=[0, 1])
    envs.reset(env_id=[0, 2])
    cfg = TianshouDenoiseConfig(
        num_steps=2,
        num_envs=2,
        epochs=1,
        epoch_num_steps=8,
        collection_step_num_env_steps=4,
        batch_size=4,
        eval_episodes=2,
        save=False,
        progress=False,
        env_kwargs={"model": pipe, "prompts": PROMPTS},
    )
    result = main(cfg)
    assert np.isfinite(result["eval"]["reward_after"])
