"""50 labelers at once against ``diffenvs label serve`` on 127.0.0.1: every answer stored once.

The server runs in its own process, as a person would start it. The run is bounded in time and in
requests; latency (p50/p95/max) is reported, never asserted, because it depends on the machine.
Set ``DIFFENVS_LABEL_LOAD_REPORT=path.json`` to keep the report.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from diffenvs.label.demo import write_demo_tasks
from diffenvs.label.sorting import dense_ranks

HOST = "127.0.0.1"

N_LABELERS = 50
LOAD_SECONDS = 4.0  # labelers stop starting new questions after this
MAX_ANSWERS = 24  # ...or after this many accepted answers each: at most ~60 requests a labeler


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, object, float]:
    """One request on a fresh connection: (status, JSON or raw body, seconds)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, None if body is None else json.dumps(body), hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    is_json = resp.getheader("Content-Type") == "application/json"
    return resp.status, json.loads(data) if is_json else data, time.perf_counter() - t0


@dataclass
class Labeler:
    """A scripted person: answers truthfully, double-clicks every 5th answer, undoes every 9th."""

    name: str
    wrong: dict[str, list[int]]  # task -> wrong attributes per image (fewer is better)
    accepted: int = 0
    double_clicks_refused: int = 0
    undone: int = 0
    unexpected: list[tuple[str, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def call(self, port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
        status, data, seconds = call(port, method, path, body)
        self.latencies.append(seconds)
        return status, data  # type: ignore[return-value]

    def outcome(self, task_id: str, left: int, right: int) -> str:
        w = self.wrong[task_id]
        return "tie" if w[left] == w[right] else "left" if w[left] < w[right] else "right"

    def run(self, port: int, start: threading.Barrier, stop_at: list[float]) -> None:
        if start.wait() == 0:  # one thread sets the end time once everyone is ready
            stop_at.append(time.monotonic() + LOAD_SECONDS)
        while not stop_at:
            time.sleep(0.001)
        while time.monotonic() < stop_at[0] and self.accepted < MAX_ANSWERS:
            status, s = self.call(port, "GET", f"/api/state?labeler={self.name}")
            if status != 200 or s["task"] is None:
                self.unexpected += [] if status == 200 else [("state", status)]
                return
            tid, pair = s["task"]["task_id"], s["pair"]
            body = {"labeler": self.name, "task_id": tid, **pair}
            body["outcome"] = self.outcome(tid, **pair)
            status, s = self.call(port, "POST", "/api/answer", body)
            if status != 200:
                self.unexpected.append(("answer", status))
                continue
            self.accepted += 1
            if self.accepted % 5 == 0:  # the same answer again must not be stored again
                status, _ = self.call(port, "POST", "/api/answer", body)
                self.double_clicks_refused += status == 409
                self.unexpected += [] if status == 409 else [("double click", status)]
            if self.accepted % 9 == 0:
                undo = {"labeler": self.name, "answer_id": s["last_answer"]["id"]}
                status, _ = self.call(port, "POST", "/api/undo", undo)
                self.undone += status == 200
                self.unexpected += [] if status == 200 else [("undo", status)]


def start_server(tasks: Path, db: Path, log: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "diffenvs.cli", "label", "serve", str(tasks), "--db", str(db)]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*cmd, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    assert proc.stdout is not None
    for line in proc.stdout:  # "labeling N tasks at http://127.0.0.1:PORT/ ..."
        if line.startswith("labeling "):
            return proc, int(line.split(" at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
    proc.wait(timeout=30)
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


def check_database(db: Path, labelers: list[Labeler], status: dict) -> None:
    """Every accepted answer stored exactly once, every undo stamped on exactly one of them."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for lab in labelers:
            total, live = conn.execute(
                "SELECT COUNT(*), COUNT(*) - COUNT(undone) FROM answers WHERE labeler=?",
                (lab.name,),
            ).fetchone()
            assert (total, live) == (lab.accepted, lab.accepted - lab.undone), lab.name
            assert status.get(lab.name, {"comparisons_done": 0})["comparisons_done"] == live
        repeated = conn.execute(
            "SELECT labeler, task_id, MIN(left_image, right_image), MAX(left_image, right_image) "
            "FROM answers WHERE undone IS NULL GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1"
        ).fetchall()
        assert repeated == []  # no question is answered twice


def latency_report(labelers: list[Labeler], wall: float) -> dict[str, object]:
    lat = sorted(x for lab in labelers for x in lab.latencies)
    return {
        "labelers": len(labelers),
        "requests": len(lat),
        "answers_stored": sum(lab.accepted for lab in labelers),
        "double_clicks_refused": sum(lab.double_clicks_refused for lab in labelers),
        "undos": sum(lab.undone for lab in labelers),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
        "max_ms": round(1000 * lat[-1], 1),
    }


@pytest.mark.slow
def test_fifty_concurrent_labelers_store_every_answer_once(tmp_path, capsys):
    tasks = write_demo_tasks(tmp_path / "tasks", n_tasks=4, images_per_task=5)
    truth = (tasks / "demo_truth.jsonl").read_text().splitlines()
    wrong = {r["task_id"]: r["wrong_attributes"] for r in map(json.loads, truth)}
    db, log = tmp_path / "labels.sqlite", tmp_path / "server.log"
    labelers = [Labeler(f"lab{i:02d}", wrong) for i in range(N_LABELERS)]
    proc, port = start_server(tasks, db, log)
    try:
        start, stop_at = threading.Barrier(N_LABELERS), []
        threads = [
            threading.Thread(target=lab.run, args=(port, start, stop_at)) for lab in labelers
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        wall = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads)
        status, export = call(port, "GET", "/api/status")[1], call(port, "GET", "/api/export")[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert {lab.name: lab.unexpected for lab in labelers if lab.unexpected} == {}
    check_database(db, labelers, status)  # type: ignore[arg-type]
    for row in map(json.loads, export.decode().splitlines()):  # type: ignore[union-attr]
        assert row["ranks"] == dense_ranks([-w for w in wrong[row["task_id"]]])
    assert "Traceback" not in log.read_text()

    report = latency_report(labelers, wall)
    if out := os.environ.get("DIFFENVS_LABEL_LOAD_REPORT"):
        Path(out).write_text(json.dumps(report, indent=2))
    with capsys.disabled():  # a report, not an assertion: latency depends on the machine
        print(f"\nlabel server load: {json.dumps(report)}")
