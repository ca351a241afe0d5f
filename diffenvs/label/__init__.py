"""Preference labeling: a small web app where people order a task's images by pairwise comparison.

* :mod:`~diffenvs.label.tasks`   — the tasks directory format and its validation
* :mod:`~diffenvs.label.sorting` — binary insertion sort with ties, replayed from stored answers
* :mod:`~diffenvs.label.store`   — SQLite: every answer committed as it is given
* :mod:`~diffenvs.label.session` — next question, answer, undo, progress, export
* :mod:`~diffenvs.label.server`  — the HTTP server (stdlib) and its JSON API
* :mod:`~diffenvs.label.demo`    — demo tasks from the world's procedural renderer

Run it with ``diffenvs label serve TASKS_DIR`` (see docs/label.md).
"""

from diffenvs.label.session import Labeling
from diffenvs.label.sorting import Answer, SortState, max_comparisons, replay
from diffenvs.label.store import Store
from diffenvs.label.tasks import Task, TaskError, load_tasks

__all__ = [
    "Answer",
    "Labeling",
    "SortState",
    "Store",
    "Task",
    "TaskError",
    "load_tasks",
    "max_comparisons",
    "replay",
]
