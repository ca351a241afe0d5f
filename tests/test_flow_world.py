"""The embedded flow world's trainer and model layout (issue 21, deliverable 2).

A tiny configuration of ``diffenvs.world.training.train_flow`` (3 steps, a one-block transformer, 16
rendered images, the shared world-v2 VAE) writes an SD3-layout folder into a temp dir; the folder
must load in diffusers' ``StableDiffusion3Pipeline`` and in ``load_pipeline``, run in
``DiffusionDenoise-v0`` (ODE and SDE modes, both env checkers), and an ODE episode must reproduce
the pipeline's image. The T5 shortcut (256 zero rows carried as one token) must be exact.
"""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import diffenvs  # noqa: F401
from diffenvs.models import load_pipeline
from diffenvs.world.flow_t2i import (
    T5_SLOTS,
    make_transformer,
    t5_free_fast_path,
    use_t5_sink,
    with_t5_sink,
)

ENV_ID = "DiffusionDenoise-v0"
PROMPT = "two small blue stars on the left of a grass field"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the trainer for 3 steps on a tiny configuration; return its output folder."""
    from diffenvs.world.training.train_flow import Config, main

    root = tmp_path_factory.mktemp("flow_world")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFENVS_CACHE", str(root / "cache"))  # rendered data and latents
        cfg = Config(
            train_size=16,
            steps=3,
            batch_size=4,
            warmup=1,
            save_every=2,
            width=32,
            layers=1,
            heads=2,
            out=root / "t2i",
        )
        main(cfg)
    return cfg.out


@pytest.fixture(scope="module")
def pipe(trained: Path):
    return load_pipeline(trained)


def _ode_episode(env, seed: int) -> tuple[np.ndarray, dict]:
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, _, done, _, info = env.step(np.zeros_like(obs["latent"]))
    core = env.unwrapped.core
    return core.decode(core.latents).permute(0, 2, 3, 1)[0].numpy(), info


def test_trainer_writes_an_sd3_folder_and_its_progress(trained: Path) -> None:
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "scheduler"):
        assert (trained / part).is_dir(), part
    assert not (trained / "text_encoder_3").exists()
    rows = (trained.parent / "t2i_progress.csv").read_text().splitlines()
    assert rows[-1].startswith("3,")
    assert "steps=3" in (trained.parent / "t2i_progress.txt").read_text()
    # The VAE is the shared world-v2 VAE, with the shift the SD3 pipeline needs.
    assert (trained / "vae" / "config.json").read_text().count('"shift_factor": 0.0') == 1


def test_folder_loads_in_diffusers_and_the_package_loader(trained: Path, pipe) -> None:
    from diffusers import StableDiffusion3Pipeline

    ref = StableDiffusion3Pipeline.from_pretrained(trained, text_encoder_3=None, tokenizer_3=None)
    assert type(pipe) is StableDiffusion3Pipeline and pipe.text_encoder_3 is None
    assert pipe.transformer.config.in_channels == 8 and pipe.transformer.config.sample_size == 16
    # One encoder saved as both CLIP slots.
    for a, b in zip(pipe.text_encoder.parameters(), pipe.text_encoder_2.parameters(), strict=True):
        assert torch.equal(a, b)
    image = ref(PROMPT, num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_training_resumes_from_a_folder(trained: Path, tmp_path: Path, monkeypatch) -> None:
    from diffenvs.world.training.train_flow import Config, main

    monkeypatch.setenv("DIFFENVS_CACHE", str(trained.parent / "cache"))
    main(Config(train_size=16, steps=1, batch_size=2, init_from=trained, out=tmp_path / "leg2"))
    again = load_pipeline(tmp_path / "leg2")
    assert again.transformer.config.num_layers == 1  # the architecture came from init_from


def test_t5_sink_is_the_same_computation_as_the_pipelines_zero_rows() -> None:
    torch.manual_seed(0)
    model = make_transformer(width=32, layers=2, heads=2).eval()
    with torch.no_grad():
        for p in model.parameters():  # diffusers zero-inits some layers: make every path count
            p.add_(0.05 * torch.randn_like(p))
    sink = copy.deepcopy(model)
    use_t5_sink(sink)
    x, ctx = torch.randn(2, 8, 16, 16), torch.randn(2, 32, 128)
    kwargs = {"pooled_projections": torch.randn(2, 128), "timestep": torch.tensor([200.0, 800.0])}
    with torch.no_grad():
        full = torch.cat([ctx, torch.zeros(2, T5_SLOTS, 128)], dim=1)
        ref = model(hidden_states=x, encoder_hidden_states=full, **kwargs).sample
        short = sink(hidden_states=x, encoder_hidden_states=with_t5_sink(ctx), **kwargs).sample
        naive = model(hidden_states=x, encoder_hidden_states=with_t5_sink(ctx), **kwargs).sample
    assert float((short - ref).abs().max()) <= 1e-5
    assert float((naive - ref).abs().max()) > 1e-3  # the log-count bias is what makes it exact


@pytest.mark.parametrize("fast", [False, True])
def test_ode_episode_reproduces_the_pipeline_image(trained: Path, fast: bool) -> None:
    pipe = load_pipeline(trained)
    seed, steps = 3, 4
    ref = pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images[0]  # the stock pipeline: 256 zero T5 rows
    extra = t5_free_fast_path(pipe) if fast else {}
    env = gym.make(ENV_ID, model=pipe, prompts=[PROMPT], num_steps=steps, noise_level=0.0, **extra)
    image, info = _ode_episode(env, seed)
    assert image.shape == ref.shape == (64, 64, 3)
    assert float(np.abs(image - ref).max()) <= 1e-5
    assert info["std"] == 0.0 and info["log_prob"] == 0.0


@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_env_checkers_pass_in_sde_mode(pipe, action_mode: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(
        ENV_ID,
        model=pipe,
        prompts=[PROMPT],
        num_steps=2,
        noise_level=0.7,
        action_mode=action_mode,
        render_mode="rgb_array",
    )
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env.unwrapped, warn=False)
    env.reset(seed=0)
    info = env.step(env.action_space.sample())[4]
    assert info["std"] > 0 and np.isfinite(info["log_prob"])


def test_evaluate_generates_the_pipelines_images(pipe) -> None:
    from diffenvs.world.evaluate import generate

    images = generate(copy.deepcopy(pipe), [PROMPT, "one red circle"], [0, 1], 3, 4.0)
    ref = pipe(
        [PROMPT, "one red circle"],
        num_inference_steps=3,
        guidance_scale=4.0,
        latents=torch.stack(
            [torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
        ),
        output_type="np",
    ).images
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    assert int(np.abs(images.astype(int) - (ref * 255).round().astype(int)).max()) <= 1


def test_fast_path_refuses_pipelines_with_t5(tmp_path: Path) -> None:
    from tiny_flow import tiny_sd3

    with pytest.raises(ValueError, match="without T5"):
        t5_free_fast_path(tiny_sd3(with_t5=True))
