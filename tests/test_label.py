"""The labeling app without a browser: sorting, tasks, storage, HTTP API, validation, concurrency."""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
from pathlib import Path

import pytest

from diffenvs.cli import main
from diffenvs.label import Labeling, Store, TaskError, load_tasks
from diffenvs.label.demo import write_demo_tasks
from diffenvs.label.server import make_server
from diffenvs.label.session import Conflict
from diffenvs.label.sorting import Answer, dense_ranks, max_comparisons, replay

# ------------------------------------------------------------------------------------ sorting


def sort_with(scores: list[float]) -> tuple[list[int], int, list[float]]:
    """Label a task by replay with a labeler who prefers higher scores (equal scores tie)."""
    answers: list[Answer] = []
    remaining = []
    while True:
        st = replay(len(scores), answers)
        remaining.append(st.remaining(expected=False))
        if st.done:
            return st.ranks(), st.used, remaining
        a, b = st.pair
        outcome = (
            "tie" if scores[a] == scores[b] else "better" if scores[a] > scores[b] else "worse"
        )
        answers.append(Answer(a, b, outcome))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16])
def test_insertion_sort_orders_and_stays_within_n_log_n(n):
    rng = random.Random(n)
    for _ in range(30):
        scores = [rng.random() for _ in range(n)]
        ranks, used, remaining = sort_with(scores)
        assert ranks == dense_ranks(scores)
        assert used <= max_comparisons(n) <= n * math.log2(n)
        # The worst-case estimate never under-counts and reaches zero exactly at the end.
        assert remaining[0] == max_comparisons(n)
        assert all(r >= len(remaining) - 1 - i for i, r in enumerate(remaining))
        assert remaining[-1] == 0
    assert max_comparisons(n) < n * (n - 1) / 2 or n <= 3


def test_ties_share_a_rank_and_save_comparisons():
    scores = [3, 1, 3, 2, 1, 3, 2, 1]
    ranks, used, _ = sort_with(scores)
    assert ranks == [0, 2, 0, 1, 2, 0, 1, 2]
    assert used < max_comparisons(len(scores))
    assert sort_with([5, 5, 5, 5])[:2] == ([0, 0, 0, 0], 3)  # one probe each: all tie at once


def test_replay_ignores_answer_order_and_unasked_pairs():
    scores = [0.1, 0.9, 0.5, 0.7, 0.3]
    answers = []
    while not (st := replay(5, answers)).done:
        a, b = st.pair
        answers.append(Answer(b, a, "better" if scores[b] > scores[a] else "worse"))  # flipped
    asked = {frozenset((x.a, x.b)) for x in answers}
    never = next((a, b) for a in range(5) for b in range(a + 1, 5) if {a, b} not in asked)
    shuffled = [*reversed(answers), Answer(*never, "tie")]  # an answer the sort never asks for
    assert replay(5, shuffled).ranks() == replay(5, answers).ranks() == dense_ranks(scores)


def test_replay_rejects_impossible_answers():
    with pytest.raises(ValueError, match="two different images"):
        replay(3, [Answer(0, 0, "tie")])
    with pytest.raises(ValueError, match="outcome"):
        replay(3, [Answer(0, 1, "maybe")])
    with pytest.raises(ValueError, match="not fully ordered"):
        replay(3, []).ranks()


# -------------------------------------------------------------------------------------- tasks


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return write_demo_tasks(
        tmp_path_factory.mktemp("label") / "tasks", n_tasks=3, images_per_task=4
    )


def truth(tasks_dir: Path) -> dict[str, list[int]]:
    rows = [json.loads(line) for line in (tasks_dir / "demo_truth.jsonl").read_text().splitlines()]
    return {r["task_id"]: r["wrong_attributes"] for r in rows}


def write_tasks(root: Path, lines: list[object], n_png: int = 2) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    for k in range(n_png):
        (root / "images" / f"{k}.png").write_bytes(png)
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    (root / "tasks.jsonl").write_text(text + "\n")
    return root


def good(task_id="a", images=("images/0.png", "images/1.png")) -> dict:
    return {"task_id": task_id, "prompt": "one red circle", "images": list(images)}


