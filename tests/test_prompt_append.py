"""PromptAppend-v0: API conformance, determinism, masks, rewards, caching, task sets, clear errors.

Most tests use the procedural renderer (``model="renderer"``, exact and fast) and a tiny
vocabulary; one test runs the embedded text-to-image model with 2 DDIM steps and one seed.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import diffenvs  # noqa: F401
from diffenvs.envs.prompt_append import PromptAppendEnv
from diffenvs.envs.prompt_tasks import PromptTask, load_task_file, split_of, world_tasks

VOCAB = ["striped", "dotted", "outlined", "glowing", "pastel"]
FAST = {
    "tasks": "world:test",
    "task": 0,
    "model": "renderer",
    "vocabulary": VOCAB,
    "generation_seeds": (0,),
}


def make(**kwargs) -> PromptAppendEnv:
    return gym.make("PromptAppend-v0", **{**FAST, **kwargs}).unwrapped


def allowed(env: PromptAppendEnv) -> int:
    return int(np.flatnonzero(env.action_masks())[0])


@pytest.mark.parametrize("observation", ["flat", "dict"])
def test_check_env_gymnasium_and_sb3(observation: str) -> None:
    # check_env samples actions without masks, so it runs with masked_action="redirect".
    env = make(
        observation=observation,
        observe_image=observation == "dict",
        masked_action="redirect",
        render_mode="rgb_array",
        task=None,
    )
    check_env(env, skip_render_check=False)
    sb3_check_env(env, warn=True)


def test_check_env_world_model() -> None:
    env = gym.make(
        "PromptAppend-v0",
        **{**FAST, "model": "world"},
        num_inference_steps=2,
        masked_action="redirect",
    )
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(allowed(env.unwrapped))
    assert terminated and not truncated and -1.0 <= reward <= 1.0
    assert info["image_similarity"] == pytest.approx(reward)


def test_same_seed_same_episode() -> None:
    def episode(seed: int) -> list:
        env = make(task=None)
        obs, info = env.reset(seed=seed)
        out = [obs, info["task"]]
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            obs, r, done, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
            out += [obs, r, info["prompt"]]
        return out

    a, b = episode(3), episode(3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    tasks = {episode(s)[1] for s in range(6)}
    assert len(tasks) > 1  # reset draws tasks from the set


def test_spaces_observation_and_reward_terminal_vs_per_step() -> None:
    env = make()
    obs, info = env.reset(seed=0)
    V, D = len(VOCAB), env.D
    assert env.action_space.n == V and obs.shape == (V + 1 + 2 * D,)
    assert info["prompt"] == env.task.seed_prompt and info["appended"] == ""
    np.testing.assert_allclose(obs[V + 1 + D :], env._target_embedding(env.task), atol=1e-6)
    obs, r1, done, _, info = env.step(0)
    assert r1 == 0.0 and not done and obs[0] == 1.0 and obs[V] == 0.5
    obs, r2, done, _, info = env.step(2)
    assert done and info["appended"] == "striped, outlined"
    assert info["prompt"] == env.task.seed_prompt + ", striped, outlined"
    assert r2 == pytest.approx(float(env.score(info["prompt"])["image_similarity"][0]))

    per_step = make(reward_mode="per_step", lambda_text=0.5)
    per_step.reset(seed=0)
    _, r, _, _, info = per_step.step(0)
    assert r == pytest.approx(info["image_similarity"] + 0.5 * info["text_similarity"])
    assert info["reward_evaluations"] == 1


def test_ground_truth_beats_seed_prompt_and_cache_hits() -> None:
    env = make(generation_seeds=(0, 1))
    env.reset(seed=0)
    s = env.score([env.task.seed_prompt, env.task.ground_truth])
    assert s["image_similarity"][1] > s["image_similarity"][0]
    assert s["text_similarity"][1] == pytest.approx(1.0, abs=1e-5)
    before = env.cache_stats.hits
    env.score([env.task.seed_prompt])
    assert env.cache_stats.hits == before + 2 and env.cache_stats.hit_rate > 0
    for _ in range(2):  # the same episode twice: the second is served from cache
        env.reset()
        env.step(0)
        _, _, _, _, info = env.step(1)
    assert info["cache_hit_rate"] > 0 and info["reward_evaluations"] == 2


def test_action_masks_forbid_repeats() -> None:
    env = make(vocabulary=[*VOCAB, "pastel, dotted"], n_appends=3)
    env.reset(seed=0)
    seed_words = env.task.seed_prompt.replace(",", " ").split()
    mask = env.action_masks()
    for w, m in zip(env.vocabulary, mask, strict=True):
        assert m == (w not in seed_words and f", {w}" not in env.task.seed_prompt)
    a = allowed(env)
    env.step(a)
    assert not env.action_masks()[a]
    with pytest.raises(ValueError, match=r"is masked.*action_masks\(\)"):
        env.step(a)


def test_masked_action_redirect() -> None:
    env = make(masked_action="redirect")
    env.reset(seed=0)
    a = allowed(env)
    env.step(a)
    _, _, _, _, info = env.step(a)
    assert info["redirected_from"] == a and len(set(env._tokens)) == 2


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (5, r"outside 0\.\.4.*5 words"),
        (-1, "outside"),
        (1.5, "one integer"),
        ([0, 1], "one integer"),
    ],
)
def test_bad_actions(action, match: str) -> None:
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_step_before_reset_and_after_end() -> None:
    env = make(n_appends=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(allowed(env))
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(allowed(env))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocabulary": []}, "vocabulary is empty"),
        ({"vocabulary": ["a", "a"]}, "twice"),
        ({"vocabulary": ["a", ""]}, "non-empty string"),
        ({"vocabulary": "nope"}, "Unknown vocabulary"),
        ({"vocabulary": ["striped"], "n_appends": 2}, "fewer than n_appends"),
        ({"n_appends": 0}, "n_appends must be"),
        ({"generation_seeds": ()}, "generation_seeds is empty"),
        ({"reward_mode": "dense"}, "Unknown reward_mode"),
        ({"task": 10_000}, "out of range"),
        ({"tasks": "nowhere"}, "Unknown task set"),
    ],
)
def test_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        env = make(**kwargs)
        env.reset(seed=0)


def test_world_tasks_split_and_categories() -> None:
    train, test = world_tasks("train"), world_tasks("test")
    assert world_tasks("test") == test  # deterministic
    gts = {t.ground_truth for t in train}
    assert not gts & {t.ground_truth for t in test}
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3
    for t in test:
        assert split_of(t.ground_truth) == "test" and len(t.removed) == 2
        assert t.category == "+".join(
            c for c in ("pattern", "effect", "finish") if c in t.category.split("+")
        )
        for m in t.removed:
            assert m in t.ground_truth and f", {m}" not in t.seed_prompt
    assert len({t.category for t in test}) == 3


def test_user_task_file(tmp_path) -> None:
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "target.png")
    rows = [
        {"seed_prompt": "one red star on a grass field", "target_image": "target.png"},
        {"seed_prompt": "two blue circles", "ground_truth": "two blue circles, glowing"},
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("# comment\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = load_task_file(path)
    assert tasks[0].target_image.shape == (64, 64, 3) and tasks[1].target_image is None
    env = make(tasks=str(path), task=0)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["category"] == "user"
    with pytest.raises(ValueError, match="lambda_text > 0 needs a ground-truth"):
        make(tasks=str(path), lambda_text=1.0)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "line 1 is not valid JSON"),
        ('{"target_image": "x.png"}', 'needs a non-empty "seed_prompt"'),
        ('{"seed_prompt": "a"}', 'needs "target_image"'),
        ('{"seed_prompt": "a", "target_image": "missing.png"}', "does not exist"),
        ('{"seed_prompt": "a", "target_image": "bad.png"}', "cannot read .* as an image"),
        ('{"seed_prompt": "a", "colour": "red"}', "unknown keys"),
        ("", "holds no tasks"),
    ],
)
def test_bad_task_files(tmp_path, content: str, match: str) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    path = tmp_path / "tasks.jsonl"
    path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_task_file(path)


def test_missing_task_file_and_bad_task() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task_file("/nonexistent/tasks.jsonl")
    with pytest.raises(ValueError, match="empty seed_prompt"):
        PromptTask(seed_prompt=" ", ground_truth="x")
    with pytest.raises(ValueError, match="neither a target image nor"):
        PromptTask(seed_prompt="x")


def test_captions_vocabulary_and_render() -> None:
    env = make(vocabulary="captions", vocab_size=8, render_mode="rgb_array")
    env.reset(seed=0)
    assert len(env.vocabulary) == 8 == env.action_space.n
    assert len(set(env.vocabulary)) == 8
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (64, 130, 3)


def test_extended_vocabulary_adds_colours_and_shapes() -> None:
    from diffenvs.envs.prompt_tasks import DEFAULT_VOCABULARY, EXTENDED_VOCABULARY

    env = make(vocabulary="extended", n_appends=3)
    env.reset(seed=0)
    assert env.vocabulary == list(EXTENDED_VOCABULARY) and len(env.vocabulary) == 26
    assert set(DEFAULT_VOCABULARY) < set(EXTENDED_VOCABULARY)
    # Words of the seed prompt (its colour and shape among them) are masked.
    seed_words = set(env.task.seed_prompt.replace(",", " ").split())
    masked = {w for w, ok in zip(env.vocabulary, env.action_masks(), strict=True) if not ok}
    assert masked == {w for w in env.vocabulary if w in seed_words}
    assert masked & {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"}


@pytest.mark.parametrize("observation", ["flat", "dict"])
def test_observe_candidates(observation: str) -> None:
    env = make(observe_candidates=True, observation=observation, masked_action="redirect")
    check_env(env)
    obs, _ = env.reset(seed=0)
    sims = env.candidate_similarities()
    assert sims.shape == (env.V,) and np.all(np.abs(sims) <= 1.0)
    observed = obs["candidate_similarity"] if observation == "dict" else obs[-env.V :]
    np.testing.assert_allclose(observed, sims, rtol=1e-5)
    # The similarity of word w is that of the prompt with w appended, and it costs no evaluation.
    text = env._text_embeddings([env.prompt_of([2])])[0] @ env._target_embedding(env.task)
    assert sims[2] == pytest.approx(float(text), rel=1e-5)
    spent = env.reward_evaluations
    env.step(allowed(env))  # not the last append: only the observation's similarities are new
    assert env.reward_evaluations == spent
    assert not np.allclose(env.candidate_similarities(), sims)
