"""The closing paragraph every ``diffenvs train`` command prints: what ran, its key numbers, and
where the outputs are.

Agents return a dict (see ``agents.common.contract``); this reads the keys they share: ``eval``
(numbers, or ``before``/``after`` dicts of numbers), ``train_time_s`` and ``run_dir``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# The numbers worth a line, in order of preference, when an evaluation reports many.
_KEY_NUMBERS = (
    "success_rate",
    "success",
    "reward_mean",
    "mean_return",
    "return_mean",
    "return",
    "accuracy",
    "oracle_accuracy",
    "final_distance",
    "mean_length",
    "length",
)


def _numbers(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def _pick(numbers: dict[str, float], n: int = 4) -> list[str]:
    keys = [k for k in _KEY_NUMBERS if k in numbers]
    keys += [k for k in numbers if k not in keys and not k.endswith("_s")]
    return keys[:n]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


def train_summary(name: str, cfg: Any, result: Any, seconds: float) -> str:
    """One paragraph: ``Trained NAME (...) in T. Evaluation: ... Outputs: FOLDER (files).``"""
    what = name
    for attr in ("preset", "algo", "reward"):
        value = getattr(cfg, attr, None)
        if value:
            what += f" {attr}={value}"
    lines = [f"Done: trained {what} in {_duration(seconds)}."]
    result = result if isinstance(result, dict) else {}
    ev = result.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("before"), dict):
        before, after = _numbers(ev["before"]), _numbers(ev.get("after"))
        shown = [
            f"{k} {_fmt(before[k])} -> {_fmt(after[k])}"
            for k in _pick({k: v for k, v in before.items() if k in after}, 3)
        ]
        if shown:
            lines.append("Held-out evaluation before -> after: " + "; ".join(shown) + ".")
    elif isinstance(ev, dict):
        numbers = _numbers(ev)
        shown = [f"{k} {_fmt(numbers[k])}" for k in _pick(numbers)]
        if shown:
            lines.append("Evaluation (greedy policy): " + ", ".join(shown) + ".")
    run_dir = result.get("run_dir")
    if run_dir:
        folder = Path(run_dir)
        files = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
        lines.append(f"Outputs: {folder.resolve()}" + (f" ({', '.join(files)})." if files else "."))
    elif "run_dir" in result:
        lines.append("Nothing was saved (--no-save).")
    return " ".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
