"""GrammarGrid-v0: API conformance, dynamics, rewards, targets and clear errors.

Most tests use the procedural renderer (``model="renderer"``) and the exact detector, which need no
weights; tests of the oracle, CLIP and the text-to-image model skip only while those weights are
missing.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import diffenvs  # noqa: F401
from diffenvs.envs.grammar_grid import GrammarGridEnv, scene_of_state
from diffenvs.grammar import GrammarError, load_grammar
from diffenvs.world.paths import weights_path
from diffenvs.world.render import render

HAS_ORACLE = weights_path("oracle.safetensors").exists()
HAS_CLIP = (weights_path("clip") / "open_clip_model.safetensors").exists()
HAS_T2I = (weights_path("t2i") / "model_index.json").exists()
FAST = {"model": "renderer", "detector": "exact"}


def make(**kwargs) -> GrammarGridEnv:
    return gym.make("GrammarGrid-v0", **{**FAST, **kwargs}).unwrapped


@pytest.mark.parametrize("observation", ["coords", "coords_target", "image"])
def test_check_env_gymnasium_and_sb3(observation: str) -> None:
    env = make(grammar="tiny", observation=observation, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    sb3_check_env(env, warn=True)


def test_check_env_default_grid_registered() -> None:
    env = gym.make("GrammarGrid-v0", **FAST)
    assert env.spec.max_episode_steps == 100
    assert env.observation_space == gym.spaces.MultiDiscrete([3, 6, 8, 6])
    assert env.action_space == gym.spaces.Discrete(8)
    check_env(env.unwrapped)
    sb3_check_env(env.unwrapped)


def test_deterministic_for_a_seed() -> None:
    def rollout(seed: int) -> list:
        env = make(reward="partial_semantic")
        obs, info = env.reset(seed=seed)
        out = [obs.tolist(), info["prompt"]]
        actions = np.random.default_rng(0).integers(0, env.action_space.n, 30)
        for a in actions:
            obs, r, term, _trunc, info = env.step(int(a))
            out.append((obs.tolist(), r, term, info["distance"]))
            if term:
                break
        return out

    assert rollout(3) == rollout(3)
    starts = {tuple(make().reset(seed=s)[0].tolist()) for s in range(20)}
    assert len(starts) > 5  # starts are random across seeds


def test_actions_boundary_and_termination() -> None:
    env = make(target=(1, 1, 1, 1))
    env.reset(seed=0, options={"start": (0, 0, 0, 0)})
    obs, *_ = env.step(1)  # -1 on axis 0 at its lower edge: clipped, stays put
    assert obs.tolist() == [0, 0, 0, 0]
    obs, *_ = env.step(6)  # +1 on axis 3
    assert obs.tolist() == [0, 0, 0, 1]
    for a in (0, 2, 4):
        obs, _r, term, trunc, info = env.step(a)
    assert obs.tolist() == [1, 1, 1, 1] and term and not trunc
    assert info["is_success"] and info["distance"] == 0

    wrap = make(boundary="wrap", target=(1, 1, 1, 1))
    wrap.reset(seed=0, options={"start": (0, 0, 0, 0)})
    obs, *_ = wrap.step(1)
    assert obs.tolist() == [2, 0, 0, 0]
    assert wrap.distance((2, 1, 1, 1)) == 1  # around the wrapped edge


def test_start_is_never_the_target() -> None:
    env = make(grammar="tiny", target=(1, 2, 2))
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        assert tuple(obs.tolist()) != (1, 2, 2) and not info["is_success"]


def test_multi_semantic_reward_values() -> None:
    # target: two large green triangles on an ocean = (1, 3, 3, 1)
    env = make(target="two large green triangles in the middle of an ocean")
    assert env.target == (1, 3, 3, 1)
    assert env.reward_of((1, 3, 3, 1)) == pytest.approx(1.0)  # all match: 0 after shift, +1 goal
    assert env.reward_of((0, 0, 0, 0)) == pytest.approx(-3.0)  # nothing: 0 - 1 - (1 + 1)
    assert env.reward_of((1, 3, 0, 1)) == pytest.approx(2 / 3 + 1 - 2)  # colour wrong
    raw = make(target=(1, 3, 3, 1), relative_reward=False, goal_reward=0.0, fine_weight=3.0)
    assert raw.semantic_reward((1, 3, 3, 1)) == pytest.approx(4.0)  # eq. 2: C + C_s
    assert raw.reward_of((1, 0, 0, 0)) == pytest.approx(1.0 - 1.0)  # C/3 matched, scene wrong
    assert raw.reward_of((0, 0, 0, 1)) == pytest.approx(1.0)  # 0 fine, scene right


@pytest.mark.parametrize("name", ["partial_semantic", "2", 2])
def test_partial_semantic_reward_values(name) -> None:
    env = make(reward=name, target=(1, 3, 3, 1))
    assert env.reward_of((0, 0, 0, 1)) == pytest.approx(0.0)  # right scene: +C_s - C_s
    assert env.reward_of((1, 3, 3, 0)) == pytest.approx(-2.0)  # wrong scene: -C_s - C_s
    assert env.reward_of((1, 3, 3, 1)) == pytest.approx(1.0)
    _, info = env.reset(seed=0, options={"start": (1, 3, 3, 0)})
    assert info["fine_matches"] == 3 and info["scene_match"] is False


def test_target_forms_and_reset_option() -> None:
    env = make()
    assert env.target == (1, 2, 3, 2)  # default: the grid's centre
    env.reset(seed=0, options={"target": (2, 5, 7, 5)})
    assert env.target == (2, 5, 7, 5)
    assert env.reward_of((2, 5, 7, 5)) == pytest.approx(1.0)
    image = render(scene_of_state(env.grammar, (0, 1, 2, 3)), seed=0)
    assert env.prompt((0, 1, 2, 3)) == "one large yellow diamond in the middle of a desert"
    assert np.array_equal(env.state_image((0, 1, 2, 3)), np.asarray(image))


def test_renderer_cache_is_shared_and_precompute() -> None:
    env = make(grammar="tiny", detector="exact")
    env.precompute()
    n = env.cache_size
    assert n >= 18
    env2 = make(grammar="tiny", detector="exact")
    env2.state_image((1, 1, 1))
    assert env2.cache_size == n  # same source and seed: nothing new generated


def test_nine_fold_grid() -> None:
    env = make(grammar="default_9x")
    assert env.grammar.n_states == 9 * load_grammar("default").n_states
    assert env.action_space.n == 12
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)


def test_custom_text_grammar_with_exact_detector() -> None:
    text = "S -> Mood Thing\nMood -> calm | tense | angry\nThing -> cats | dogs"
    env = make(grammar=text, reward="multi_semantic", target=(2, 1))
    assert env.scene_axis is None and env.prompt((0, 0)) == "calm cats"
    assert env.reward_of((2, 1)) == pytest.approx(1.0)
    assert env.reward_of((0, 1)) == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"reward": "aesthetic"}, ["Unknown reward 'aesthetic'", "multi_semantic", "clip"]),
        ({"target": (0, 0, 9, 0)}, ["target", "outside the grid", "'Colour'", "0..7"]),
        ({"target": (0, 0)}, ["target", "4 integers"]),
        ({"target": "a blue ocean"}, ["names no value of slot"]),
        ({"observation": "pixels"}, ["Unknown observation 'pixels'"]),
        ({"boundary": "bounce"}, ["Unknown boundary 'bounce'", "clip", "wrap"]),
        ({"detector": "yolo"}, ["Unknown detector 'yolo'"]),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs, words) -> None:
    with pytest.raises(ValueError) as err:
        make(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_unsupported_render_mode() -> None:
    with pytest.raises(ValueError, match=r"render_mode=.ansi.*rgb_array"):
        GrammarGridEnv(**FAST, render_mode="ansi")


def test_bad_grammars_and_rewards() -> None:
    with pytest.raises(GrammarError, match="'Colour' has no values"):
        make(grammar={"rules": {"S": ["Colour"]}, "slots": {"Colour": []}})
    with pytest.raises(ValueError, match="no scene slot"):
        make(grammar="S -> Mood\nMood -> calm | tense", reward="partial_semantic")
    with pytest.raises(ValueError, match=r"cannot read slots \['Mood'\]"):
        make(grammar="S -> Mood\nMood -> calm | tense", detector="oracle")


def test_bad_actions_and_order() -> None:
    env = make()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    for bad in (8, -1, 1.5, [0, 1], "up"):
        with pytest.raises(ValueError, match="Action"):
            env.step(bad)
    with pytest.raises(ValueError, match="Unknown reset options"):
        env.reset(options={"goal": (0, 0, 0, 0)})
    with pytest.raises(ValueError, match="start"):
        env.reset(options={"start": (5, 0, 0, 0)})


@pytest.mark.skipif(not HAS_ORACLE, reason="oracle weights not trained yet")
def test_oracle_detector_and_image_target() -> None:
    env = make(detector="oracle", target=(1, 3, 3, 1))
    check_env(env)
    # A target given as an image is encoded back to its grid coordinates by the oracle.
    coords = [(1, 3, 3, 1), (0, 0, 0, 0), (2, 5, 7, 5), (1, 2, 5, 3), (0, 4, 1, 4)]
    hits = 0
    for c in coords:
        image = np.asarray(render(scene_of_state(env.grammar, c), seed=123))
        hits += make(detector="oracle", target=image).target == c
    assert hits >= 4
    _obs, info = env.reset(seed=0, options={"start": (1, 3, 3, 0)})
    assert info["scene_match"] is False


@pytest.mark.skipif(not HAS_CLIP, reason="CLIP weights not trained yet")
def test_clip_reward_and_zero_shot_target() -> None:
    env = make(reward="clip", target=(1, 3, 3, 1))
    check_env(env)
    best = env.reward_of((1, 3, 3, 1))
    assert best == pytest.approx(1.0, abs=1e-4)  # cos = 1 with its own image, plus the goal bonus
    assert env.reward_of((0, 0, 0, 4)) < env.reward_of((1, 3, 3, 1)) - 1.0
    image = np.asarray(render(scene_of_state(env.grammar, (1, 3, 3, 1)), seed=7))
    zero_shot = make(reward="clip", target=image, target_encoder="clip").target
    assert sum(a == b for a, b in zip(zero_shot, (1, 3, 3, 1), strict=True)) >= 3


@pytest.mark.skipif(not (HAS_T2I and HAS_ORACLE), reason="text-to-image or oracle weights missing")
def test_world_text_to_image_model_few_steps() -> None:
    env = gym.make(
        "GrammarGrid-v0",
        grammar="tiny",
        model="world",
        num_inference_steps=2,
        target=(1, 2, 2),
        render_mode="rgb_array",
    ).unwrapped
    env.reset(seed=0, options={"start": (0, 2, 2)})
    _, r, term, _, _ = env.step(0)
    assert term and r == pytest.approx(env.reward_of((1, 2, 2)))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3
    generated = env.cache_size
    with pytest.raises(RuntimeError, match="reset"):  # the episode is over
        env.step(1)
    env.reset(options={"start": (1, 2, 2)})
    env.step(1)
    env.step(0)  # back and forth over cached states: nothing new is generated
    assert env.cache_size == generated
