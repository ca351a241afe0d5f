"""SQLite storage of labeling tasks and answers.

Every answer is committed (and, with ``synchronous=FULL``, fsynced) before the server replies, so a
crash or ``kill -9`` never loses an answer the labeler saw accepted. The database is a log: an
answer is never rewritten, undo only stamps it ``undone``, and the ordering of a task is always
recomputed from the live answers (see :mod:`diffenvs.label.sorting`).

Concurrency: each operation opens its own short-lived connection (sqlite connections must not be
shared between the server's threads), WAL mode lets readers run while one writer commits, and
writes that must check-then-insert run inside ``BEGIN IMMEDIATE`` so two requests can never both
answer the same question.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diffenvs.label.tasks import Task, TaskError

SCHEMA_VERSION = "1"
OUTCOMES = ("left", "right", "tie")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL UNIQUE,
    prompt   TEXT NOT NULL,
    images   TEXT NOT NULL,          -- JSON list of paths relative to root
    root     TEXT NOT NULL           -- absolute tasks directory the images are served from
);
CREATE TABLE IF NOT EXISTS answers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    labeler     TEXT NOT NULL,
    task_id     TEXT NOT NULL REFERENCES tasks(task_id),
    left_image  INTEGER NOT NULL,
    right_image INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'tie')),
    created     REAL NOT NULL,       -- unix time the server stored it
    undone      REAL                 -- unix time of the undo, NULL while the answer stands
);
CREATE INDEX IF NOT EXISTS answers_by_labeler ON answers (labeler, undone, task_id);
"""


@dataclass(frozen=True)
class StoredAnswer:
    id: int
    labeler: str
    task_id: str
    left: int
    right: int
    outcome: str  # left | right | tie
    created: float


class Store:
    """A labeling database at ``path`` (created with its schema if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        if self.path.is_dir():
            raise ValueError(
                f"--db {self.path} is a directory; give a file path like labels.sqlite."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per database file
                conn.executescript(_SCHEMA)
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise ValueError(
                        f"{self.path} has labeling schema {row[0]}, this diffenvs writes "
                        f"{SCHEMA_VERSION}; use a matching diffenvs version or a new --db."
                    )
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"{self.path} is not a usable SQLite labeling database ({err}); pass a new "
                "--db path or restore the file from a backup."
            ) from err

    def keep_open(self) -> sqlite3.Connection:
        """An idle connection for a long-running server to hold (and close when it stops).

        SQLite checkpoints and deletes the write-ahead log whenever the last connection to a
        database closes, which costs several fsyncs; with each request opening and closing its
        own connection that happened on almost every request. While this one stays open the log
        is checkpointed in the background of commits instead (every 1000 pages).
        """
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("SELECT COUNT(*) FROM meta").fetchone()  # a bare connect opens no log yet
        return conn

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")  # an accepted answer survives a power cut
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from the start (check-then-act).

        Writers of this process queue on a thread lock first: SQLite's own busy handler polls
        with sleeps of up to 100 ms and is unfair, so under many concurrent labelers some
        answers waited seconds while newer ones went through.
        """
        with self._connect() as conn, self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # ---------------------------------------------------------------------------------- tasks

    def add_tasks(self, tasks: list[Task]) -> tuple[int, int]:
        """Insert new tasks, keep identical ones; returns ``(added, unchanged)``.

        A task id that already exists with different images is refused once it has answers,
        because the stored answers refer to image indices of the old list.
        """
        added = unchanged = 0
        with self.transaction() as conn:
            for t in tasks:
                images = json.dumps(list(t.images))
                row = conn.execute(
                    "SELECT prompt, images FROM tasks WHERE task_id=?", (t.task_id,)
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO tasks (task_id, prompt, images, root) VALUES (?, ?, ?, ?)",
                        (t.task_id, t.prompt, images, str(t.root)),
                    )
                    added += 1
                    continue
                if (row[0], row[1]) != (t.prompt, images):
                    n = conn.execute(
                        "SELECT COUNT(*) FROM answers WHERE task_id=?", (t.task_id,)
                    ).fetchone()[0]
                    if n:
                        raise TaskError(
                            f"Task {t.task_id!r} is already in {self.path} with a different prompt "
                            f"or images and has {n} answers; give the changed task a new task_id."
                        )
                    conn.execute(
                        "UPDATE tasks SET prompt=?, images=? WHERE task_id=?",
                        (t.prompt, images, t.task_id),
                    )
                else:
                    unchanged += 1
                # The directory may have moved since the last import: serve from the new place.
                conn.execute("UPDATE tasks SET root=? WHERE task_id=?", (str(t.root), t.task_id))
        return added, unchanged

    def tasks(self, conn: sqlite3.Connection | None = None) -> list[Task]:
        """All tasks in import order."""
        sql = "SELECT task_id, prompt, images, root FROM tasks ORDER BY position"
        if conn is None:
            with self._connect() as c:
                rows = c.execute(sql).fetchall()
        else:
            rows = conn.execute(sql).fetchall()
        return [Task(r[0], r[1], tuple(json.loads(r[2])), Path(r[3])) for r in rows]

    # -------------------------------------------------------------------------------- answers

    def answers(self, conn: sqlite3.Connection, labeler: str | None = None) -> list[StoredAnswer]:
        """Live (not undone) answers, oldest first; all labelers when ``labeler`` is None."""
        sql = (
            "SELECT id, labeler, task_id, left_image, right_image, outcome, created FROM answers "
            "WHERE undone IS NULL"
        )
        args: tuple[str, ...] = ()
        if labeler is not None:
            sql += " AND labeler=?"
            args = (labeler,)
        rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [StoredAnswer(*r) for r in rows]

    def insert_answer(
        self,
        conn: sqlite3.Connection,
        labeler: str,
        task_id: str,
        left: int,
        right: int,
        outcome: str,
    ) -> int:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}.")
        cur = conn.execute(
            "INSERT INTO answers (labeler, task_id, left_image, right_image, outcome, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (labeler, task_id, left, right, outcome, time.time()),
        )
        return int(cur.lastrowid or 0)

    def mark_undone(self, conn: sqlite3.Connection, answer_id: int) -> None:
        conn.execute("UPDATE answers SET undone=? WHERE id=?", (time.time(), answer_id))

    def labelers(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute("SELECT DISTINCT labeler FROM answers ORDER BY labeler").fetchall()
        return [r[0] for r in rows]
