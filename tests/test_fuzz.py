"""Property-based fuzzing of every public boundary (docs/validation.md).

Generated malformed constructor kwargs, reset arguments, actions, images and files go to every
registered env, every reward and every loader. Each call must either work, with finite outputs
inside the declared spaces, or raise a documented error type (``diffenvs.errors.DOCUMENTED_ERRORS``)
with a message; anything else (IndexError, KeyError, OverflowError, a NaN reward...) fails.

Examples are few and derandomised so CI stays short and stable; set ``DIFFENVS_FUZZ_EXAMPLES`` to
run more (and ``DIFFENVS_FUZZ_RANDOM=1`` for fresh random examples). A short random-play soak per
env closes the file; ``benchmarks/soak.py`` runs a long one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from fuzz_support import arrays, call_contract, nasty
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_denoise import PROMPTS

import diffenvs  # noqa: F401
from diffenvs.envs.contract import check_observation, check_step_output, random_play
from diffenvs.rewards import make_reward

N = int(os.environ.get("DIFFENVS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    deadline=None,
    derandomize=os.environ.get("DIFFENVS_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
    database=None,
)


def examples(default: int) -> settings:
    return settings(FUZZ, max_examples=N or default)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Valid choices per kwarg (mixed with hostile values), and the fixed fast settings of each env.
BAD_MODELS = [None, 5, "", "no-such-org/no-such-model", object()]
DENOISE_KWARGS = {
    "prompts": [PROMPTS, ["one red circle"], "world", "world:heldout", [""], [3], "nonsense"],
    "num_steps": [1, 2, 3],
    "scheduler": ["ddim", "ddpm", "euler"],
    "eta": [0.0, 0.5, 1.0],
    "guidance_scale": [1.0, 4.0],
    "negative_prompt": [None, "blurry"],
    "reward": ["colourfulness", "zero", "jpeg_compressibility", "target_rmse", "oracle"],
    "reward_kwargs": [None, {"quality": 50}, {"n_hue_bins": 3}],
    "reward_standardisation": [None, (0.0, 1.0), (1.0, 0.0), (np.nan, 1.0)],
    "kl_coef": [0.0, 0.1],
    "action_mode": ["noise", "latent"],
    "device": [None, "cpu"],
    "dtype": [None, torch.float32],
    "action_bound": [6.0, 1.0],
    "render_mode": [None, "rgb_array", "ansi"],
}
GRID_KWARGS = {
    "grammar": ["tiny"],
    "target": [None, (1, 1, 1), "one red circle", (0, 0)],
    "reward": ["multi_semantic", 1, 2, "partial_semantic", 7],
    "target_encoder": ["oracle"],
    "observation": ["coords", "coords_target", "image"],
    "boundary": ["clip", "wrap"],
    "fine_weight": [1.0, 0.5],
    "scene_weight": [1.0, 2.0],
    "relative_reward": [True, False],
    "goal_reward": [1.0, 0.0],
    "generation_seed": [0, 3],
    "num_inference_steps": [1, 20],
    "guidance_scale": [4.0],
    "scene_slot": [None, "Scene", "nope"],
    "precompute": [False, True],
    "render_mode": [None, "rgb_array"],
}
APPEND_KWARGS = {
    "tasks": ["world:test", "world:nope"],
    "task": [None, 0, 1],
    "vocabulary": ["default", ["striped", "dotted", "outlined"], ["a", "a"]],
    "vocab_size": [12, 3],
    "n_appends": [1, 2],
    "reward_mode": ["terminal", "per_step"],
    "lambda_image": [1.0, 0.5],
    "lambda_text": [0.0, 0.5],
    "generation_seeds": [(0,), (1, 2)],
    "target_seed": [1000],
    "num_inference_steps": [20],
    "guidance_scale": [4.0],
    "observation": ["flat", "dict"],
    "observe_image": [False, True],
    "observe_candidates": [False, True],
    "masked_action": ["raise", "redirect"],
    "separator": [", ", " "],
    "render_mode": [None, "rgb_array"],
}


@st.composite
def kwargs_for(draw, choices: dict[str, list], fixed: dict, bad_models: bool = True) -> dict:
    """Some kwargs of an env: each a valid choice or (often) a hostile value."""
    names = draw(st.lists(st.sampled_from(sorted(choices)), max_size=4, unique=True))
    out = dict(fixed)
    for name in names:
        # gym.make itself calls str methods on render_mode, and wraps "human" in a pygame window
        # (Gymnasium's code, not ours), so only other str/None values are thrown at it.
        text = st.text(max_size=8).filter(lambda t: t != "human")
        bad = text if name == "render_mode" else nasty
        out[name] = draw(st.one_of(st.sampled_from(choices[name]), bad))
    if bad_models and draw(st.integers(0, 9)) == 0:
        out["model"] = draw(st.sampled_from(BAD_MODELS))
    return out


def exercise(env: gym.Env, steps: int, rng_seed: int) -> None:
    """Reset and step a freshly made env with valid actions, checking every output."""
    obs, _ = env.reset(seed=rng_seed)
    check_observation(env, obs)
    env.action_space.seed(rng_seed)
    base = env.unwrapped
    for _ in range(steps):
        if hasattr(base, "action_masks"):
            action = int(np.flatnonzero(base.action_masks())[0])
        else:
            action = env.action_space.sample()
        if check_step_output(env, env.step(action)):
            break


def try_env(env_id: str, kwargs: dict, steps: int) -> None:
    ok, env = call_contract(lambda: gym.make(env_id, **kwargs))
    if ok:
        call_contract(lambda: exercise(env, steps, 0))


# ------------------------------------------------------------------------ constructor kwargs
@examples(25)
@given(data=st.data())
def test_fuzz_denoise_kwargs(pipe, data):
    kwargs = data.draw(
        kwargs_for(DENOISE_KWARGS, {"model": pipe, "prompts": PROMPTS, "num_steps": 2})
    )
    try_env("DiffusionDenoise-v0", kwargs, steps=3)


@examples(30)
@given(
    kwargs=kwargs_for(GRID_KWARGS, {"grammar": "tiny", "model": "renderer", "detector": "exact"})
)
def test_fuzz_grammar_grid_kwargs(kwargs):
    try_env("GrammarGrid-v0", kwargs, steps=5)


@examples(25)
@given(
    kwargs=kwargs_for(
        APPEND_KWARGS,
        {
            "tasks": "world:test",
            "model": "renderer",
            "vocabulary": ["striped", "dotted", "outlined"],
            "generation_seeds": (0,),
        },
    )
)
def test_fuzz_prompt_append_kwargs(kwargs):
    try_env("PromptAppend-v0", kwargs, steps=3)


# ---------------------------------------------------------------------- reset and actions
@pytest.fixture(scope="module")
def envs(pipe):
    return {
        "denoise": gym.make(
            "DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, num_steps=2, reward="colourfulness"
        ),
        "denoise_latent": gym.make(
            "DiffusionDenoise-v0",
            model=pipe,
            prompts=PROMPTS,
            num_steps=2,
            reward="colourfulness",
            action_mode="latent",
        ),
        "grid": gym.make("GrammarGrid-v0", grammar="tiny", model="renderer", detector="exact"),
        "append": gym.make(
            "PromptAppend-v0",
            tasks="world:test",
            model="renderer",
            vocabulary=["striped", "dotted", "outlined"],
            generation_seeds=(0,),
            masked_action="raise",
        ),
    }


def actions_for(name: str):
    if name.startswith("denoise"):
        shape = (4, 8, 8)
        return st.one_of(
            arrays(shape),
            arrays(),
            nasty,
            st.floats(-1e5, 1e5).map(lambda v: np.full(shape, v, np.float32)),
        )
    return st.one_of(st.integers(-5, 10), st.floats(allow_nan=True), arrays(), nasty)


@pytest.mark.parametrize("name", ["denoise", "denoise_latent", "grid", "append"])
@examples(40)
@given(data=st.data())
def test_fuzz_actions(envs, name, data):
    env = envs[name]
    env.reset(seed=data.draw(st.integers(0, 2**16)))
    for _ in range(3):
        action = data.draw(actions_for(name))
        ok, out = call_contract(lambda action=action: env.step(action))
        if ok and check_step_output(env, out):
            break


@pytest.mark.parametrize("name", ["denoise", "grid", "append"])
@examples(25)
@given(
    seed=st.one_of(st.none(), st.integers(0, 2**63 - 1), nasty),
    options=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["prompt", "latents", "start", "target", "task", "x"]),
            nasty,
            max_size=2,
        ),
    ),
)
def test_fuzz_reset(envs, name, seed, options):
    env = envs[name]
    ok, out = call_contract(lambda: env.reset(seed=seed, options=options))
    if ok:
        check_observation(env, out[0])


# ------------------------------------------------------------------------------- rewards
MODEL_FREE = [
    "colourfulness",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "target_rmse",
    "zero",
]


@examples(60)
@given(
    name=st.sampled_from([*MODEL_FREE, "oracle"]),
    images=st.one_of(
        arrays(),
        arrays((2, 3, 8, 8)),
        arrays((1, 8, 8, 3)),
        st.builds(lambda a: torch.from_numpy(np.ascontiguousarray(a)), arrays((1, 3, 8, 8))),
        nasty,
    ),
    prompts=st.one_of(st.none(), st.text(max_size=5), st.lists(nasty, max_size=3)),
)
def test_fuzz_reward_calls(name, images, prompts):
    reward = make_reward(name)
    ok, scores = call_contract(lambda: reward(images, prompts))
    if ok:
        assert scores.ndim == 1 and torch.isfinite(scores).all()


@examples(60)
@given(
    spec=st.one_of(
        st.sampled_from([*MODEL_FREE, "oracle", "aesthetic", "learned", "clip_image", "nope"]),
        st.builds(
            lambda n, a: f"{n}:{a}",
            st.sampled_from([*MODEL_FREE, "oracle", "aesthetic", "learned"]),
            st.text(max_size=8),
        ),
        nasty,
    ),
    kwargs=st.dictionaries(
        st.sampled_from(
            [
                "quality",
                "sign",
                "n_hue_bins",
                "vivid_threshold",
                "scale",
                "adjust",
                "target",
                "soft",
                "device",
                "weights",
                "bogus",
            ]
        ),
        nasty,
        max_size=2,
    ),
)
def test_fuzz_reward_construction(spec, kwargs):
    ok, reward = call_contract(lambda: make_reward(spec, **kwargs))
    if ok:
        image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        ok, scores = call_contract(lambda: reward(image, ["one red circle"]))
        if ok:
            assert torch.isfinite(scores).all()


# --------------------------------------------------------------------------------- files
file_bytes = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    st.sampled_from(
        [
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
            b'{"seed_prompt": "a red circle", "target_image": "x.png"}',
            b'{"seed_prompt": "a", "ground_truth": "one red circle"}\n[1, 2]',
            b'{"slots": {"A": ["x", "y"]}, "rules": {"S": ["A"]}, "start": "S"}',
            b'{"slots": []}',
            b"S -> A\nA -> x | y",
            b"S -> A\nA[colour] -> nope",
            b'["one red circle", 3]',
            b'{"prompt": 1}',
            b"\xff\xfe\x00bad utf8",
            b"",
        ]
    ),
)


def _loaders(path: Path):
    from diffenvs.envs.denoise_prompts import make_prompt_source
    from diffenvs.envs.prompt_tasks import load_prompt_tasks
    from diffenvs.grammar import load_grammar
    from diffenvs.io import load_tensors
    from diffenvs.models import load_aesthetic, load_oracle
    from diffenvs.preference.reward_model import load_reward_model
    from diffenvs.rewards import load_target_image

    return {
        "prompts": lambda: make_prompt_source(str(path)).sample(np.random.default_rng(0)),
        "tasks": lambda: load_prompt_tasks(str(path)),
        "grammar": lambda: load_grammar(str(path)),
        "tensors": lambda: load_tensors(path),
        "aesthetic": lambda: load_aesthetic(path),
        "oracle": lambda: load_oracle(path),
        "reward_model": lambda: load_reward_model(path.parent),
        "target": lambda: load_target_image(str(path)),
    }


@examples(80)
@given(
    content=file_bytes,
    suffix=st.sampled_from([".txt", ".json", ".jsonl", ".png", ".safetensors", ".pth", ""]),
    loader=st.sampled_from(
        ["prompts", "tasks", "grammar", "tensors", "aesthetic", "oracle", "reward_model", "target"]
    ),
)
def test_fuzz_files(tmp_path_factory, content, suffix, loader):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"file{suffix}"
    path.write_bytes(content)
    (folder / "x.png").write_bytes(content)  # what a task file's target_image points at
    (folder / "reward_model.json").write_bytes(content)
    call_contract(_loaders(path)[loader])


def test_grid_target_image_files(tmp_path):
    """Every image suffix GrammarGrid reads, with garbage inside: a ValueError, never a crash."""
    for suffix in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        path = tmp_path / f"t{suffix}"
        path.write_bytes(b"garbage" * 3)
        with pytest.raises(ValueError, match="Cannot read target image"):
            gym.make("GrammarGrid-v0", grammar="tiny", model="renderer", target=str(path))


def test_reward_model_config_must_be_an_object(tmp_path):
    from diffenvs.preference.reward_model import load_reward_model

    (tmp_path / "reward_model.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        load_reward_model(tmp_path)


# ---------------------------------------------------------------------------------- soak
@pytest.mark.parametrize(("name", "steps"), [("denoise", 12), ("grid", 300), ("append", 40)])
def test_random_play_soak(envs, name, steps):
    stats = random_play(envs[name], steps, seed=1)
    assert stats["steps"] == steps
