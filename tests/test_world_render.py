"""The procedural renderer and the world's vocabulary."""

import numpy as np
import pytest

from diffenvs.world import (
    ATTRIBUTE_CLASSES,
    COLOURS,
    COUNTS,
    MODIFIER_CATEGORIES,
    MODIFIERS,
    SCENES,
    SHAPES,
    Scene,
    is_held_out,
    parse_prompt,
    render,
    sample_scenes,
)


def test_vocabulary_sizes_meet_the_spec():
    assert COUNTS == ("one", "two", "three")
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8 and len(SCENES) >= 6
    assert len(MODIFIERS) >= 8 and len(MODIFIER_CATEGORIES) >= 3


def test_render_is_deterministic_for_a_seed_and_varies_across_seeds():
    scene = Scene("two", "star", "red", "small", "left", "grass field", ("striped", "glowing"))
    a, b = np.asarray(render(scene, 3)), np.asarray(render(scene, 3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(render(scene, 4)))


@pytest.mark.parametrize("modifier", MODIFIERS)
def test_every_modifier_visibly_changes_the_image(modifier):
    base = Scene("one", "square", "blue", "large", "middle", "desert")
    plain = np.asarray(render(base, 0), np.float32)
    styled = np.asarray(render(base.with_(modifiers=(modifier,)), 0), np.float32)
    # At least 40 pixels (1 % of the image) change by more than 40 grey levels.
    changed = (np.abs(plain - styled).sum(-1) > 40).sum()
    assert changed >= 40, (modifier, changed)


@pytest.mark.parametrize(
    ("attr", "values"),
    [
        ("shape", SHAPES),
        ("colour", COLOURS),
        ("scene", SCENES),
        ("count", COUNTS),
        ("size", ("small", "large")),
    ],
)
def test_every_attribute_value_changes_the_image(attr, values):
    base = Scene("one", "circle", "red", "large", "middle", "grass field")
    images = [np.asarray(render(base.with_(**{attr: v}), 0), np.float32) for v in values]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.5, (values[i], values[j])


def test_caption_reads_like_a_prompt_and_parses_back():
    scene = Scene("two", "circle", "red", "small", "left", "grass field", ("glowing", "striped"))
    assert scene.caption() == "two small red circles on the left of a grass field, striped, glowing"
    parsed = parse_prompt(scene.caption())
    assert (
        parsed["count"] == "two"
        and parsed["shape"] == "circle"
        and parsed["scene"] == "grass field"
    )
    assert parsed["modifiers"] == ["striped", "glowing"]


def test_labels_index_the_oracle_classes():
    scene = Scene("three", "star", "pink", "large", "right", "brick wall", ("pastel",))
    labels = scene.labels()
    assert set(labels) == set(ATTRIBUTE_CLASSES)
    assert ATTRIBUTE_CLASSES["finish"][labels["finish"]] == "pastel"
    assert ATTRIBUTE_CLASSES["pattern"][labels["pattern"]] == "none"


def test_bad_scenes_raise_clear_errors():
    with pytest.raises(ValueError, match="shape='hexagon'"):
        Scene(shape="hexagon")
    with pytest.raises(ValueError, match="two 'finish' modifiers"):
        Scene(modifiers=("pastel", "blurred"))
    with pytest.raises(ValueError, match="Unknown style modifier"):
        Scene(modifiers=("sparkly",))
    with pytest.raises(ValueError, match="split must be"):
        sample_scenes(3, 0, split="test")


def test_held_out_split_is_fixed_and_about_ten_percent():
    captions = [s.caption() for s in sample_scenes(3000, seed=0, split="any")]
    share = np.mean([is_held_out(c) for c in captions])
    assert 0.07 < share < 0.13
    assert all(is_held_out(s.caption()) for s in sample_scenes(20, seed=1, split="heldout"))
    assert not any(is_held_out(s.caption()) for s in sample_scenes(20, seed=1, split="train"))


def test_scene_from_prompt_keeps_defaults_and_the_later_modifier_of_a_category() -> None:
    from diffenvs.world.render import Scene, scene_from_prompt

    scene = scene_from_prompt("two small blue stars on a beach, striped, dotted, glowing")
    assert (scene.count, scene.size, scene.colour, scene.shape) == ("two", "small", "blue", "star")
    assert scene.position == Scene().position  # not named: the default
    assert set(scene.modifiers) == {"dotted", "glowing"}  # dotted replaced striped (pattern)
