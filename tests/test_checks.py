"""The discrete-action check shared by PromptAppend-v0 and GrammarGrid-v0."""

from __future__ import annotations

import numpy as np
import pytest

from diffenvs.envs.checks import discrete_action


@pytest.mark.parametrize("action", [3, np.int64(3), np.array([3]), 3.0, np.float32(3.0)])
def test_discrete_action_accepts_integral_values(action: object) -> None:
    assert discrete_action(action, 5, "an index", "") == 3


@pytest.mark.parametrize("action", [1.5, [1, 2], "3", None])
def test_discrete_action_rejects_non_integers_and_says_what_an_action_is(action: object) -> None:
    with pytest.raises(ValueError, match=r"must be one integer in 0\.\.4 \(an index\)"):
        discrete_action(action, 5, "an index", "")


@pytest.mark.parametrize("action", [-1, 5])
def test_discrete_action_rejects_out_of_range_with_the_hint(action: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.4: five words"):
        discrete_action(action, 5, "an index", ": five words")
