"""``diffenvs label ...``: serve the labeling app, import tasks, show progress, export labels."""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from diffenvs.label.store import Store
from diffenvs.label.tasks import TaskError, load_tasks


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _open_store(db: Path, must_exist: bool = False) -> Store:
    if must_exist and not db.is_file():
        raise SystemExit(
            f"No labeling database at {db}; pass the --db that `diffenvs label serve` wrote."
        )
    try:
        return Store(db)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _import(store: Store, tasks_dir: Path) -> tuple[int, int]:
    try:
        return store.add_tasks(load_tasks(tasks_dir))
    except TaskError as err:
        raise SystemExit(f"Cannot import {tasks_dir}: {err}") from None


@dataclass
class Serve:
    """Start the labeling web app; open the printed URL in a browser."""

    tasks_dir: Annotated[Path | None, tyro.conf.Positional] = None
    """Folder holding tasks.jsonl (imported into --db on start; may be left out once imported)."""
    db: Path = Path("labels.sqlite")
    """SQLite file with every answer (created if missing; restart with the same file to resume)."""
    host: str = "127.0.0.1"
    """Interface to bind. Anything but a loopback address exposes the app to your network."""
    port: int = 8765
    """TCP port (0 picks a free one)."""
    verbose: bool = False
    """Log every request to stderr."""


def serve(cfg: Serve) -> None:
    from diffenvs.label.server import make_server, serve_forever

    if not 0 <= cfg.port <= 65535:
        raise SystemExit(f"--port must be in 0..65535, got {cfg.port}.")
    store = _open_store(cfg.db)
    if cfg.tasks_dir is not None:
        added, same = _import(store, cfg.tasks_dir)
        print(f"tasks from {cfg.tasks_dir}: {added} new, {same} already in {cfg.db}")
    n = len(store.tasks())
    if n == 0:
        raise SystemExit(
            f"{cfg.db} holds no tasks; pass a tasks directory, e.g. `diffenvs label serve "
            "TASKS_DIR` (make one with `diffenvs label demo-tasks TASKS_DIR`)."
        )
    if not _is_loopback(cfg.host):
        print(
            f"WARNING: binding to {cfg.host} makes the labeling app reachable from other "
            "machines, without authentication. Use the default --host 127.0.0.1 (and an SSH "
            "tunnel for remote labelers) unless this network is trusted.",
            file=sys.stderr,
        )
    try:
        server = make_server(store, cfg.host, cfg.port, cfg.verbose)
    except OSError as err:
        raise SystemExit(str(err)) from None
    # Tests and scripts read this line to find the port when --port 0 was given.
    print(
        f"labeling {n} tasks at {server.url}  (answers saved to {cfg.db}; Ctrl-C stops)", flush=True
    )
    serve_forever(server)


@dataclass
class Import:
    """Add the tasks of a tasks directory to a labeling database (without serving)."""

    tasks_dir: Annotated[Path, tyro.conf.Positional]
    db: Path = Path("labels.sqlite")


def import_tasks(cfg: Import) -> None:
    added, same = _import(_open_store(cfg.db), cfg.tasks_dir)
    print(f"{cfg.db}: {added} new tasks, {same} already there")


@dataclass
class Export:
    """Write every fully ordered task to a JSON-lines file for reward-model training."""

    db: Path = Path("labels.sqlite")
    out: Path = Path("labels.jsonl")
    labeler: str | None = None
    """Only this labeler's orderings (default: everyone's, one line per labeler and task)."""


def export(cfg: Export) -> int:
    from diffenvs.label.session import Labeling

    n = Labeling(_open_store(cfg.db, must_exist=True)).export(cfg.out, cfg.labeler)
    print(f"wrote {n} ordered tasks to {cfg.out}")
    return n


@dataclass
class Status:
    """Show each labeler's progress (answers, tasks done, comparisons and time left)."""

    db: Path = Path("labels.sqlite")
    json: bool = False
    """Print JSON instead of a table."""


def status(cfg: Status) -> dict[str, dict[str, object]]:
    from diffenvs.label.session import Labeling

    store = _open_store(cfg.db, must_exist=True)
    rows = Labeling(store).status()
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return rows
    print(f"{len(store.tasks())} tasks in {cfg.db}")
    if not rows:
        print("no answers yet")
    for name, p in rows.items():
        eta = p["eta_seconds"]
        left = "?" if eta is None else f"{float(eta) / 60:.1f} min"  # type: ignore[arg-type]
        print(
            f"{name:20s} {p['comparisons_done']:6d} answers  {p['tasks_done']}/{p['tasks_total']} "
            f"tasks  ~{float(p['remaining_comparisons']):.0f} comparisons ({left}) left"  # type: ignore[arg-type]
        )
    return rows


@dataclass
class DemoTasks:
    """Write a tasks directory of world renders with deliberate mistakes, to try the app."""

    out_dir: Annotated[Path, tyro.conf.Positional]
    n_tasks: int = 10
    images_per_task: int = 4
    seed: int = 0


def demo_tasks(cfg: DemoTasks) -> Path:
    from diffenvs.label.demo import write_demo_tasks

    try:
        out = write_demo_tasks(cfg.out_dir, cfg.n_tasks, cfg.images_per_task, cfg.seed)
    except (ValueError, FileExistsError) as err:
        raise SystemExit(str(err)) from None
    print(f"wrote {cfg.n_tasks} tasks to {out}; label them with `diffenvs label serve {out}`")
    return out


COMMANDS = {
    "serve": (Serve, serve),
    "import": (Import, import_tasks),
    "export": (Export, export),
    "status": (Status, status),
    "demo-tasks": (DemoTasks, demo_tasks),
}
