"""Where the embedded world's shipped weights live."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / name
