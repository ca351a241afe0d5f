"""The labeling app, end to end without a person: demo tasks → HTTP API → SQLite → labels.jsonl.

    python examples/label_app.py            # two scripted labelers over HTTP, then export (~10 s)
    python examples/label_app.py --serve    # demo tasks + the web app, for you: open the URL

The scripted labelers use the same JSON API as the page (GET /api/state, POST /api/answer and
/api/undo). "careful" prefers the image with fewer wrong attributes (ties on equal counts);
"hasty" misjudges 20 % of the questions. Both label at once; every answer is in SQLite as it is
given, and the export holds one ranked line per labeler and task (see docs/label.md).

Expected result with the defaults (measured): "wrote 24 ranked tasks to out/label_app/labels.jsonl"
(12 tasks x 2 labelers), "6 images per task: at most 11 comparisons, all pairs 15", then careful
with 94 answers (7.8 per task) and 12/12 orderings exactly right, hasty with 93 answers and only
3/12 exactly right. About 4 s on a busy 2-core CPU.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import tyro

from diffenvs.label import Labeling, Store, load_tasks, max_comparisons
from diffenvs.label.demo import write_demo_tasks
from diffenvs.label.server import make_server, serve_forever
from diffenvs.label.sorting import dense_ranks


@dataclass
class Config:
    out: Path = Path("out/label_app")
    """Folder for tasks/, labels.sqlite and labels.jsonl (recreated on every run)."""
    n_tasks: int = 12
    images_per_task: int = 6
    serve: bool = False
    """Start the web app for a person instead of the scripted labelers."""
    port: int = 8765


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def scripted_labeler(base: str, name: str, truth: dict[str, list[int]], error_rate: float) -> None:
    rng = random.Random(name)
    undone = False
    while (s := call(f"{base}api/state?labeler={name}"))["task"] is not None:
        tid, pair = s["task"]["task_id"], s["pair"]
        wrong_l, wrong_r = truth[tid][pair["left"]], truth[tid][pair["right"]]
        outcome = "tie" if wrong_l == wrong_r else "left" if wrong_l < wrong_r else "right"
        if rng.random() < error_rate:
            outcome = rng.choice([o for o in ("left", "right", "tie") if o != outcome])
        s = call(f"{base}api/answer", {"labeler": name, "task_id": tid, **pair, "outcome": outcome})
        if not undone and s["progress"]["tasks_done"] == 1:  # change one's mind once: undo
            call(f"{base}api/undo", {"labeler": name, "answer_id": s["last_answer"]["id"]})
            undone = True


def main(cfg: Config) -> None:
    shutil.rmtree(cfg.out, ignore_errors=True)
    tasks_dir = write_demo_tasks(cfg.out / "tasks", cfg.n_tasks, cfg.images_per_task)
    store = Store(cfg.out / "labels.sqlite")
    store.add_tasks(load_tasks(tasks_dir))
    if cfg.serve:
        server = make_server(store, "127.0.0.1", cfg.port)
        print(f"open {server.url} (answers go to {store.path}; Ctrl-C stops)")
        serve_forever(server)
        return

    server = make_server(store, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows = [json.loads(x) for x in (tasks_dir / "demo_truth.jsonl").read_text().splitlines()]
    truth = {r["task_id"]: r["wrong_attributes"] for r in rows}
    labelers = {"careful": 0.0, "hasty": 0.2}
    threads = [
        threading.Thread(target=scripted_labeler, args=(server.url, name, truth, err))
        for name, err in labelers.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.shutdown()

    lab = Labeling(store)
    n = lab.export(cfg.out / "labels.jsonl")
    print(f"wrote {n} ranked tasks to {cfg.out / 'labels.jsonl'}")
    k = cfg.images_per_task
    print(
        f"{k} images per task: at most {max_comparisons(k)} comparisons, all pairs {k * (k - 1) // 2}"
    )
    for name, p in lab.status().items():
        records = lab.export_records(name)
        exact = sum(r["ranks"] == dense_ranks([-w for w in truth[r["task_id"]]]) for r in records)
        print(
            f"  {name:8s} {p['comparisons_done']:3d} answers "
            f"({p['comparisons_done'] / p['tasks_done']:.1f} per task), "
            f"{exact}/{len(records)} orderings exactly right"
        )


if __name__ == "__main__":
    main(tyro.cli(Config))
