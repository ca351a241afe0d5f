"""The shipped world models load through standard APIs and do their jobs on held-out data."""

import numpy as np
import pytest
import torch

from diffenvs.models import (
    load_clip,
    load_oracle,
    load_pipeline,
    world_clip_path,
    world_pipeline_path,
)
from diffenvs.world.attributes import ATTRIBUTES
from diffenvs.world.render import render, sample_scenes


def test_all_shipped_weights_are_present():
    assert (world_pipeline_path() / "model_index.json").exists()
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (world_pipeline_path() / sub).is_dir(), sub
    assert (world_clip_path() / "open_clip_model.safetensors").exists()
    assert (world_pipeline_path().parent / "oracle.safetensors").exists()


def test_pipeline_loads_with_plain_diffusers_and_is_deterministic():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(world_pipeline_path()))
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=4, output_type="np", guidance_scale=4.0)
    a = pipe(
        "one large red circle in the middle of a grass field",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    b = pipe(
        "one large red circle in the middle of a grass field",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    assert a.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(a, b)


def test_open_clip_loads_the_world_clip_directly():
    import open_clip

    spec = "local-dir:" + str(world_clip_path())
    model = open_clip.create_model(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    tokens = tokenizer(["one red circle", "two blue stars"])
    assert model.encode_text(tokens).shape[0] == 2


def test_oracle_reads_rendered_heldout_images():
    scenes = sample_scenes(64, seed=99, split="heldout")
    images = np.stack([np.asarray(render(s, 500 + i)) for i, s in enumerate(scenes)])
    pred = load_oracle().predict(images)
    for attr in ATTRIBUTES:
        truth = np.array([s.labels()[attr] for s in scenes])
        assert (pred[attr] == truth).mean() >= 0.9, attr


def test_clip_prefers_the_true_caption():
    scenes = sample_scenes(32, seed=5, split="heldout")
    images = np.stack([np.asarray(render(s, i)) for i, s in enumerate(scenes)])
    clip = load_clip()
    with torch.no_grad():
        sims = clip.encode_images(images) @ clip.encode_texts([s.caption() for s in scenes]).T
    assert (sims.argmax(1) == torch.arange(len(scenes))).float().mean() >= 0.8


@pytest.mark.slow
def test_generated_images_follow_heldout_prompts():
    """A regression guard well above chance (1/8 colours, 1/6 scenes); the issue's quality bars
    are measured by `diffenvs world evaluate` and reported in docs/world.md, not asserted here."""
    from diffenvs.generate import ImageGenerator

    scenes = sample_scenes(64, seed=7, split="heldout")
    gen = ImageGenerator(load_pipeline(), num_inference_steps=20)
    images = gen.images([s.caption() for s in scenes], list(range(len(scenes))))
    pred = load_oracle().predict(images)
    for attr, floor in (("colour", 0.4), ("scene", 0.4)):
        truth = np.array([s.labels()[attr] for s in scenes])
        assert (pred[attr] == truth).mean() >= floor, attr
