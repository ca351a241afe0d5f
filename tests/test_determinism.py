"""No public code path draws from a global RNG: an episode of every env (and a stochastic
``ImageGenerator``) gives identical results whatever torch's, numpy's and Python's global
generators were seeded with before."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_denoise import PROMPTS

import diffenvs  # noqa: F401


def perturb_global_rngs(k: int) -> None:
    """Seed and advance every global generator differently for each ``k``."""
    random.seed(k)
    np.random.seed(k)
    torch.manual_seed(k)
    for _ in range(k + 1):
        random.random()
        np.random.rand(3)
        torch.rand(3)


def denoise_episode(pipe) -> list:
    env = gym.make(
        "DiffusionDenoise-v0",
        model=pipe,
        prompts=PROMPTS,
        num_steps=3,
        reward="colourfulness",
        scheduler="ddpm",
    )
    obs, info = env.reset(seed=7)
    out = [obs["latent"], info["prompt"]]
    env.action_space.seed(3)
    done = False
    while not done:
        obs, reward, done, _, info = env.step(env.action_space.sample())
        out += [obs["latent"], reward]
    return [*out, info["image"]]


def grid_episode() -> list:
    env = gym.make("GrammarGrid-v0", grammar="tiny", model="renderer", detector="exact")
    obs, _ = env.reset(seed=11)
    env.action_space.seed(5)
    out = [obs]
    for _ in range(15):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out += [obs, reward]
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs)
    return out


def append_episode() -> list:
    env = gym.make(
        "PromptAppend-v0",
        tasks="world:test",
        model="renderer",
        vocabulary=["striped", "dotted", "outlined", "glowing", "pastel"],
        generation_seeds=(0,),
    ).unwrapped
    obs, info = env.reset(seed=4)
    out = [obs, info["task"]]
    rng = np.random.default_rng(2)
    done = False
    while not done:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, reward, done, _, info = env.step(action)
        out += [obs, reward, info["prompt"]]
    return out


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("episode", ["denoise", "grid", "append"])
def test_episodes_ignore_global_rng_state(episode, pipe):
    run = {
        "denoise": lambda: denoise_episode(pipe),
        "grid": grid_episode,
        "append": append_episode,
    }[episode]
    perturb_global_rngs(0)
    first = run()
    perturb_global_rngs(12345)
    second = run()
    assert_same(first, second)


def test_stochastic_image_generator_ignores_global_rng_and_batch(world_pipeline):
    from diffenvs.generate import ImageGenerator

    prompts, seeds = ["one red circle", "two blue stars"], [3, 4]
    perturb_global_rngs(1)
    a = ImageGenerator(world_pipeline, num_inference_steps=2, eta=1.0).images(prompts, seeds)
    perturb_global_rngs(99)
    gen = ImageGenerator(world_pipeline, num_inference_steps=2, eta=1.0)
    b = gen.images(prompts, seeds)
    np.testing.assert_array_equal(a, b)
    # Each image's noise depends on its own (prompt, seed) only, not on its batch-mates (a
    # batch of another size may still round a pixel differently).
    alone = ImageGenerator(world_pipeline, num_inference_steps=2, eta=1.0).images(
        prompts[1:], seeds[1:]
    )
    assert np.abs(a[1].astype(int) - alone[0].astype(int)).max() <= 2