def test_demo_tasks_are_valid(demo_dir):
    tasks = load_tasks(demo_dir)
    assert [t.task_id for t in tasks] == ["t0000", "t0001", "t0002"]
    assert all(len(t.images) == 4 and t.image_path(0).is_file() for t in tasks)
    assert all(0 in w for w in truth(demo_dir).values())


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "expected a JSON object"),
        ({"task_id": "a", "prompt": "x"}, "missing key"),
        ({**good(), "extra": 1}, "unknown key"),
        (good(task_id="../a"), "task_id"),
        ({**good(), "prompt": ""}, "prompt"),
        (good(images=["images/0.png"]), "2 to 16 images"),
        (good(images=["images/0.png", "images/0.png"]), "listed twice"),
        (good(images=["images/0.png", "../secret.png"]), "may not contain '..'"),
        (good(images=["images/0.png", "/etc/passwd"]), "leading '/'"),
        (good(images=["images/0.png", "images/9.png"]), "does not exist"),
        (good(images=["images/0.png", "tasks.jsonl"]), "not a PNG"),
    ],
)
def test_malformed_tasks_are_rejected_with_a_message(tmp_path, line, message):
    write_tasks(tmp_path, [line])
    with pytest.raises(TaskError, match=message):
        load_tasks(tmp_path)


def test_symlinked_image_outside_the_directory_is_rejected(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    root = write_tasks(tmp_path / "tasks", [good(images=["images/0.png", "images/link.png"])])
    (root / "images" / "link.png").symlink_to(outside)
    with pytest.raises(TaskError, match="outside"):
        load_tasks(root)


def test_duplicate_ids_and_empty_files_are_rejected(tmp_path):
    write_tasks(tmp_path, [good(), good()])
    with pytest.raises(TaskError, match="appears twice"):
        load_tasks(tmp_path)
    write_tasks(tmp_path, [""])
    with pytest.raises(TaskError, match="no tasks"):
        load_tasks(tmp_path)
    with pytest.raises(TaskError, match="does not exist"):
        load_tasks(tmp_path / "nope")


# ------------------------------------------------------------------------- store and session


def scripted(wrong: list[int], left: int, right: int) -> str:
    """A careful labeler: fewer wrong attributes is better, equal counts tie."""
    if wrong[left] == wrong[right]:
        return "tie"
    return "left" if wrong[left] < wrong[right] else "right"


def label_all(lab: Labeling, labeler: str, wrong: dict[str, list[int]], limit: int = 10**6) -> int:
    n = 0
    while n < limit:
        s = lab.state(labeler)
        if s["task"] is None:
            break
        tid, pair = s["task"]["task_id"], s["pair"]
        lab.answer(labeler, tid, pair["left"], pair["right"], scripted(wrong[tid], **pair))
        n += 1
    return n


def test_answers_survive_reopening_and_export_matches_truth(demo_dir, tmp_path):
    db = tmp_path / "l.sqlite"
    Store(db).add_tasks(load_tasks(demo_dir))
    wrong = truth(demo_dir)
    label_all(Labeling(Store(db)), "alice", wrong, limit=4)  # part-way, then "restart"
    lab = Labeling(Store(db))
    assert lab.state("alice")["progress"]["comparisons_done"] == 4
    label_all(lab, "alice", wrong)
    out = tmp_path / "labels.jsonl"
    assert lab.export(out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for r in rows:
        assert r["ranks"] == dense_ranks([-w for w in wrong[r["task_id"]]])
        assert r["labeler"] == "alice" and 1 <= r["n_comparisons"] <= max_comparisons(4)
        assert set(r) == {"task_id", "prompt", "images", "ranks", "labeler", "n_comparisons"}
    assert not list(tmp_path.glob(".labels.jsonl.*"))  # atomic write left no temp file


def test_undo_goes_back_across_tasks_and_reasks(demo_dir, tmp_path):
    store = Store(tmp_path / "l.sqlite")
    store.add_tasks(load_tasks(demo_dir))
    lab = Labeling(store)
    wrong = truth(demo_dir)
    while lab.state("bob")["task"]["task_id"] == "t0000":
        label_all(lab, "bob", wrong, limit=1)
    before = lab.state("bob")
    assert before["progress"]["tasks_done"] == 1
    last = before["last_answer"]
    after = lab.undo("bob", last["id"])
    assert after["task"]["task_id"] == "t0000" and after["progress"]["tasks_done"] == 0
    assert (after["pair"]["left"], after["pair"]["right"]) == (last["left"], last["right"])
    with pytest.raises(Conflict):  # a second undo of the same answer (double key press)
        lab.undo("bob", last["id"])
    with pytest.raises(Conflict, match="waiting for"):  # answering a question not asked
        p = after["pair"]
        lab.answer("bob", "t0000", p["right"], p["left"], "tie")
    with pytest.raises(Conflict, match="no answers"):
        lab.undo("nobody")


def test_changed_task_with_answers_is_refused(demo_dir, tmp_path):
    store = Store(tmp_path / "l.sqlite")
    tasks = load_tasks(demo_dir)
    assert store.add_tasks(tasks) == (3, 0)
    assert store.add_tasks(tasks) == (0, 3)
    label_all(Labeling(store), "c", truth(demo_dir), limit=1)
    from dataclasses import replace

    with pytest.raises(TaskError, match="new task_id"):
        store.add_tasks([replace(tasks[0], images=tuple(reversed(tasks[0].images)))])


def test_corrupt_database_gets_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a usable SQLite"):
        Store(bad)


# -------------------------------------------------------------------------------- HTTP server


@pytest.fixture
def server(demo_dir, tmp_path):
    store = Store(tmp_path / "l.sqlite")
    store.add_tasks(load_tasks(demo_dir))
    srv = make_server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method, path, body=None, headers=None, raw: bytes | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    hdrs = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type", "")
    return resp.status, json.loads(payload) if ctype == "application/json" else payload


def test_page_static_files_and_images_are_served(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and b"diffenvs labeling" in page
    assert request(server, "GET", "/static/app.js")[0] == 200
    status, png = request(server, "GET", "/images/t0000/3")
    assert status == 200 and png.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../etc/passwd",
        "/images/t0000/../../../etc/passwd",
        "/images/t0000/%2e%2e%2fsecret",
        "/images/t0000/4",
        "/images/t9999/0",
        "/images/t0000/-1",
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/tasks.jsonl",
        "/demo_truth.jsonl",
    ],
)
def test_path_traversal_and_unknown_files_are_404(server, path):
    status, body = request(server, "GET", path)
    assert status == 404 and "error" in body


def test_foreign_host_header_is_refused(server):
    status, body = request(server, "GET", "/api/status", headers={"Host": "evil.example:80"})
    assert status == 403 and "not this machine" in body["error"]


ANSWER = {"labeler": "al", "task_id": "t0000", "left": 0, "right": 1, "outcome": "tie"}


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({**ANSWER, "labeler": "a b"}, 400, "labeler must be"),
        ({**ANSWER, "labeler": "x" * 40}, 400, "labeler must be"),
        ({**ANSWER, "labeler": 7}, 400, "labeler must be"),
        ({k: v for k, v in ANSWER.items() if k != "outcome"}, 400, "Missing field"),
        ({**ANSWER, "admin": True}, 400, "Unknown field"),
        ({**ANSWER, "task_id": "t9999"}, 404, "Unknown task_id"),
        ({**ANSWER, "task_id": ["t0000"]}, 404, "Unknown task_id"),
        ({**ANSWER, "left": True}, 400, "left must be an integer"),
        ({**ANSWER, "left": "0"}, 400, "left must be an integer"),
        ({**ANSWER, "right": 4}, 400, "right must be an integer image index in 0..3"),
        ({**ANSWER, "right": -1}, 400, "right must be"),
        ({**ANSWER, "right": 0}, 400, "two different images"),
        ({**ANSWER, "outcome": "both"}, 400, "outcome must be one of"),
        ([ANSWER], 400, "JSON object"),
    ],
)
def test_malformed_answers_get_4xx_with_a_message(server, body, status, message):
    got, resp = request(server, "POST", "/api/answer", body)
    assert got == status and message in resp["error"]


