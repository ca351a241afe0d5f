"""Input checks shared by the discrete-action environments."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffenvs.errors import summarise


def discrete_action(action: Any, n: int, meaning: str, outside: str) -> int:
    """``action`` as an int in ``0..n-1``, or a ValueError that says what the actions are.

    Accepts numpy scalars and integral floats (what vectorised wrappers and SB3 pass).
    ``meaning`` explains an action (shown when it is not one integer); ``outside`` explains the
    range (shown when it is out of range).
    """
    try:
        arr = np.asarray(action)
    except (ValueError, TypeError):  # ragged nesting
        arr = np.empty(0, dtype=object)
    if arr.size != 1 or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and float(arr.reshape(-1)[0]).is_integer())
    ):
        raise ValueError(
            f"Action {summarise(action)} must be one integer in 0..{n - 1} ({meaning})."
        )
    a = int(arr.reshape(-1)[0])
    if not 0 <= a < n:
        raise ValueError(f"Action {a} is outside 0..{n - 1}{outside}.")
    return a
