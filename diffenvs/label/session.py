"""What a labeler sees and does: next question, answer, undo, progress, export.

Multi-labeler semantics: every labeler orders every task independently. Answers are keyed by
labeler name, each labeler's state is the replay of their own answers only, so two people labeling
at once never touch each other's questions; the export holds one line per (labeler, finished task).
A labeler works through the tasks in import order; their current task is the first one they have
not fully ordered, so undoing the last answer of a finished task takes them back to it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from diffenvs.io import atomic_write_bytes
from diffenvs.label.sorting import Answer, SortState, replay
from diffenvs.label.store import Store, StoredAnswer
from diffenvs.label.tasks import Task

MAX_GAP_SECONDS = 120.0
"""Gaps between answers longer than this are breaks, not labeling time (time-left estimate)."""


class Conflict(Exception):
    """The request no longer matches the stored state (double click, second tab, stale page)."""


def oriented(task_id: str, pair: tuple[int, int]) -> tuple[int, int]:
    """Which image of a pair goes on the left.

    Binary insertion sort always asks (new image, probed image); showing the new image on the same
    side every time would let a side bias leak into the labels, so the side is a fixed pseudo-random
    function of the pair: stable across restarts and identical for every labeler.
    """
    a, b = sorted(pair)
    flip = hashlib.sha256(f"{task_id}/{a}/{b}".encode()).digest()[0] & 1
    return (b, a) if flip else (a, b)


def to_sort_answer(ans: StoredAnswer) -> Answer:
    outcome = {"left": "better", "right": "worse", "tie": "tie"}[ans.outcome]
    return Answer(ans.left, ans.right, outcome)


@dataclass
class LabelerView:
    """A labeler's replayed state over all tasks."""

    tasks: list[Task]
    states: list[SortState]
    answers: list[StoredAnswer]

    def current(self) -> int | None:
        """Index of the first task this labeler has not fully ordered (None: all done)."""
        return next((i for i, s in enumerate(self.states) if not s.done), None)

    def progress(self) -> dict[str, object]:
        done = sum(s.done for s in self.states)
        remaining = sum(s.remaining() for s in self.states)
        gaps = [
            b.created - a.created
            for a, b in zip(self.answers, self.answers[1:], strict=False)
            if 0 <= b.created - a.created <= MAX_GAP_SECONDS
        ][-200:]  # recent pace only: people get faster
        per_answer = statistics.median(gaps) if gaps else None
        return {
            "comparisons_done": len(self.answers),
            "tasks_done": done,
            "tasks_total": len(self.tasks),
            "remaining_comparisons": remaining,
            "seconds_per_answer": per_answer,
            "eta_seconds": None if per_answer is None else per_answer * remaining,
        }


class Labeling:
    """The labeling logic over a :class:`Store`; every method is safe to call from many threads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def view(self, conn: sqlite3.Connection, labeler: str) -> LabelerView:
        tasks = self.store.tasks(conn)
        answers = self.store.answers(conn, labeler)
        by_task: dict[str, list[Answer]] = defaultdict(list)
        for a in answers:
            by_task[a.task_id].append(to_sort_answer(a))
        states = [replay(len(t.images), by_task.get(t.task_id, [])) for t in tasks]
        return LabelerView(tasks, states, answers)

    def state(self, labeler: str, conn: sqlite3.Connection | None = None) -> dict[str, object]:
        """Everything the page needs: the current task and pair, ordering so far, progress."""
        if conn is None:
            with self.store.reading() as c:
                return self.state(labeler, c)
        v = self.view(conn, labeler)
        out: dict[str, object] = {
            "labeler": labeler,
            "progress": v.progress(),
            "last_answer": _answer_json(v.answers[-1]) if v.answers else None,
            "task": None,
            "pair": None,
            "order": [],
        }
        i = v.current()
        if i is not None:
            task, st = v.tasks[i], v.states[i]
            assert st.pair is not None
            left, right = oriented(task.task_id, st.pair)
            out["task"] = {
                "task_id": task.task_id,
                "prompt": task.prompt,
                "index": i,
                "images": [f"/images/{task.task_id}/{k}" for k in range(len(task.images))],
                "comparisons": st.used,
            }
            out["pair"] = {"left": left, "right": right}
            out["order"] = [list(g) for g in st.groups]
        return out

    def answer(
        self, labeler: str, task_id: str, left: int, right: int, outcome: str
    ) -> dict[str, object]:
        """Store one answer if it answers the pending question of ``task_id``; else Conflict."""
        with self.store.transaction() as conn:
            v = self.view(conn, labeler)
            idx = next((i for i, t in enumerate(v.tasks) if t.task_id == task_id), None)
            if idx is None:
                raise KeyError(task_id)
            st = v.states[idx]
            if st.pair is None:
                raise Conflict(
                    f"Task {task_id} is already fully ordered for {labeler}; reload to get the "
                    "next question (or undo to change an answer)."
                )
            expected = oriented(task_id, st.pair)
            if (left, right) != expected:
                raise Conflict(
                    f"Task {task_id} is waiting for images {expected[0]} (left) vs {expected[1]} "
                    f"(right), not {left} vs {right}; the page was stale, so it was reloaded."
                )
            self.store.insert_answer(conn, labeler, task_id, left, right, outcome)
            return self.state(labeler, conn)

    def undo(self, labeler: str, answer_id: int | None = None) -> dict[str, object]:
        """Withdraw the labeler's latest answer (in any task) so that it is asked again."""
        with self.store.transaction() as conn:
            answers = self.store.answers(conn, labeler)
            if not answers:
                raise Conflict(f"{labeler} has no answers to undo.")
            last = answers[-1]
            if answer_id is not None and answer_id != last.id:
                raise Conflict(
                    f"The last answer of {labeler} is #{last.id}, not #{answer_id}; it was already "
                    "undone or another tab answered since. The page was reloaded."
                )
            self.store.mark_undone(conn, last.id)
            return self.state(labeler, conn)

    def status(self) -> dict[str, dict[str, object]]:
        """Progress of every labeler who has answered anything."""
        with self.store.reading() as conn:
            return {name: self.view(conn, name).progress() for name in self.store.labelers(conn)}

    def export_records(self, labeler: str | None = None) -> list[dict[str, object]]:
        """One record per (labeler, fully ordered task), in task order then labeler name."""
        with self.store.reading() as conn:
            names = [labeler] if labeler else self.store.labelers(conn)
            views = {n: self.view(conn, n) for n in names}
        records = []
        tasks = next(iter(views.values())).tasks if views else []
        for i, task in enumerate(tasks):
            for name in names:
                st = views[name].states[i]
                if st.done:
                    records.append(
                        {
                            **task.to_json(),
                            "ranks": st.ranks(),
                            "labeler": name,
                            "n_comparisons": st.used,
                        }
                    )
        return records

    def export(self, out: str | Path, labeler: str | None = None) -> int:
        """Write the fully ordered tasks to ``out`` (JSON lines, atomically); returns the count."""
        records = self.export_records(labeler)
        atomic_write_bytes(out, to_jsonl(records))
        return len(records)


def to_jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")


def _answer_json(a: StoredAnswer) -> dict[str, object]:
    return {
        "id": a.id,
        "task_id": a.task_id,
        "left": a.left,
        "right": a.right,
        "outcome": a.outcome,
    }
