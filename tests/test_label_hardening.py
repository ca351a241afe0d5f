"""The labeling server under abuse and load: never a 5xx, never stuck, never a lost answer.

Everything talks to 127.0.0.1 only. Raw sockets are used where ``http.client`` would refuse to
send the malformed bytes (bad request lines, conflicting headers, partial bodies, resets).
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffenvs.label import Store, TaskError, load_tasks
from diffenvs.label.demo import write_demo_tasks
from diffenvs.label.limits import MAX_INT_DIGITS, MAX_JSON_DEPTH, json_depth_exceeds
from diffenvs.label.server import ROUTES, make_server

HOST = "127.0.0.1"
IDLE, TOTAL = 0.5, 2.0  # the test server's timeouts: short, so stalls resolve quickly


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return write_demo_tasks(tmp_path_factory.mktemp("harden") / "tasks", n_tasks=2)


@pytest.fixture
def server(demo_dir, tmp_path):
    store = Store(tmp_path / "l.sqlite")
    store.add_tasks(load_tasks(demo_dir))
    srv = make_server(store, HOST, 0, idle_timeout=IDLE, request_timeout=TOTAL)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@dataclass
class Reply:
    status: int | None  # None: the server closed without an answer (e.g. an empty request)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(srv, data: bytes, half_close: bool = True, timeout: float = 10.0) -> Reply:
    """Send raw bytes, optionally signal end of input, and read the whole answer."""
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking everything: read that
            pass
        out = b""
        try:
            while chunk := s.recv(1 << 16):
                out += chunk
        except ConnectionResetError:
            pass
    head, _, body = out.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return Reply(None, body=out)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split()[1]), headers, body)


def req(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str = HOST,
) -> bytes:
    hdrs = {"Host": host, **({"Content-Type": "application/json"} if body is not None else {})}
    if body is not None:
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in hdrs.items())]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


def answers_in(srv) -> int:
    with sqlite3.connect(srv.store.path) as conn:
        return conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def integrity(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


ANSWER = {"labeler": "al", "task_id": "t0000", "left": 0, "right": 1, "outcome": "tie"}


def answer_with(field: str, raw_value: str) -> bytes:
    """ANSWER as JSON with one field's value replaced by raw JSON text (which json can't write)."""
    return json.dumps({**ANSWER, field: "@@"}).replace('"@@"', raw_value).encode()


# --------------------------------------------------------------------------- JSON and fields


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/answer", b"[" * 100_000 + b"]" * 100_000, "levels deep"),
        ("/api/answer", b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "levels deep"),
        ("/api/undo", b'{"labeler": "al", "answer_id": ' + b"9" * 5000 + b"}", "5000 digits"),
        ("/api/answer", answer_with("left", "-" + "1" * 5000), "5000 digits"),
        ("/api/answer", answer_with("left", "1" * (MAX_INT_DIGITS + 1)), "digits"),
        ("/api/answer", answer_with("left", "1e999"), "too large"),
        ("/api/answer", answer_with("right", "NaN"), "NaN is not valid JSON"),
        ("/api/answer", answer_with("right", "-Infinity"), "not valid JSON"),
        ("/api/answer", answer_with("labeler", '"al\\ud800"'), "surrogate"),
        ("/api/answer", answer_with("labeler", '"al\\n"'), "labeler must be"),
        ("/api/answer", answer_with("task_id", '"' + "t" * 100_000 + '"'), "Unknown task_id"),
        ("/api/answer", answer_with("left", "0.0"), "left must be an integer"),
        ("/api/answer", b"\xef\xbb\xbf" + json.dumps(ANSWER).encode(), "not valid"),
        ("/api/answer", json.dumps(ANSWER).encode("utf-16"), "not UTF-8"),
        ("/api/answer", b'{"labeler": "\xe9"}', "not UTF-8"),
        ("/api/answer", json.dumps(ANSWER).encode() + b" trailing", "not valid"),
        ("/api/answer", b"", "not valid"),
        ("/api/answer", b"null", "JSON object"),
        ("/api/tasks", b'{"tasks": [{"task_id": "x", "prompt": "p\\ud800", "images": []}]}', "surrogate"),
        ("/api/tasks", b'{"tasks": [{"task_id": "x", "prompt": "p", "images": '
         b'["images/t0000_0.png", "a\\u0000b"]}]}', "NUL byte"),
        ("/api/tasks", b'{"tasks": [{"task_id": "x", "prompt": "p", "images": '
         b'["images/t0000_0.png", "' + b"a/" * 3000 + b'"]}]}', "characters"),
        ("/api/tasks", b'{"tasks": [1], "root": "/tmp\\u0000"}', "root must be one of"),
        ("/api/tasks", b'{"tasks": [1], "root": ["/"]}', "root must be one of"),
        ("/api/tasks", b'{"tasks": ' + b"[1]," * 0 + b"[" + b"0," * 50_000 + b"0]}", "tasks[0]"),
    ],
)  # fmt: skip
def test_hostile_json_is_a_4xx_naming_the_problem(server, path, body, message):
    reply = exchange(server, req("POST", path, body))
    assert reply.status == (404 if message.startswith("Unknown") else 400), reply
    assert message in reply.json()["error"]
    assert len(reply.body) < 2000  # the message summarises, it never echoes the input back


def test_json_depth_check_ignores_brackets_in_strings():
    assert not json_depth_exceeds(json.dumps({"a": "[" * 1000 + "{" * 1000}))
    assert not json_depth_exceeds("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert json_depth_exceeds("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert json_depth_exceeds('[{"a": "\\"[[["' + ', "b": [' * 20)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"task_id": ' + b"1" * 5000 + b"}", "thousands of digits"),
        (b'{"task_id": "a\\n", "prompt": "x", "images": []}', "task_id"),
        (b'{"task_id": "a", "prompt": "\\ud800", "images": []}', "surrogate"),
    ],
)
def test_hostile_tasks_files_are_a_task_error(tmp_path, content, message):
    (tmp_path / "tasks.jsonl").write_bytes(content)
    with pytest.raises(TaskError, match=message):
        load_tasks(tmp_path)


# ------------------------------------------------------------------------------------ methods


@pytest.mark.parametrize("path, route", [*ROUTES.items(), ("/static/app.js", {"GET": ""})])
def test_wrong_methods_get_405_with_allow_and_options_answers(server, path, route):
    allowed = {*route, "OPTIONS"} | ({"HEAD"} if "GET" in route else set())
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND", "get", "FOO"]:
        if method in route:
            continue
        reply = exchange(server, req(method, path, b"{}"))
        assert reply.status == 405, (method, path, reply)
        assert set(reply.headers["Allow"].split(", ")) == allowed
        assert method in reply.json()["error"]
    reply = exchange(server, req("OPTIONS", path))
    assert reply.status == 204 and set(reply.headers["Allow"].split(", ")) == allowed
    assert reply.body == b""


def test_options_star_head_and_unknown_paths(server):
    reply = exchange(server, req("OPTIONS", "*"))
    assert reply.status == 204 and "POST" in reply.headers["Allow"]
    head = exchange(server, req("HEAD", "/api/status"))
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0
    assert exchange(server, req("TRACE", "/no/such/page")).status == 404
    reply = exchange(server, req("CONNECT", "127.0.0.1:22"))
    assert reply.status == 400 and "must be a path" in reply.json()["error"]


# ---------------------------------------------------------------------- time and disconnects


def test_a_stalled_body_gets_408_and_frees_the_connection(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(req("POST", "/api/answer", b"{}", {"Content-Length": "100"}))
        answer = b""  # no half-close: the server must give up on its own
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive in time" in answer


def test_a_trickled_request_is_cut_at_the_total_deadline(server):
    data = req("POST", "/api/answer", json.dumps(ANSWER).encode())
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(s.recv(65536)), daemon=True)
        reader.start()
        for byte in data:  # one byte per IDLE/3: never idle long enough, never finished in time
            if got:
                break
            try:
                s.send(bytes([byte]))
            except OSError:
                break
            time.sleep(IDLE / 3)
        reader.join(timeout=10)
    assert got and got[0].startswith(b"HTTP/1.0 408"), got


def test_a_silent_connection_is_closed(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        assert s.recv(10) == b""  # closed after the idle timeout, without an answer


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST instead of FIN: the server's next write fails with EPIPE/ECONNRESET


def test_client_disconnects_leave_no_traceback(server, capfd):
    requests = [
        req("GET", "/api/export"),
        req("GET", "/images/t0000/0"),
        req("GET", "/"),
        req("POST", "/api/answer", json.dumps(ANSWER).encode()),
        req("POST", "/api/answer", b"{}", {"Content-Length": "50"}),
        req("GET", "/api/state?labeler=x")[:20],
    ]
    for _ in range(5):
        for data in requests:
            s = socket.create_connection(server.server_address[:2], timeout=10)
            s.sendall(data)
            _reset(s)
            s = socket.create_connection(server.server_address[:2], timeout=10)
            s.sendall(data)
            s.close()
    time.sleep(IDLE * 3)  # let the handlers hit the closed sockets
    assert exchange(server, req("GET", "/api/status")).status == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err


# --------------------------------------------------------------------------- abuse battery


def battery() -> list[bytes]:
    """Malformed requests of every class, each a complete byte string."""
    ok = json.dumps(ANSWER).encode()
    cases = [
        b"",
        b"\r\n",
        b"GET",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1000000000000\r\n\r\n",
        b"GET / FOO/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4,
        b"\x00" * 1000 + b"\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        req("GET", "/", headers={"X-Big": "a" * 70_000}),
        req("GET", "/", headers={f"X-{i}": "1" for i in range(150)}),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\x00evil\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # no Host
        req("GET", "/", host="evil.example"),
        req("GET", "/", host="x" * 5000),
        req("GET", "http://127.0.0.1/api/status"),
        req("OPTIONS", "*"),
        req("CONNECT", "127.0.0.1:22"),
    ]
    for length in ["abc", "-1", "+2", "2, 2", "0x2", "1e3", "²", "9" * 5000, "99999999999"]:
        cases.append(req("POST", "/api/answer", b"{}", {"Content-Length": length}))
    cases += [
        req("POST", "/api/answer", ok, {"Content-Length": str(len(ok) + 50)}),  # short body
        req("POST", "/api/answer", ok + b"GET / HTTP/1.1\r\n\r\n"),  # smuggled second request
        req("POST", "/api/answer", ok, {"Transfer-Encoding": "chunked"}),
        b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 20\r\n\r\n{}",
        req("POST", "/api/answer", ok, {"Content-Type": "text/plain"}),
        req("POST", "/api/answer", ok, {"Content-Type": "x" * 5000}),
        req("POST", "/api/answer", ok, {"Expect": "100-continue"}),
        req("POST", "/api/answer", b"\xff\xfe\x00\x01" * 100),
        req("POST", "/api/tasks", b'{"tasks": "' + b"x" * 500_000 + b'"}'),
    ]
    paths = [
        "/static/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%00",
        "/static/app.js%00.png",
        "/static/app.js/",
        "/static/",
        "/images/t0000/00",
        "/images/t0000/99999999999999999999",
        "/images/%2e%2e/0",
        "/images/t0000/0/../../../../etc/passwd",
        "//etc/passwd",
        "/./static/app.js",
        "/api/state?labeler=%ff%fe",
        "/api/state?labeler=a&labeler=b%00",
        "/api/state?labeler=" + "a" * 60_000,
        "/api/state?" + "&".join(f"k{i}=v" for i in range(5000)),
        "/api/export?labeler=../../x",
        "/\xff\xfe",
        "/api/status#frag",
    ]
    cases += [req("GET", p) for p in paths]
    return cases


def test_abuse_battery_gets_no_5xx_and_leaves_the_database_alone(server, capfd):
    before = answers_in(server)
    replies = [exchange(server, data) for data in battery()]
    for data, reply in zip(battery(), replies, strict=True):
        assert reply.status is None or reply.status < 500, (data[:80], reply)
        if reply.status is not None and reply.status >= 400:  # JSON, never the stdlib's HTML
            assert reply.headers["Content-Type"] == "application/json", (data[:80], reply)
            assert b"<html" not in reply.body.lower()
            assert reply.json()["error"]
    no_answer = [data[:40] for data, r in zip(battery(), replies, strict=True) if r.status is None]
    assert no_answer == [b"", b"\r\n"]  # only an empty request gets no status line
    assert exchange(server, req("GET", "/api/status")).status == 200
    stored = sum(  # a few cases are well-formed answers in odd clothing; nothing else may store
        d.startswith(b"POST /api/answer") and r.status == 200
        for d, r in zip(battery(), replies, strict=True)
    )
    assert answers_in(server) == before + stored
    integrity(server.store.path)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


def test_random_mutations_of_valid_requests_get_no_5xx(server, capfd):
    rng = random.Random(0)
    bases = [
        req("GET", "/api/state?labeler=fz"),
        req("POST", "/api/answer", json.dumps({**ANSWER, "labeler": "fz"}).encode()),
        req("POST", "/api/undo", b'{"labeler": "fz", "answer_id": 1}'),
        req("POST", "/api/tasks", b'{"tasks": [{"task_id": "n", "prompt": "p", "images": []}]}'),
        req("GET", "/images/t0001/2"),
    ]
    statuses = []
    for _ in range(300):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            kind = rng.randrange(4)
            if kind == 0:
                data[i] = rng.randrange(256)
            elif kind == 1:
                data[i:i] = rng.randbytes(rng.randint(1, 8))
            elif kind == 2:
                del data[i : i + rng.randint(1, 8)]
            else:
                data[i:i] = data[i : i + rng.randint(1, 64)] * rng.randint(2, 50)
        reply = exchange(server, bytes(data))
        assert reply.status is None or reply.status < 500, (bytes(data), reply)
        statuses.append(reply.status)
    assert exchange(server, req("GET", "/api/status")).status == 200
    integrity(server.store.path)
    assert "Traceback" not in capfd.readouterr().err
    assert len(set(statuses)) > 3  # the mutations reached several different refusals


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "t0000", "al", "left", "tie", "images/t0000_0.png", "../x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = st.sampled_from([*ANSWER, "answer_id", "tasks", "root", "x"])


@settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written to the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(["/api/answer", "/api/undo", "/api/tasks"]),
    body=JSON | st.dictionaries(FIELDS, JSON).map(lambda d: {**ANSWER, **d}),
    wrap=st.integers(0, 2 * MAX_JSON_DEPTH),
)
def test_generated_json_bodies_get_no_5xx(server, path, body, wrap):
    raw = "[" * wrap + json.dumps(body) + "]" * wrap  # json writes NaN/Infinity for odd floats
    reply = exchange(server, req("POST", path, raw.encode()))
    assert reply.status is not None and reply.status < 500, (raw[:200], reply)
