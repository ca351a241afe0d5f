"""Run folders: where an agent writes its weights, progress and report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any


def run_dir(output_dir: str, run_name: str | None, default_name: str) -> Path:
    """``output_dir/run_name``, or ``output_dir/default_name`` when no run name was given."""
    return Path(output_dir) / (run_name or default_name)


def config_json(cfg: Any, default: Callable[[Any], Any] = str) -> str:
    """A config dataclass as JSON (for safetensors metadata); ``default`` formats other values."""
    return json.dumps(asdict(cfg), default=default)
