"""The JSON of one leaderboard cell (one task × entrant × seed), written by ``agents.bench.run``.

Schema ``diffenvs.leaderboard/1``, one file per cell, ``<out>/<task>/<entrant>/seed<k>.json``::

    schema        "diffenvs.leaderboard/1"
    task, entrant, seed
    budget        {"images": int, "seconds": float}
    world         world version the cell was measured on ("v1"), package version, git commit
    curve         [[images, seconds, reward], ...]  training curve (raw reward, per update)
    base          held-out evaluation of the base model: reward_mean, reward_std, kl_to_base (0),
                  diversity, prompt_following, independent (when the task has one)
    final         the same for the entrant's fine-tuned denoiser
    gain_base_std (final.reward_mean - base.reward_mean) / base.reward_std
    reward_at_seconds  the curve's reward at budget.seconds (mean of the last 3 points before it;
                  null if training had not produced a point by then)
    diversity_ratio    final.diversity / base.diversity (below 0.5: collapsed)
    train_seconds, peak_rss_gb, config
    machine       {"cpus", "load_start", "load_end"}: how busy the machine was (wall-clock depends on it)
    status        "ok", or "diverged": the policy left the model's range during training (the
                  entrant raised ``Diverged``); then ``final`` is empty and ``note`` says when
    note          why the cell is not "ok" ("" otherwise)

A cell file is written atomically; a cell whose file exists is not run again (``--overwrite``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "diffenvs.leaderboard/1"


@dataclass
class CellResult:
    task: str
    entrant: str
    seed: int
    budget: dict[str, float]
    curve: list[list[float]]
    base: dict[str, float]
    final: dict[str, float]
    train_seconds: float
    peak_rss_gb: float
    world: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, float] = field(default_factory=dict)
    """CPU count and 1-minute load average at the start and end of training: wall-clock numbers
    measured beside other jobs are slower, and this says by roughly how much."""
    status: str = "ok"
    note: str = ""
    schema: str = SCHEMA

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def gain_base_std(self) -> float:
        if self.diverged:
            return float("nan")
        std = self.base.get("reward_std") or float("nan")
        return (self.final["reward_mean"] - self.base["reward_mean"]) / std

    @property
    def diversity_ratio(self) -> float:
        if self.diverged:
            return float("nan")
        return self.final["diversity"] / (self.base.get("diversity") or float("nan"))

    @property
    def reward_at_seconds(self) -> float | None:
        before = [r for _, s, r in self.curve if s <= self.budget["seconds"]]
        return float(sum(before[-3:]) / len(before[-3:])) if before else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["gain_base_std"] = self.gain_base_std
        out["diversity_ratio"] = self.diversity_ratio
        out["reward_at_seconds"] = self.reward_at_seconds
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        if data.get("schema") != SCHEMA:
            raise ValueError(
                f"Leaderboard cell has schema {data.get('schema')!r}, expected {SCHEMA!r}; "
                "re-run the cell with this version (agents.bench.run --overwrite)."
            )
        derived = ("gain_base_std", "diversity_ratio", "reward_at_seconds")
        return cls(**{k: v for k, v in data.items() if k not in derived})


def cell_path(out: Path, task: str, entrant: str, seed: int) -> Path:
    return out / task / entrant / f"seed{seed}.json"


def load_cells(out: Path) -> list[CellResult]:
    """Every cell under ``out`` (sorted by task, entrant, seed)."""
    cells = [CellResult.from_json(json.loads(p.read_text())) for p in out.glob("*/*/seed*.json")]
    return sorted(cells, key=lambda c: (c.task, c.entrant, c.seed))
