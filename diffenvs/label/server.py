"""The labeling web server (stdlib ``http.server``; no extra dependency).

Routes (all JSON bodies are validated strictly; every error is ``{"error": "..."}`` with a 4xx):

==========================  ================================================================
``GET  /``                  the labeling page (``static/index.html``)
``GET  /static/<name>``     the page's script and style sheet (a fixed list, nothing else)
``GET  /images/<task>/<k>`` the k-th image of a task: only images listed in a task, resolved
                            inside the task's directory (no path ever comes from the URL)
``GET  /api/state``         ``?labeler=NAME``: current task, pair, ordering so far, progress
``POST /api/answer``        ``{"labeler", "task_id", "left", "right", "outcome"}``
``POST /api/undo``          ``{"labeler", "answer_id"?}``: withdraw the latest answer
``GET  /api/tasks``         the task list; ``POST`` it ``{"tasks": [...]}`` to add tasks whose
                            images already sit in the server's tasks directory
``GET  /api/status``        progress of every labeler
``GET  /api/export``        ``labels.jsonl`` of the fully ordered tasks (``?labeler=`` filters)
==========================  ================================================================

The server binds to 127.0.0.1 by default and then also refuses requests whose ``Host`` header is
not a loopback name, so a web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from diffenvs.label.session import Conflict, Labeling, to_jsonl
from diffenvs.label.store import OUTCOMES, Store
from diffenvs.label.tasks import MAX_IMAGES, Task, TaskError, validate_task

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LABELER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
LABELER_RULE = "1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"
MAX_BODY = 1 << 20  # 1 MiB: an answer is ~100 bytes, a task list of a few thousand tasks fits
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_labeler(value: object) -> str:
    if not isinstance(value, str) or not LABELER_RE.match(value):
        raise ApiError(400, f"labeler must be a name of {LABELER_RULE}; got {value!r}.")
    return value


def check_keys(
    body: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    missing = required - body.keys()
    extra = body.keys() - required - optional
    if missing:
        raise ApiError(400, f"Missing field(s) {sorted(missing)}; send {sorted(required)}.")
    if extra:
        allowed = sorted(required | optional)
        raise ApiError(400, f"Unknown field(s) {sorted(extra)}; allowed fields are {allowed}.")


def check_index(body: dict[str, Any], key: str, n: int) -> int:
    value = body[key]
    # bool is an int subclass in Python, but `true` is not an image index.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise ApiError(400, f"{key} must be an integer image index in 0..{n - 1}; got {value!r}.")
    return value


def _host_name(header: str) -> str:
    """The name part of a Host header: ``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:80`` → ``[::1]``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung browser connection must not keep the process alive
    request_queue_size = 64  # the default 5 drops connections when a browser opens several at once

    def __init__(self, addr: tuple[str, int], store: Store, verbose: bool = False) -> None:
        self.store = store
        self.labeling = Labeling(store)
        self.verbose = verbose
        self.loopback_only = addr[0] in LOOPBACK_NAMES
        self._tasks: dict[str, Task] = {}
        super().__init__(addr, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def task(self, task_id: str) -> Task | None:
        if task_id not in self._tasks:  # tasks may have been added by another request or the CLI
            self._tasks = {t.task_id: t for t in self.store.tasks()}
        return self._tasks.get(task_id)


class Handler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "diffenvs-label"
    sys_version = ""

    # ------------------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _body(self) -> dict[str, Any]:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415,
                f"Send the body as JSON with Content-Type: application/json (got {ctype or 'none'!r}).",
            )
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "A Content-Length header with the body size in bytes is required.")
        if int(length) > MAX_BODY:
            raise ApiError(
                413,
                f"The body is {length} bytes; the limit is {MAX_BODY}. Send fewer tasks per request.",
            )
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(
                400, f"The body is not valid UTF-8 JSON ({err}); send a JSON object."
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, f"The body must be a JSON object, got {type(body).__name__}.")
        return body

    def _dispatch(self, routes: dict[str, Any]) -> None:
        try:
            host = _host_name(self.headers.get("Host") or "")
            if self.server.loopback_only and host not in LOOPBACK_NAMES:
                raise ApiError(
                    403, f"Host {host!r} is not this machine; open the page at {self.server.url}."
                )
            url = urlsplit(self.path)
            route = routes.get(url.path)
            if (
                route is None
                and url.path.startswith("/images/")
                and self.command in ("GET", "HEAD")
            ):
                route = self._image
            if (
                route is None
                and url.path.startswith("/static/")
                and self.command in ("GET", "HEAD")
            ):
                route = self._static
            if route is None:
                raise ApiError(404, f"No such page or endpoint {url.path!r}; the page is at /.")
            route(url.path, parse_qs(url.query))
        except ApiError as err:
            self._error(err.status, err.message)
        except Exception as err:  # keep serving; the labeler sees what failed
            self._error(500, f"Internal error ({type(err).__name__}: {err}); please report it.")
            if self.server.verbose:
                raise

    def do_GET(self) -> None:
        self._dispatch(
            {
                "/": lambda p, q: self._static("/static/index.html", q),
                "/api/state": self._get_state,
                "/api/tasks": self._get_tasks,
                "/api/status": lambda p, q: self._json(200, self.server.labeling.status()),
                "/api/export": self._get_export,
            }
        )

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._dispatch(
            {
                "/api/answer": self._post_answer,
                "/api/undo": self._post_undo,
                "/api/tasks": self._post_tasks,
            }
        )

    def do_PUT(self) -> None:
        self._error(405, "Only GET and POST are supported.")

    do_DELETE = do_PATCH = do_PUT

    # ------------------------------------------------------------------------------- routes

    def _static(self, path: str, query: dict[str, list[str]]) -> None:
        name = path.removeprefix("/static/")
        if name not in STATIC_FILES:  # a fixed list: no path from the URL reaches the disk
            raise ApiError(404, f"No static file {name!r}.")
        body = (STATIC_DIR / name).read_bytes()
        self._send(200, body, STATIC_FILES[name], {"Cache-Control": "no-cache"})

    def _image(self, path: str, query: dict[str, list[str]]) -> None:
        m = re.fullmatch(r"/images/([^/]+)/(\d{1,2})", path)
        task = self.server.task(m.group(1)) if m else None
        if m is None or task is None or int(m.group(2)) >= len(task.images):
            raise ApiError(404, f"No image at {path!r}; images are /images/<task_id>/<index>.")
        try:
            file = task.image_path(int(m.group(2)))
            body = file.read_bytes()
        except (TaskError, OSError) as err:
            raise ApiError(
                404, f"Image {path} is not available ({err}); check the tasks directory."
            ) from None
        self._send(200, body, "image/png", {"Cache-Control": "private, max-age=300"})

    def _query_labeler(self, query: dict[str, list[str]], required: bool = True) -> str | None:
        values = query.get("labeler")
        if not values:
            if required:
                raise ApiError(400, "Add ?labeler=NAME to the URL (the name you label under).")
            return None
        return check_labeler(values[0])

    def _get_state(self, path: str, query: dict[str, list[str]]) -> None:
        labeler = self._query_labeler(query)
        assert labeler is not None
        self._json(200, self.server.labeling.state(labeler))

    def _get_tasks(self, path: str, query: dict[str, list[str]]) -> None:
        tasks = self.server.store.tasks()
        self._json(200, {"tasks": [t.to_json() for t in tasks]})

    def _get_export(self, path: str, query: dict[str, list[str]]) -> None:
        labeler = self._query_labeler(query, required=False)
        body = to_jsonl(self.server.labeling.export_records(labeler))
        headers = {
            "Content-Disposition": 'attachment; filename="labels.jsonl"',
            "Cache-Control": "no-store",
        }
        self._send(200, body, "application/x-ndjson", headers)

    def _post_answer(self, path: str, query: dict[str, list[str]]) -> None:
        body = self._body()
        check_keys(body, {"labeler", "task_id", "left", "right", "outcome"})
        labeler = check_labeler(body["labeler"])
        task_id = body["task_id"]
        task = self.server.task(task_id) if isinstance(task_id, str) else None
        if task is None:
            raise ApiError(404, f"Unknown task_id {task_id!r}; GET /api/tasks lists the tasks.")
        left = check_index(body, "left", len(task.images))
        right = check_index(body, "right", len(task.images))
        if left == right:
            raise ApiError(
                400, f"left and right are both image {left}; compare two different images."
            )
        if body["outcome"] not in OUTCOMES:
            raise ApiError(
                400, f"outcome must be one of {list(OUTCOMES)}; got {body['outcome']!r}."
            )
        labeling = self.server.labeling
        self._change(
            labeler, lambda: labeling.answer(labeler, task.task_id, left, right, body["outcome"])
        )

    def _post_undo(self, path: str, query: dict[str, list[str]]) -> None:
        body = self._body()
        check_keys(body, {"labeler"}, frozenset({"answer_id"}))
        labeler = check_labeler(body["labeler"])
        answer_id = body.get("answer_id")
        if answer_id is not None and (
            not isinstance(answer_id, int) or isinstance(answer_id, bool)
        ):
            raise ApiError(
                400, f"answer_id must be an integer (the id of the last answer); got {answer_id!r}."
            )
        self._change(labeler, lambda: self.server.labeling.undo(labeler, answer_id))

    def _change(self, labeler: str, act: Callable[[], dict[str, object]]) -> None:
        """Reply with the new state, or 409 with the current one so a stale page can catch up."""
        try:
            state = act()
        except Conflict as err:
            self._json(409, {"error": str(err), "state": self.server.labeling.state(labeler)})
            return
        self._json(200, state)

    def _post_tasks(self, path: str, query: dict[str, list[str]]) -> None:
        body = self._body()
        check_keys(body, {"tasks"}, frozenset({"root"}))
        tasks_in = body["tasks"]
        if not isinstance(tasks_in, list) or not tasks_in:
            raise ApiError(400, "tasks must be a non-empty list of task objects.")
        roots = {t.root for t in self.server.store.tasks()}
        root = body.get("root")
        if root is None and len(roots) == 1:
            root = str(next(iter(roots)))
        # Only directories the operator already served may hold images: a client cannot make the
        # server read files from anywhere else.
        if not isinstance(root, str) or Path(root).resolve() not in roots:
            raise ApiError(
                400,
                "root must be one of the tasks directories this database already uses: "
                f"{sorted(map(str, roots))}; put the images there (import new folders with "
                "`diffenvs label import`).",
            )
        try:
            tasks = [validate_task(t, Path(root), f"tasks[{i}]") for i, t in enumerate(tasks_in)]
            ids = [t.task_id for t in tasks]
            if len(set(ids)) != len(ids):
                raise TaskError("The same task_id appears twice in tasks; ids must be unique.")
            added, unchanged = self.server.store.add_tasks(tasks)
        except TaskError as err:
            raise ApiError(400, str(err)) from None
        self.server._tasks = {}
        self._json(200, {"added": added, "unchanged": unchanged, "max_images": MAX_IMAGES})


def make_server(
    store: Store, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False
) -> LabelServer:
    """Bind the server (``port=0`` picks a free port; read it back from ``server.url``)."""
    try:
        return LabelServer((host, port), store, verbose)
    except OSError as err:
        raise OSError(
            f"Cannot listen on {host}:{port} ({err.strerror or err}); is another server using the "
            "port? Pass another --port (or --port 0 for any free one)."
        ) from err


def serve_forever(server: LabelServer) -> None:
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("\nstopped; every answer was already saved.", file=sys.stderr)
    finally:
        server.server_close()
