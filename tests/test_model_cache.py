"""The one process-wide model cache: envs, rewards and generators share every model they load."""

import threading
import time

import gymnasium as gym
import pytest
import torch

import diffenvs
from diffenvs.models import cache as cache_module
from diffenvs.models import clip as clip_module
from diffenvs.models import pipeline as pipeline_module
from diffenvs.models.cache import ModelCache


@pytest.fixture
def count_loads(monkeypatch):
    """Start from an empty cache and record every real load of a CLIP or a pipeline."""
    calls = {"clip": [], "pipeline": []}
    real_clip, real_pipeline = clip_module.load_clip, pipeline_module.load_pipeline

    def load_clip(name, **kwargs):
        calls["clip"].append(str(name))
        return real_clip(name, **kwargs)

    def load_pipeline(name, **kwargs):
        calls["pipeline"].append(str(name))
        return real_pipeline(name, **kwargs)

    monkeypatch.setattr(clip_module, "load_clip", load_clip)
    monkeypatch.setattr(pipeline_module, "load_pipeline", load_pipeline)
    cache_module.clear_caches()
    yield calls
    cache_module.clear_caches()  # later tests must not get a model loaded through the patch


def test_two_envs_and_a_clip_reward_load_clip_once(count_loads):
    prompt_env = gym.make("PromptAppend-v0", model="renderer")
    grid_env = gym.make("GrammarGrid-v0", model="renderer", reward="clip")
    reward = diffenvs.make_reward("clip_score")
    prompt_env.reset(seed=0)
    grid_env.reset(seed=0)
    _, r, *_ = grid_env.step(0)
    scores = reward(torch.rand(2, 3, 64, 64), ["a red circle", "a blue star"])

    assert count_loads["clip"] == ["world"]
    clip = reward.clip
    assert prompt_env.unwrapped.clip is clip
    assert grid_env.unwrapped.perception.clip() is clip
    assert scores.shape == (2,) and isinstance(r, float)


def test_denoise_envs_a_generator_and_a_reward_share_pipeline_and_clip(count_loads):
    from diffenvs.generate import ImageGenerator

    envs = [gym.make("DiffusionDenoise-v0", num_steps=2, reward="clip_score") for _ in range(2)]
    generator = ImageGenerator("world", num_inference_steps=2)
    reward = diffenvs.make_reward("clip")

    assert count_loads["pipeline"] == ["world"]
    assert count_loads["clip"] == ["world"]
    pipes = {id(env.unwrapped.core.pipe) for env in envs} | {id(generator.pipe)}
    assert len(pipes) == 1
    assert envs[0].unwrapped.core.reward.clip is reward.clip


def test_concurrent_requests_load_once_and_loaders_may_nest():
    cache = ModelCache()
    started = threading.Event()
    runs = []

    def slow_load():
        runs.append(1)
        started.set()
        time.sleep(0.05)
        # A loader may ask the cache for another model (a learned reward asks for its CLIP).
        return {"inner": cache.get(("clip", "inner", "cpu"), object)}

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(("m", "x", "cpu"), slow_load)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert len(runs) == 1 and len(results) == 8
    assert all(r is results[0] for r in results)
    assert cache.loads[("m", "x", "cpu")] == 1 and len(cache) == 2


def test_clear_one_kind_keeps_the_others():
    cache = ModelCache()
    a = cache.get(("clip", "world", "cpu"), object)
    cache.get(("prompt_append", "images"), dict)
    cache.clear("prompt_append")
    assert ("prompt_append", "images") not in cache
    assert cache.get(("clip", "world", "cpu"), object) is a
    cache.clear()
    assert len(cache) == 0


def test_shared_clip_passes_a_loaded_model_through():
    clip = diffenvs.shared_clip("world")
    assert diffenvs.shared_clip(clip) is clip
    with pytest.raises(TypeError, match="CLIP name or a ClipModel"):
        diffenvs.shared_clip(3)
