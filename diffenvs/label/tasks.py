"""Labeling tasks: reading and validating a tasks directory.

A tasks directory holds ``tasks.jsonl``, one task per line::

    {"task_id": "t0000", "prompt": "two red circles ...", "images": ["images/t0000_0.png", ...]}

Image paths are relative to the directory, must stay inside it (no ``..``, no absolute paths, no
symlinks pointing out) and must be PNG files. Every problem is reported with the file, line and
what to change, because a bad line found halfway through a labeling session wastes people's time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MIN_IMAGES, MAX_IMAGES = 2, 16
MAX_PROMPT_CHARS = 1000
MAX_PATH_CHARS = 1024
TASK_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: no "\n" tail
TASK_KEYS = {"task_id", "prompt", "images"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class TaskError(ValueError):
    """A task (file, line or JSON object) is malformed; the message says what to fix."""


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str
    images: tuple[str, ...]  # paths relative to ``root``, as written in tasks.jsonl
    root: Path  # the tasks directory (absolute)

    def image_path(self, k: int) -> Path:
        return safe_image_path(self.root, self.images[k])

    def to_json(self) -> dict[str, object]:
        return {"task_id": self.task_id, "prompt": self.prompt, "images": list(self.images)}


def safe_image_path(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refusing anything that would land outside ``root``."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or ".." in pure.parts or rel.startswith("~"):
        raise TaskError(
            f"Image path {rel!r} must be relative to the tasks directory and may not contain "
            "'..', backslashes or a leading '/' or '~'; move the image inside the directory."
        )
    if "\x00" in rel or len(rel) > MAX_PATH_CHARS:
        raise TaskError(
            f"Image path {rel[:60]!r}... has a NUL byte or more than {MAX_PATH_CHARS} characters; "
            "give the path of a PNG file inside the tasks directory."
        )
    root = root.resolve()
    try:
        path = (root / pure).resolve()
    except (OSError, ValueError) as err:  # e.g. a symlink loop, or a name the OS cannot encode
        raise TaskError(f"Image path {rel!r} cannot be resolved ({err}).") from None
    if not path.is_relative_to(root):  # a symlink that points out of the directory
        raise TaskError(f"Image path {rel!r} resolves to {path}, outside {root}; copy it inside.")
    return path


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_task(obj: object, root: Path, where: str = "task") -> Task:
    """Check one task object strictly and return it; raise :class:`TaskError` naming the problem."""
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    missing = TASK_KEYS - obj.keys()
    extra = obj.keys() - TASK_KEYS
    if missing:
        raise TaskError(
            f"{where}: missing key(s) {sorted(missing)}; every task needs {sorted(TASK_KEYS)}."
        )
    if extra:
        raise TaskError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed keys are {sorted(TASK_KEYS)}."
        )
    task_id, prompt, images = obj["task_id"], obj["prompt"], obj["images"]
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise TaskError(
            f"{where}: task_id {task_id!r} must be a string of 1-64 letters, digits, '_', '.' or "
            "'-' starting with a letter or digit."
        )
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise TaskError(
            f"{where} ({task_id}): prompt must be a non-empty string of at most "
            f"{MAX_PROMPT_CHARS} characters."
        )
    if not _is_unicode(prompt):
        raise TaskError(
            f"{where} ({task_id}): prompt holds an unpaired surrogate (a \\ud800-style escape); "
            "write the text as UTF-8."
        )
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise TaskError(f"{where} ({task_id}): images must be a list of relative PNG paths.")
    if not MIN_IMAGES <= len(images) <= MAX_IMAGES:
        raise TaskError(
            f"{where} ({task_id}): has {len(images)} images; a task needs {MIN_IMAGES} to "
            f"{MAX_IMAGES} images of the same prompt."
        )
    if len(set(images)) != len(images):
        raise TaskError(
            f"{where} ({task_id}): the same image path is listed twice; list each once."
        )
    for rel in images:
        try:
            path = safe_image_path(root, rel)
        except TaskError as err:
            raise TaskError(f"{where} ({task_id}): {err}") from None
        try:
            if not path.is_file():
                raise TaskError(f"{where} ({task_id}): image {rel!r} does not exist under {root}.")
            with path.open("rb") as f:
                magic = f.read(8)
        except OSError as err:  # unreadable, name too long, ...
            raise TaskError(f"{where} ({task_id}): cannot read image {rel!r} ({err}).") from None
        if magic != _PNG_MAGIC:
            raise TaskError(f"{where} ({task_id}): {rel!r} is not a PNG file; convert it to PNG.")
    return Task(task_id, prompt, tuple(images), root.resolve())


def load_tasks(tasks_dir: str | Path) -> list[Task]:
    """Read and validate ``tasks_dir/tasks.jsonl`` (all lines, task ids unique)."""
    root = Path(tasks_dir)
    path = root / "tasks.jsonl"
    if not root.is_dir():
        raise TaskError(
            f"Tasks directory {root} does not exist; create one with "
            "`diffenvs label demo-tasks DIR` or point to a folder holding tasks.jsonl."
        )
    if not path.is_file():
        raise TaskError(f"{root} has no tasks.jsonl; write one task per line (see docs/label.md).")
    tasks: list[Task] = []
    seen: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8.") from None
    except OSError as err:
        raise TaskError(f"Cannot read {path} ({err.strerror or err}).") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as err:  # also a 5,000-digit number, deep nesting
            reason = (
                err.msg
                if isinstance(err, json.JSONDecodeError)
                else "nested too deeply"
                if isinstance(err, RecursionError)
                else "a number with thousands of digits"
            )
            raise TaskError(
                f"{where}: not valid JSON ({reason}); fix or remove the line."
            ) from None
        task = validate_task(obj, root, where)
        if task.task_id in seen:
            raise TaskError(f"{where}: task_id {task.task_id!r} appears twice; ids must be unique.")
        seen.add(task.task_id)
        tasks.append(task)
    if not tasks:
        raise TaskError(f"{path} holds no tasks; add one JSON object per line.")
    return tasks
