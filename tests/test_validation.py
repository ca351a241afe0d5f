"""The validation policy (docs/validation.md), case by case: every input that was once accepted
silently or failed deep inside a dependency now raises a documented error that names it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_denoise import PROMPTS

import diffenvs  # noqa: F401
from diffenvs.envs.validate import ACTION_LIMIT
from diffenvs.errors import DeviceUnavailableError, NonFiniteError, check_number, summarise
from diffenvs.rewards import make_reward

GRID = {"grammar": "tiny", "model": "renderer", "detector": "exact"}
APPEND = {
    "tasks": "world:test",
    "task": 0,
    "model": "renderer",
    "vocabulary": ["striped", "dotted", "outlined", "glowing"],
    "generation_seeds": (0,),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def denoise(pipe, **kwargs):
    return gym.make(
        "DiffusionDenoise-v0",
        **{"model": pipe, "prompts": PROMPTS, "num_steps": 2, "reward": "colourfulness", **kwargs},
    ).unwrapped


# ------------------------------------------------------------------------------ DiffusionDenoise
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eta": float("inf")}, NonFiniteError, "eta must be a finite number"),
        ({"eta": 5.0}, ValueError, r"eta must be in \[0, 1\]"),
        ({"guidance_scale": 1e30}, ValueError, "guidance_scale must be in"),
        ({"guidance_scale": float("nan")}, NonFiniteError, "guidance_scale"),
        ({"num_steps": 5000}, ValueError, r"num_steps must be in \[1, 1000\]"),
        ({"num_steps": 2.0}, TypeError, "num_steps must be an integer"),
        ({"kl_coef": float("nan")}, NonFiniteError, "kl_coef"),
        ({"device": "cuda:97"}, DeviceUnavailableError, "cuda:97"),
        ({"device": "gpu"}, ValueError, "not a device name"),
        ({"prompts": [""]}, ValueError, "Prompt 0 .* is empty"),
        ({"prompts": ["a red circle", "  "]}, ValueError, "Prompt 1 .* is empty"),
        ({"reward": "jpeg_compressibility:abc"}, ValueError, "JPEG quality 'abc'"),
        ({"reward": "jpeg_compressibility:101"}, ValueError, r"JPEG quality must be .*\[1, 100\]"),
        ({"reward_kwargs": {"vivid_threshold": float("nan")}}, NonFiniteError, "vivid_threshold"),
    ],
)
def test_denoise_constructor_rejects(pipe, kwargs, error, match):
    if kwargs.get("device", "").startswith("cuda") and torch.cuda.device_count() > 97:
        pytest.skip("this machine has that many GPUs")
    with pytest.raises(error, match=match):
        denoise(pipe, **kwargs)


@pytest.mark.parametrize("seed", [2**64, -1, 1.5, "0"])
def test_denoise_reset_seed_out_of_range(pipe, seed):
    env = denoise(pipe)
    with pytest.raises((ValueError, TypeError), match="seed"):
        env.reset(seed=seed)


def test_reset_seed_range_edges(pipe):
    env = denoise(pipe)
    env.reset(seed=2**63 - 1)  # the largest seed is fine
    with pytest.raises(ValueError, match=r"\[0, 9223372036854775807\]"):
        env.reset(seed=2**63)
    with pytest.raises(ValueError, match="non-empty"):
        env.reset(seed=0, options={"prompt": ""})


@pytest.mark.parametrize("value", [1e20, 1e30, 2e4])
def test_huge_finite_action_is_an_error_not_a_reward(pipe, value):
    env = denoise(pipe)
    env.reset(seed=0)
    action = np.full(env.action_space.shape, value, np.float32)
    with pytest.raises(ValueError, match=f"{ACTION_LIMIT:g}"):
        env.step(action)
    # The refused step changed nothing: the episode goes on with a sane action.
    _, _, terminated, _, _ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert not terminated


def test_huge_latent_in_reset_options_is_refused(pipe):
    env = denoise(pipe)
    latents = np.full(env.action_space.shape, 1e6, np.float32)
    with pytest.raises(ValueError, match="options\\['latents'\\]"):
        env.reset(seed=0, options={"latents": latents})


def test_non_finite_base_output_ends_the_episode_with_an_error(pipe):
    """A latent the model cannot handle (here forced by hand) is an error, never a reward."""
    env = denoise(pipe, action_mode="latent")
    env.reset(seed=0)
    core = env.core
    core._write("latents", slice(None), torch.full_like(core.latents, float("nan")))
    with pytest.raises(NonFiniteError, match="reset"):
        core.refresh(env._ids)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(env.action_space.shape, np.float32))


def test_non_finite_decoded_image_is_an_error(pipe):
    env = denoise(pipe, num_steps=1, action_mode="latent")
    env.reset(seed=0)
    vae_decode = env.core.pipe.vae.decode
    env.core.pipe.vae.decode = lambda z, return_dict=False: (
        torch.full_like(vae_decode(z)[0], np.nan),
    )
    try:
        with pytest.raises(NonFiniteError, match="decoded image"):
            env.step(np.zeros(env.action_space.shape, np.float32))
    finally:
        env.core.pipe.vae.decode = vae_decode


def test_loaded_pipeline_on_a_missing_device(pipe):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        denoise(pipe, device="cuda")


# --------------------------------------------------------------------------------------- rewards
NAN_IMAGE = torch.full((1, 3, 8, 8), float("nan"))


@pytest.mark.parametrize("name", ["colourfulness", "jpeg_compressibility", "target_rmse", "zero"])
@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (NAN_IMAGE, NonFiniteError, "NaN"),
        (torch.full((1, 3, 8, 8), float("inf")), NonFiniteError, "infinite"),
        (torch.full((1, 3, 8, 8), 200.0), ValueError, "0-255"),
        (torch.full((1, 3, 8, 8), -1.0), ValueError, r"\[-1, 1\]"),
        (torch.zeros(1, 3, 0, 8), ValueError, "pixels"),
        (np.zeros((1, 8, 8, 3), np.float32), ValueError, "uint8"),
    ],
)
def test_rewards_reject_bad_images(name, images, error, match):
    reward = make_reward(name)
    with pytest.raises(error, match=match):
        reward(images, ["a red circle"])


def test_rewards_accept_the_documented_ranges():
    reward = make_reward("colourfulness")
    assert torch.isfinite(reward(torch.rand(2, 3, 8, 8))).all()
    assert torch.isfinite(reward(np.zeros((2, 8, 8, 3), np.uint8))).all()
    with pytest.raises(TypeError, match="prompt 1 is a int"):
        reward(torch.rand(2, 3, 8, 8), ["a", 3])


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (np.full((8, 8, 3), np.nan, np.float32), NonFiniteError, "target image"),
        (
            np.full((8, 8, 3), 200.0, np.float32),
            ValueError,
            r"float target image must be in \[0, 1\]",
        ),
        (np.zeros((8, 8), np.uint8), ValueError, "H x W x 3"),
        (np.full((8, 8, 3), 300, np.int64), ValueError, "0..255"),
    ],
)
def test_target_image_rewards_reject_bad_targets(target, error, match):
    with pytest.raises(error, match=match):
        make_reward("target_rmse", target=target)


def test_float_target_in_unit_range_is_scaled_not_truncated():
    reward = make_reward("target_rmse", target=np.full((8, 8, 3), 0.5, np.float32))
    assert float(reward.target.mean()) == pytest.approx(128 / 255, abs=1e-6)


def test_corrupt_png_target(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        make_reward("target_rmse", target=str(bad))
    with pytest.raises(ValueError, match="Cannot read target image"):
        gym.make("GrammarGrid-v0", **GRID, target=str(bad))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n_hue_bins": 10**9}, ValueError),
        ({"n_hue_bins": 2.5}, TypeError),
        ({"vivid_threshold": float("inf")}, NonFiniteError),
    ],
)
def test_colourfulness_arguments(kwargs, error):
    with pytest.raises(error):
        make_reward("colourfulness", **kwargs)


# ----------------------------------------------------------------------------------- GrammarGrid
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fine_weight": float("nan")}, NonFiniteError, "fine_weight"),
        ({"scene_weight": float("inf")}, NonFiniteError, "scene_weight"),
        ({"goal_reward": float("-inf")}, NonFiniteError, "goal_reward"),
        ({"generation_seed": -1}, ValueError, "generation_seed"),
        ({"relative_reward": "no"}, TypeError, "relative_reward"),
        ({"target": np.full((8, 8, 3), np.nan, np.float32)}, NonFiniteError, "target image"),
        ({"target": np.zeros((5, 7), np.int64)}, ValueError, "H×W×3"),
        ({"target": [[0, 1], [2]]}, ValueError, "must be 3 integers"),
        ({"detector": ["exact"]}, ValueError, "Unknown detector"),
    ],
)
def test_grammar_grid_constructor_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        gym.make("GrammarGrid-v0", **{**GRID, **kwargs})


def test_two_dimensional_target_is_not_dumped_into_the_message():
    with pytest.raises(ValueError) as err:
        gym.make("GrammarGrid-v0", **GRID, target=np.zeros((64, 64), np.uint8))
    assert "shape (64, 64)" in str(err.value) and "0, 0, 0" not in str(err.value)


def test_grammar_grid_step_after_termination_raises():
    env = gym.make("GrammarGrid-v0", **GRID, target=(1, 0, 0)).unwrapped
    env.reset(seed=0, options={"start": (0, 0, 0)})
    _, _, terminated, _, _ = env.step(0)
    assert terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # a new episode steps again


@pytest.mark.parametrize("seed", [2**64, -3])
def test_grammar_grid_reset_seed(seed):
    env = gym.make("GrammarGrid-v0", **GRID)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=seed)


# -------------------------------------------------------------------------------- PromptAppend
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lambda_text": float("nan")}, NonFiniteError, "lambda_text"),
        ({"lambda_image": float("inf")}, NonFiniteError, "lambda_image"),
        ({"generation_seeds": (0, -1)}, ValueError, "generation seed"),
        ({"generation_seeds": 3}, TypeError, "generation_seeds"),
        ({"target_seed": 2**64}, ValueError, "target_seed"),
        ({"task": "0"}, TypeError, "task"),
        ({"observe_image": "yes"}, TypeError, "observe_image"),
        ({"separator": 5}, TypeError, "separator"),
        ({"tasks": ""}, ValueError, "names no task set"),
    ],
)
def test_prompt_append_constructor_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        gym.make("PromptAppend-v0", **{**APPEND, **kwargs})


# ---------------------------------------------------------------------------- image generation
def test_image_generator_rejects_bad_seeds_and_settings(world_pipeline):
    from diffenvs.generate import ImageGenerator

    gen = ImageGenerator(world_pipeline, num_inference_steps=1)
    with pytest.raises(ValueError, match="generation seed"):
        gen.images(["one red circle"], [-1])
    with pytest.raises(TypeError, match="Prompts must be str"):
        gen.images([None], [0])
    with pytest.raises(ValueError, match="num_inference_steps must be in"):
        ImageGenerator(world_pipeline, num_inference_steps=10**6)
    with pytest.raises(ValueError, match="eta"):
        ImageGenerator(world_pipeline, eta=2.0)


# ------------------------------------------------------------------------------------- helpers
def test_summarise_never_dumps_arrays():
    text = summarise(np.arange(10_000, dtype=np.float32))
    assert "shape (10000,)" in text and len(text) < 120
    assert summarise("x" * 500).endswith("...")


def test_check_number_messages_name_argument_and_range():
    with pytest.raises(ValueError, match=r"lr must be in \[0, 1\], got 2"):
        check_number("lr", 2.0, 0, 1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        check_number("lr", [1.0])
