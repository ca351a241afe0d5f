"""Where the embedded world's shipped weights live."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: The version of the shipped world models; every results page names the version it measured.
WORLD_VERSION = "v2.1"


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / name
