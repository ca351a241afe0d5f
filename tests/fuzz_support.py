"""Hostile inputs for the fuzz tests (tests/test_fuzz.py) and the contract every public call keeps:
it works or raises a documented error type (diffenvs.errors.DOCUMENTED_ERRORS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from diffenvs.errors import DOCUMENTED_ERRORS

_ARRAYS = [
    np.zeros((2, 2)),
    np.full((3,), np.inf),
    np.full((4, 8, 8), np.nan, np.float32),
    np.zeros((8, 8), np.uint8),
    np.array(["a", "b"]),
    np.array(3),
]
_ODD = [object(), b"bytes", {"a": 1}, (1, 2), np.float32(np.nan), np.int64(-1), np.bool_(True)]

#: Values no argument should silently accept (as well as some it may).
nasty = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**63, 2**64, 1e30, -1e30, 1e-300]),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=4),
    st.sampled_from(_ARRAYS + _ODD),
)


@st.composite
def arrays(draw: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Arrays of assorted dtype and shape (``shape`` given: that shape, hostile values)."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int64, bool]))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    size = int(np.prod(shape)) if shape else 1
    fill = draw(st.sampled_from(["zeros", "normal", "nan", "inf", "huge", "one_nan", "uniform255"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = {
        "zeros": np.zeros(size),
        "normal": rng.standard_normal(size),
        "nan": np.full(size, np.nan),
        "inf": np.full(size, np.inf),
        "huge": np.full(size, 1e30),
        "one_nan": np.concatenate([rng.standard_normal(max(size - 1, 0)), [np.nan]])[:size],
        "uniform255": rng.uniform(0, 255, size),
    }[fill]
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype).reshape(shape)


def call_contract(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``fn``: (True, result) if it works, (False, error) if it raises a documented error;
    any other exception propagates and fails the test."""
    try:
        return True, fn()
    except DOCUMENTED_ERRORS as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        assert len(str(err)) < 3000, f"an error message of {len(str(err))} characters"
        return False, err
