"""Preference learning: Bradley-Terry loss, data files, synthetic labelers, reward models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffenvs.preference import (
    RankedSet,
    SyntheticLabeler,
    TrainRewardConfig,
    bradley_terry_loss,
    dense_ranks,
    load_reward_model,
    read_sets,
    train_reward_model,
    write_sets,
)
from diffenvs.world.render import Scene, render

SHAPES = ("circle", "square", "star", "triangle")
COLOURS = ("red", "blue", "green", "yellow")


def test_bradley_terry_loss_hand_values() -> None:
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]))
    assert math.isclose(float(loss), -math.log(1 / (1 + math.exp(-1))), rel_tol=1e-6)
    # All pairs of a ranked set in one element: (0 > 1), (0 > 2); 1 and 2 tie and give no pair.
    s = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    loss = bradley_terry_loss(s, torch.tensor([0, 1, 1]))
    want = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(-1)))) / 2
    assert math.isclose(loss.item(), want, rel_tol=1e-6)
    loss.backward()
    assert s.grad[0] < 0 < s.grad[1]  # descent raises the winner and lowers the losers
    tied = bradley_terry_loss(torch.tensor([0.3, 0.1], requires_grad=True), torch.tensor([0, 0]))
    assert tied.item() == 0.0 and tied.requires_grad


def test_dense_ranks_with_ties() -> None:
    assert dense_ranks([0.1, 0.9, 0.5]) == [2, 0, 1]
    assert dense_ranks([0.50, 0.51, 0.1], tie_margin=0.02) == [0, 0, 1]


def _task_folder(root: Path, n_tasks: int, seed: int = 0) -> list[RankedSet]:
    """Rendered tasks: each prompt drawn four times, two of them blurred."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    sets = []
    for t in range(n_tasks):
        shape, colour = SHAPES[rng.integers(4)], COLOURS[rng.integers(4)]
        base = Scene("one", shape, colour, "large", "middle", "grass field")
        paths = []
        for k in range(4):
            scene = base.with_(modifiers=("blurred",)) if k % 2 else base
            rel = f"images/{t}_{k}.png"
            render(scene, int(rng.integers(1 << 30))).save(root / rel)
            paths.append(rel)
        sets.append(RankedSet(f"t{t}", base.caption(), paths, root=root))
    write_sets(root / "tasks.jsonl", sets)
    return sets


def test_files_round_trip_and_errors(tmp_path: Path) -> None:
    sets = _task_folder(tmp_path / "tasks", 2)
    assert read_sets(tmp_path / "tasks") == sets
    sets[0].ranks, sets[1].ranks = [0, 1, 1, 2], [1, 0, 0, 0]
    write_sets(tmp_path / "labels.jsonl", sets)  # another folder: paths are rewritten
    back = read_sets(tmp_path / "labels.jsonl", need_ranks=True)
    assert back[0].ranks == [0, 1, 1, 2] and back[0].load_images().shape == (4, 64, 64, 3)
    assert back[0].pairs() == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]

    bad = tmp_path / "bad.jsonl"
    for line, match in [
        ("{not json", "not valid JSON"),
        ('{"task_id": "a", "prompt": "p", "images": ["x.png"]}', "2 to 16"),
        ('{"task_id": "a", "prompt": "p", "images": ["a.png", "b.png"], "ranks": [0]}', "one int"),
        ('{"task_id": "a", "prompt": "p", "images": ["/etc/a.png", "b.png"]}', "relative"),
    ]:
        bad.write_text(line + "\n")
        with pytest.raises(ValueError, match=match):
            read_sets(bad)
    bad.write_text(json.dumps({"task_id": "a", "prompt": "p", "images": ["a.png", "b.png"]}))
    with pytest.raises(ValueError, match="'ranks' is missing"):
        read_sets(bad, need_ranks=True)
    with pytest.raises(FileNotFoundError, match="make-tasks"):
        read_sets(tmp_path / "nowhere")


def test_synthetic_labeler_prefers_attribute_and_is_seeded(tmp_path: Path) -> None:
    sets = _task_folder(tmp_path, 6)
    a = [SyntheticLabeler("blurred", seed=3).rank(s).ranks for s in sets]
    b = [SyntheticLabeler("blurred", seed=3).rank(s).ranks for s in sets]
    assert a == b
    # Blurred images (odd indices) beat sharp ones in almost every pair.
    wins = sum(r[k] < r[j] for r in a for k in (1, 3) for j in (0, 2))
    assert wins >= 0.8 * 4 * len(a)
    lab = SyntheticLabeler("blurred", noise=0.0, seed=0)
    ims = sets[0].load_images()
    assert lab.compare(ims[1], ims[0], sets[0].prompt) == "left"
    assert lab.compare(ims[0], ims[0], sets[0].prompt) == "tie"
    with pytest.raises(ValueError, match="names no world attribute"):
        SyntheticLabeler("sparkly")


