"""Helpers for Gymnasium vector environments."""

from __future__ import annotations

from typing import Any

import numpy as np


def unbatch_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium vector infos (``{key: array, "_key": mask}``) → one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(n, dtype=bool))
        if isinstance(value, dict):
            nested = unbatch_infos(value, n)
            for i in np.flatnonzero(mask):
                out[i][key] = nested[i]
        else:
            for i in np.flatnonzero(mask):
                out[i][key] = value[i]
    return out
