import os

import pytest
import torch

# Tests never reach a model hub, and stay light on the 2-core CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def world_pipeline():
    from diffenvs.models import load_pipeline

    return load_pipeline("world")


@pytest.fixture(scope="module")
def pipe():
    """A tiny randomly initialised Stable Diffusion pipeline (8×8 latents) for the env tests."""
    from tiny_denoise import tiny_pipeline

    return tiny_pipeline()