@pytest.mark.parametrize("kind", ["clip-mlp", "latent"])
def test_reward_model_learns_saves_and_works_as_env_reward(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    labeler = SyntheticLabeler("blurred", seed=0)
    train = [labeler.rank(s) for s in _task_folder(tmp_path / "train", 16, seed=1)]
    held = [labeler.rank(s) for s in _task_folder(tmp_path / "held", 6, seed=2)]
    write_sets(tmp_path / "train.jsonl", train)
    write_sets(tmp_path / "held.jsonl", held)
    out = tmp_path / kind
    result = train_reward_model(
        TrainRewardConfig(
            tmp_path / "train.jsonl",
            out,
            model=kind,
            heldout_labels=tmp_path / "held.jsonl",
            epochs=25,
            learning_rate=3e-3,
        )
    )
    assert result["heldout_accuracy"] > 0.75
    model = load_reward_model(out)
    images = held[0].load_images()
    scores = model.score(images, [held[0].prompt] * 4)
    assert scores.shape == (4,)
    assert scores[1] + scores[3] > scores[0] + scores[2]  # blurred above sharp

    import gymnasium as gym

    import diffenvs  # noqa: F401

    env = gym.make("DiffusionDenoise-v0", num_steps=2, reward=f"learned:{out}")
    env.reset(seed=0)
    for _ in range(2):
        _, reward, terminated, _, _ = env.step(env.action_space.sample())
    assert terminated and np.isfinite(reward)


def test_reward_model_errors(tmp_path: Path) -> None:
    from diffenvs.rewards import make_reward

    with pytest.raises(FileNotFoundError, match="diffenvs preference train"):
        load_reward_model(tmp_path)
    with pytest.raises(ValueError, match="learned:PATH"):
        make_reward("learned")
    (tmp_path / "reward_model.json").write_text(json.dumps({"kind": "magic"}))
    with pytest.raises(ValueError, match="'kind' must be one of"):
        load_reward_model(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least 4"):
        (tmp_path / "l.jsonl").write_text(
            json.dumps(
                {"task_id": "a", "prompt": "p", "images": ["x.png", "x.png"], "ranks": [0, 1]}
            )
        )
        train_reward_model(TrainRewardConfig(tmp_path / "l.jsonl", tmp_path / "m"))


def test_make_tasks_writes_a_readable_folder(tmp_path: Path) -> None:
    from diffenvs.preference import make_tasks

    tasks = make_tasks(
        tmp_path, 2, images_per_task=2, num_inference_steps=2, eta=1.0, prompts="counts"
    )
    back = read_sets(tmp_path)
    assert back == tasks and back[1].load_images().shape == (2, 64, 64, 3)
    assert "," not in back[0].prompt  # count captions carry no style modifiers
    with pytest.raises(ValueError, match="'world' or 'counts'"):
        make_tasks(tmp_path, 1, prompts="nope")
    with pytest.raises(ValueError, match="images_per_task"):
        make_tasks(tmp_path, 1, images_per_task=1)


def test_make_tasks_mismatched_images_change_one_image_per_task(tmp_path: Path) -> None:
    from diffenvs.preference import make_tasks

    # eta = 0: with DDIM noise the step noise is not per image (see ImageGenerator).
    kw = {"images_per_task": 2, "num_inference_steps": 2, "eta": 0.0, "prompts": "counts"}
    plain = make_tasks(tmp_path / "plain", 3, **kw)
    mixed = make_tasks(tmp_path / "mixed", 3, mismatched=1, **kw)
    for a, b in zip(plain, mixed, strict=True):
        assert a.prompt == b.prompt  # the task still shows its own prompt
        same = [np.array_equal(x, y) for x, y in zip(a.load_images(), b.load_images(), strict=True)]
        assert sorted(same) == [False, True]  # one image from a changed prompt, one untouched
    with pytest.raises(ValueError, match=r"mismatched \+ styled must be in 0\.\.1"):
        make_tasks(tmp_path / "bad", 1, mismatched=2, **kw)


def test_varied_prompt_changes_one_attribute_or_adds_one_style() -> None:
    from diffenvs.preference.tasks import varied_prompt
    from diffenvs.world.attributes import MODIFIERS
    from diffenvs.world.render import parse_prompt

    prompt = "three small pink triangles on the left of a night sky"
    base = parse_prompt(prompt)
    rng = np.random.default_rng(0)
    for _ in range(20):
        changed = parse_prompt(varied_prompt(prompt, "attribute", rng))
        assert sum(changed.get(k) != v for k, v in base.items()) == 1
        styled = varied_prompt(prompt, "style", rng)
        assert styled.startswith(prompt + ", ") and styled.rsplit(", ", 1)[1] in MODIFIERS
    with pytest.raises(ValueError, match="does not name the world attributes"):
        varied_prompt("a cat", "style", rng)
