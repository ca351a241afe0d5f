"""Comparison data: task folders (a prompt and its images) and the rankings labelers give them.

A **tasks folder** holds ``tasks.jsonl``, one JSON object per line::

    {"task_id": "t0000", "prompt": "two red circles ...", "images": ["images/t0000_0.png", ...]}

(image paths relative to the file's folder). A **labels file** (``labels.jsonl``) holds the same
objects plus ``"ranks"`` (one int per image, 0 = best, tied images share a rank), ``"labeler"`` and
``"n_comparisons"``. One ranked set is one element of the Bradley-Terry loss (Kristiansen & Vågen 2023, eq. 5.1).
:func:`write_sets` rewrites image paths relative to the folder it writes into, so a labels file
can live anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from diffenvs.io import atomic_write_bytes
from diffenvs.label.tasks import MAX_IMAGES, MIN_IMAGES  # one definition of the task format


@dataclass
class RankedSet:
    """A prompt, its images (paths relative to ``root``) and, once labelled, their ranks."""

    task_id: str
    prompt: str
    images: list[str]
    ranks: list[int] | None = None
    labeler: str = ""
    n_comparisons: int = 0
    root: Path = field(default=Path("."), compare=False, repr=False)

    def load_images(self) -> np.ndarray:
        """uint8 (N, H, W, 3)."""
        out = []
        for rel in self.images:
            path = self.root / rel
            try:
                out.append(np.asarray(Image.open(path).convert("RGB")))
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"Task {self.task_id}: cannot read image {path} ({err}); check the tasks "
                    "folder is complete or regenerate it with `diffenvs preference make-tasks`."
                ) from err
        return np.stack(out)

    def pairs(self) -> list[tuple[int, int]]:
        """Every (better, worse) pair the ranking implies; tied images give no pair."""
        if self.ranks is None:
            raise ValueError(f"Task {self.task_id} has no ranks yet; label it first.")
        n = len(self.ranks)
        return [(i, j) for i in range(n) for j in range(n) if self.ranks[i] < self.ranks[j]]

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("root")
        if self.ranks is None:
            for key in ("ranks", "labeler", "n_comparisons"):
                d.pop(key)
        return d


_EXAMPLE = '{"task_id": "t0", "prompt": "...", "images": ["images/a.png", "images/b.png"]}'


def _validate(obj: object, where: str, need_ranks: bool) -> None:
    def fail(what: str) -> None:
        raise ValueError(f"{where}: {what}. Each line must be a JSON object like {_EXAMPLE}.")

    if not isinstance(obj, dict):
        fail("not a JSON object")
    for key, typ in (("task_id", str), ("prompt", str), ("images", list)):
        if not isinstance(obj.get(key), typ):
            fail(f"{key!r} is missing or not a {typ.__name__}")
    images = obj["images"]
    if not MIN_IMAGES <= len(images) <= MAX_IMAGES or not all(isinstance(p, str) for p in images):
        fail(f"'images' must list {MIN_IMAGES} to {MAX_IMAGES} image paths")
    if any(Path(p).is_absolute() for p in images):
        fail("image paths must be relative to the file's folder")
    ranks = obj.get("ranks")
    if need_ranks and ranks is None:
        fail("'ranks' is missing (this file should hold labelled tasks)")
    if ranks is not None:
        if not isinstance(ranks, list) or len(ranks) != len(images):
            fail("'ranks' must be a list with one int per image")
        if not all(isinstance(r, int) and r >= 0 for r in ranks):
            fail("'ranks' must be ints >= 0 (0 = best)")


def read_sets(
    path: str | Path, *, need_ranks: bool = False, images_root: str | Path | None = None
) -> list[RankedSet]:
    """Read ``tasks.jsonl`` or ``labels.jsonl`` (or the folder holding ``tasks.jsonl``).

    Image paths are relative to the file's folder, or to ``images_root`` when given (the tasks
    folder, for an export of the labeling app written elsewhere). A task may appear once per
    labeler.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tasks.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"No task or label file at {path}; make one with `diffenvs preference make-tasks`."
        )
    sets, seen = [], set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err}).") from err
        _validate(obj, where, need_ranks)
        key = (obj["task_id"], obj.get("labeler", ""))
        if key in seen:
            raise ValueError(
                f"{where}: task {key[0]!r} appears twice for labeler {key[1]!r}; keep one line "
                "per task and labeler."
            )
        seen.add(key)
        keep = {k: obj[k] for k in ("task_id", "prompt", "images")}
        keep |= {k: obj[k] for k in ("ranks", "labeler", "n_comparisons") if k in obj}
        root = Path(images_root) if images_root is not None else path.parent
        sets.append(RankedSet(**keep, root=root))
    if not sets:
        raise ValueError(f"{path} holds no tasks; it is empty.")
    return sets


def write_sets(path: str | Path, sets: Iterable[RankedSet]) -> None:
    """Write tasks or labels as JSON lines, atomically; image paths become relative to ``path``."""
    folder = Path(path).absolute().parent
    lines = []
    for s in sets:
        d = s.to_json()
        d["images"] = [os.path.relpath((s.root / p).absolute(), folder) for p in s.images]
        lines.append(json.dumps(d, sort_keys=True) + "\n")
    atomic_write_bytes(path, "".join(lines).encode())


def dense_ranks(utilities: Sequence[float], tie_margin: float = 0.0) -> list[int]:
    """Ranks (0 = best) from utilities; neighbours within ``tie_margin`` of each other tie."""
    order = np.argsort(-np.asarray(utilities, dtype=float), kind="stable")
    ranks = [0] * len(order)
    rank, prev = 0, None
    for i in order:
        if prev is not None and utilities[prev] - utilities[i] > tie_margin:
            rank += 1
        ranks[int(i)] = rank
        prev = i
    return ranks
