"""Pieces of the AI-feedback miniature (benchmarks/direct_miniature.py) that need no model.

Behaviour: styled comparison tasks can be restricted to the labeler's preferred style (a clear
error for an unknown one); the win rate counts ties as half.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _miniature():
    spec = importlib.util.spec_from_file_location(
        "direct_miniature", ROOT / "benchmarks" / "direct_miniature.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_styled_prompts_can_be_restricted_to_the_preferred_style() -> None:
    from diffenvs.preference.tasks import varied_prompt

    prompt = "two large blue stars on the right of a desert"
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert varied_prompt(prompt, "style", rng, ("pastel",)) == prompt + ", pastel"
    styled = {varied_prompt(prompt, "style", rng, ("glowing", "pastel")) for _ in range(40)}
    assert styled == {prompt + ", glowing", prompt + ", pastel"}
    # A style whose category the prompt already uses cannot be appended: the prompt is unchanged.
    assert varied_prompt(prompt + ", blurred", "style", rng, ("pastel",)) == prompt + ", blurred"
    with pytest.raises(ValueError, match="Unknown style modifiers"):
        varied_prompt(prompt, "style", rng, ("sparkly",))


def test_default_styles_draw_as_before() -> None:
    from diffenvs.preference.tasks import varied_prompt

    prompt = "one small red circle in the middle of an ocean"
    a = [varied_prompt(prompt, "style", np.random.default_rng(3)) for _ in range(3)]
    b = [varied_prompt(prompt, "style", np.random.default_rng(3), None) for _ in range(3)]
    assert a == b


def test_win_rate_counts_ties_as_half() -> None:
    win_rate = _miniature().win_rate
    before = np.array([0.1, 0.5, 0.5, 0.9])
    after = np.array([0.2, 0.5, 0.4, 0.9])
    assert win_rate(before, after) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_direct_options_typed_on_the_command_line_win_over_the_preset() -> None:
    from dataclasses import replace

    from agents.direct.config import resolve_config

    mini = _miniature()
    argv = [
        "--seed",
        "1",
        "--direct.kl-coef",
        "0",
        "--direct.refl-min-step=0.9",
        "--direct.no-save",
    ]
    explicit = mini.direct_options_in_argv(argv)
    assert explicit == ("kl_coef", "refl_min_step", "save")
    # kl_coef 0 is DirectConfig's default, yet the preset's 0.01 must not replace it.
    cfg = resolve_config(replace(mini.MINIATURE, kl_coef=0.0, explicit=explicit))
    assert cfg.kl_coef == 0.0
    assert resolve_config(mini.MINIATURE).kl_coef == 0.01


def test_reward_model_names_tell_their_data_apart() -> None:
    mini = _miniature()
    base = mini.MiniatureConfig(preference="pastel")
    assert mini._suffix(base) == ""
    styled = mini.MiniatureConfig(preference="pastel", styled_tasks=300, styled_modifier="pastel")
    assert mini._suffix(styled) == "-styled300-pastel"
    more = mini.MiniatureConfig(
        preference="pastel", train_tasks=600, styled_tasks=600, styled_per_task=2
    )
    assert mini._suffix(more) == "-train600-styled600x2"
    checked = mini.MiniatureConfig(preference="pastel", augmented_tasks=300, mismatched_tasks=300)
    assert mini._suffix(checked) == "-washed300-mismatched300"
    # Tasks and reward models of another world version are never reused.
    from diffenvs.world.paths import WORLD_VERSION

    assert WORLD_VERSION in str(base.work)