def test_malformed_requests_get_4xx(server):
    st, r = request(server, "POST", "/api/answer", raw=b"{bad json", headers={})
    assert st == 400 and "not valid UTF-8 JSON" in r["error"]
    st, r = request(server, "POST", "/api/answer", raw=b"\xff\xfe", headers={})
    assert st == 400
    st, r = request(
        server, "POST", "/api/answer", raw=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert st == 415 and "application/json" in r["error"]
    st, r = request(
        server, "POST", "/api/answer", raw=b"{}", headers={"Content-Length": str(10**8)}
    )
    assert st == 413
    assert request(server, "GET", "/api/state")[0] == 400  # no labeler
    assert request(server, "GET", "/api/state?labeler=%3Cscript%3E")[0] == 400
    assert request(server, "PUT", "/api/answer", {})[0] == 405
    assert request(server, "POST", "/api/nothing", {})[0] == 404
    st, r = request(server, "POST", "/api/undo", {"labeler": "al", "answer_id": "1"})
    assert st == 400 and "answer_id" in r["error"]
    st, r = request(server, "POST", "/api/undo", {"labeler": "al"})
    assert st == 409 and "no answers" in r["error"]


def test_missing_content_length_is_411(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/api/answer")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and b"Content-Length" in resp.read()
    conn.close()


def test_adding_tasks_over_http(server, demo_dir):
    task = {
        "task_id": "extra",
        "prompt": "two stars",
        "images": ["images/t0000_0.png", "images/t0001_1.png"],
    }
    st, r = request(server, "POST", "/api/tasks", {"tasks": [task]})
    assert st == 200 and r["added"] == 1
    st, r = request(server, "GET", "/api/tasks")
    assert [t["task_id"] for t in r["tasks"]][-1] == "extra"
    st, r = request(
        server, "POST", "/api/tasks", {"tasks": [{**task, "images": ["../x.png", "a.png"]}]}
    )
    assert st == 400 and ".." in r["error"]
    st, r = request(server, "POST", "/api/tasks", {"tasks": [task], "root": "/etc"})
    assert st == 400 and "root must be one of" in r["error"]
    st, r = request(server, "POST", "/api/tasks", {"tasks": []})
    assert st == 400


def http_label_all(srv, labeler: str, wrong: dict[str, list[int]], results: list) -> None:
    while True:
        _, s = request(srv, "GET", f"/api/state?labeler={labeler}")
        if s["task"] is None:
            return
        tid, p = s["task"]["task_id"], s["pair"]
        body = {"labeler": labeler, "task_id": tid, **p, "outcome": scripted(wrong[tid], **p)}
        status, _ = request(srv, "POST", "/api/answer", body)
        results.append(status)


def test_two_labelers_at_once_lose_no_answers(server, demo_dir):
    wrong = truth(demo_dir)
    results: dict[str, list[int]] = {"ann": [], "ben": []}
    threads = [
        threading.Thread(target=http_label_all, args=(server, name, wrong, results[name]))
        for name in results
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(set(r) == {200} for r in results.values())
    _, status = request(server, "GET", "/api/status")
    for name, codes in results.items():
        assert status[name]["comparisons_done"] == len(codes)
        assert status[name]["tasks_done"] == 3
    _, lines = request(server, "GET", "/api/export")
    rows = [json.loads(x) for x in lines.decode().splitlines()]
    assert sorted((r["labeler"], r["task_id"]) for r in rows) == sorted(
        (n, t) for n in results for t in wrong
    )
    assert sum(r["n_comparisons"] for r in rows) == sum(len(c) for c in results.values())


def test_same_answer_twice_at_once_is_stored_once(server):
    _, s = request(server, "GET", "/api/state?labeler=dup")
    body = {"labeler": "dup", "task_id": s["task"]["task_id"], **s["pair"], "outcome": "left"}
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(request(server, "POST", "/api/answer", body)[0])
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(codes) == [200, 409, 409, 409]
    assert request(server, "GET", "/api/state?labeler=dup")[1]["progress"]["comparisons_done"] == 1


# ------------------------------------------------------------------------------------------ CLI


def test_cli_demo_import_status_export(tmp_path, capsys):
    tasks, db, out = tmp_path / "tasks", tmp_path / "l.sqlite", tmp_path / "labels.jsonl"
    main(["label", "demo-tasks", str(tasks), "--n-tasks", "2", "--images-per-task", "3"])
    main(["label", "import", str(tasks), "--db", str(db)])
    label_all(Labeling(Store(db)), "cli", truth(tasks))
    main(["label", "status", "--db", str(db)])
    assert "2/2 tasks" in capsys.readouterr().out
    main(["label", "export", "--db", str(db), "--out", str(out)])
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit, match="already exists"):
        main(["label", "demo-tasks", str(tasks)])
    with pytest.raises(SystemExit, match="No labeling database"):
        main(["label", "export", "--db", str(tmp_path / "missing.sqlite")])
    with pytest.raises(SystemExit, match="images-per-task"):
        main(["label", "demo-tasks", str(tmp_path / "t2"), "--images-per-task", "17"])


def test_serve_warns_when_not_on_localhost(tmp_path, demo_dir, monkeypatch, capsys):
    import diffenvs.label.server as server_mod

    class Fake:
        url = "http://0.0.0.0:1/"

    monkeypatch.setattr(server_mod, "make_server", lambda *a, **k: Fake())
    monkeypatch.setattr(server_mod, "serve_forever", lambda s: None)
    db = str(tmp_path / "l.sqlite")
    main(["label", "serve", str(demo_dir), "--db", db, "--host", "0.0.0.0"])
    assert "WARNING" in capsys.readouterr().err
    main(["label", "serve", "--db", db])  # resumes from the database alone
    assert "WARNING" not in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds no tasks"):
        main(["label", "serve", "--db", str(tmp_path / "empty.sqlite")])
