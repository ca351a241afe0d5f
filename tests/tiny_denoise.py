"""Tiny randomly initialised Stable Diffusion pipelines and helpers shared by the denoising-env tests."""

from __future__ import annotations

import tempfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

import diffenvs  # noqa: F401
from diffenvs.world.tokenizer import CONTEXT_LENGTH, build_world_tokenizer

ENV_ID = "DiffusionDenoise-v0"
PROMPTS = ["one red circle", "two small blue stars on a grass field", "three green squares"]


def tiny_pipeline(prediction_type: str = "epsilon", seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_world_tokenizer(tmp)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CONTEXT_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make(pipe, **kwargs) -> gym.Env:
    kwargs = {
        "model": pipe,
        "prompts": PROMPTS,
        "num_steps": 3,
        "reward": "colourfulness",
        **kwargs,
    }
    return gym.make(ENV_ID, **kwargs)


def run_episode(env, seed: int, actions_seed: int = 0):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(actions_seed)
    trajectory = [(obs, 0.0, info)]
    done = False
    while not done:
        action = rng.standard_normal(env.action_space.shape).astype(np.float32)
        obs, reward, done, truncated, info = env.step(action)
        assert not truncated
        trajectory.append((obs, reward, info))
    return trajectory


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Tiny models run fastest on one thread, and two threads thrash when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# API conformance
