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

``HEAD`` works wherever ``GET`` does, ``OPTIONS`` answers 204 with an ``Allow`` header anywhere,
and any other method on an existing path is a 405 with ``Allow``. Client input never gets a 5xx:
the limits in :mod:`diffenvs.label.limits` turn oversized, malformed, slow or hostile requests
into a 4xx whose JSON message says what to change, and a client that disconnects is dropped
without a traceback.

The server binds to 127.0.0.1 by default and then also refuses requests whose ``Host`` header is
not a loopback name, so a web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from diffenvs.label.limits import (
    IDLE_TIMEOUT,
    MAX_BODY,
    REQUEST_TIMEOUT,
    ApiError,
    DeadlineReader,
    check_index,
    check_keys,
    check_labeler,
    content_length,
    has_unread_input,
    linger,
    parse_json_body,
    read_body,
    resolve_dir,
    short,
)
from diffenvs.label.session import Conflict, Labeling, to_jsonl
from diffenvs.label.store import OUTCOMES, Store
from diffenvs.label.tasks import MAX_IMAGES, TASK_ID_RE, Task, TaskError, validate_task

__all__ = ["MAX_BODY", "ApiError", "LabelServer", "make_server", "serve_forever"]

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# path -> method -> handler method name; HEAD is served wherever GET is, OPTIONS everywhere.
ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": "_page"},
    "/api/state": {"GET": "_get_state"},
    "/api/tasks": {"GET": "_get_tasks", "POST": "_post_tasks"},
    "/api/status": {"GET": "_get_status"},
    "/api/export": {"GET": "_get_export"},
    "/api/answer": {"POST": "_post_answer"},
    "/api/undo": {"POST": "_post_undo"},
}
PREFIX_ROUTES: dict[str, dict[str, str]] = {
    "/static/": {"GET": "_static"},
    "/images/": {"GET": "_image"},
}


def allowed_methods(route: dict[str, str]) -> list[str]:
    methods = {*route, "OPTIONS"} | ({"HEAD"} if "GET" in route else set())
    return sorted(methods)


def _host_name(header: str) -> str:
    """The name part of a Host header: ``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:80`` → ``[::1]``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung browser connection must not keep the process alive
    request_queue_size = 64  # the default 5 drops connections when a browser opens several at once

    def __init__(
        self,
        addr: tuple[str, int],
        store: Store,
        verbose: bool = False,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.store = store
        self.labeling = Labeling(store)
        self.verbose = verbose
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.loopback_only = addr[0] in LOOPBACK_NAMES
        self._tasks: dict[str, Task] = {}
        super().__init__(addr, Handler)
        self._keep_open = store.keep_open()  # halves the cost of an answer (see its docstring)

    def server_close(self) -> None:
        super().server_close()
        self._keep_open.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def task(self, task_id: str) -> Task | None:
        if task_id not in self._tasks:  # tasks may have been added by another request or the CLI
            self._tasks = {t.task_id: t for t in self.store.tasks()}
        return self._tasks.get(task_id)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or stalls is routine for a web server, not an error to report.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: LabelServer
    rfile: DeadlineReader  # type: ignore[assignment]
    server_version = "diffenvs-label"
    sys_version = ""
    # Error replies before the request line is understood still get a status line and headers.
    default_request_version = "HTTP/1.0"

    # ------------------------------------------------------------------------------ plumbing

    def setup(self) -> None:
        super().setup()
        srv = self.server
        self.connection.settimeout(srv.idle_timeout)
        self.rfile = DeadlineReader(
            self.rfile,  # type: ignore[arg-type]
            self.connection,
            srv.idle_timeout,
            srv.request_timeout,
        )
        self._input_pending = False

    def handle_one_request(self) -> None:
        self.rfile.start_request()
        # What an error reply needs, in case reading the request line itself times out.
        self.requestline, self.request_version, self.command = "", "HTTP/1.0", None
        self._answered = False
        super().handle_one_request()  # catches a TimeoutError while reading the line or headers
        r = self.rfile
        if r.timed_out and r.received and not self._answered:  # a partial request, then silence
            self.send_error(
                408,
                f"The request stopped arriving (a request may pause at most {r.idle:g} s and "
                f"take at most {r.total:g} s).",
            )

    def finish(self) -> None:
        super().finish()
        # Answered before reading all the client sent (a refused body, bytes past the
        # Content-Length): drain, then close, or the reset could destroy the answer in flight.
        if self._input_pending or has_unread_input(self.connection):
            linger(self.connection)

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:  # HTTP/0.9: no headers, no status line
            self.command, self.request_version, self.close_connection = None, "HTTP/1.0", True
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(400, "HTTP/0.9 requests are not supported; send HTTP/1.0 or 1.1.")
            return False
        ok = super().parse_request()
        if ok:
            self._input_pending = self._announces_body()
        return ok

    def _announces_body(self) -> bool:
        length = (self.headers.get("Content-Length") or "0").strip()
        return length != "0" or self.headers.get("Transfer-Encoding") is not None

    def __getattr__(self, name: str) -> Any:
        # Every method, known or not, goes through one dispatcher, which answers 405 with Allow
        # (instead of the standard library's HTML 501) for the ones a path does not serve.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's protocol errors (bad request line, huge headers), as JSON."""
        short_msg, long_msg = self.responses.get(code, ("Bad request", ""))
        text = (message or short_msg)[:200]  # the stdlib quotes the whole (maybe huge) line
        if explain or (message is None and long_msg):
            text = f"{text}: {explain or long_msg}"
        # Only client input reaches here (e.g. 505 for "HTTP/2.0" in the request line); a
        # malformed request is the client's error, so it is a 400, never a 5xx.
        status = 400 if code >= 500 else code
        if code >= 500 or text.startswith("Bad request"):
            text += "; send a plain HTTP/1.1 request line like 'GET /api/status HTTP/1.1'"
        self.log_error("code %d, message %s", status, text)
        self.close_connection = True
        self._input_pending = True  # the client may still be sending: drain before closing
        self._error(status, text, {"Connection": "close"})

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        extra = dict(extra or {})
        if self._input_pending or self.close_connection:
            self.close_connection = True
            extra["Connection"] = "close"
        self._answered = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store", **(extra or {})})

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message}, extra)

    def _body(self) -> dict[str, Any]:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415,
                "Send the body as JSON with Content-Type: application/json "
                f"(got {short(ctype or 'none', 40)}).",
            )
        raw = read_body(self.rfile, content_length(self.headers))
        self._input_pending = False
        return parse_json_body(raw)

    def _dispatch(self) -> None:
        try:
            host = _host_name(self.headers.get("Host") or "")
            if self.server.loopback_only and host not in LOOPBACK_NAMES:
                raise ApiError(
                    403,
                    f"Host {short(host, 40)} is not this machine; open the page at "
                    f"{self.server.url}.",
                )
            if self.path == "*" and self.command == "OPTIONS":
                self._send(204, b"", "text/plain", {"Allow": "GET, HEAD, OPTIONS, POST"})
                return
            if not self.path.startswith("/"):
                raise ApiError(400, f"The request target must be a path, got {short(self.path)}.")
            path, _, query = self.path.partition("?")
            path = path.partition("#")[0]
            route = ROUTES.get(path) or next(
                (r for p, r in PREFIX_ROUTES.items() if path.startswith(p)), None
            )
            if route is None:
                raise ApiError(404, f"No such page or endpoint {short(path)}; the page is at /.")
            allow = ", ".join(allowed_methods(route))
            if self.command == "OPTIONS":
                self._send(204, b"", "text/plain", {"Allow": allow})
                return
            name = route.get("GET" if self.command == "HEAD" else self.command)
            if name is None:
                self._error(
                    405,
                    f"{short(self.command, 20)} is not allowed on {path}; use {allow}.",
                    {"Allow": allow},
                )
                return
            getattr(self, name)(path, parse_qs(query))
        except ApiError as err:
            self.close_connection = self.close_connection or err.close
            self._error(err.status, err.message)
        except (ConnectionError, TimeoutError):  # the client left or stopped reading: drop it
            self.close_connection = True
            self._input_pending = False
        except Exception as err:  # a bug: keep serving, tell the labeler, log it for the operator
            print(f"label server: internal error on {self.requestline!r}", file=sys.stderr)
            traceback.print_exc()
            self._error(500, f"Internal error ({type(err).__name__}); please report it.")

    # ------------------------------------------------------------------------------- routes

    def _page(self, path: str, query: dict[str, list[str]]) -> None:
        self._static("/static/index.html", query)

    def _static(self, path: str, query: dict[str, list[str]]) -> None:
        name = path.removeprefix("/static/")
        if name not in STATIC_FILES:  # a fixed list: no path from the URL reaches the disk
            raise ApiError(404, f"No static file {short(name)}.")
        body = (STATIC_DIR / name).read_bytes()
        self._send(200, body, STATIC_FILES[name], {"Cache-Control": "no-cache"})

    def _image(self, path: str, query: dict[str, list[str]]) -> None:
        m = re.fullmatch(r"/images/([^/]+)/([0-9]{1,2})", path)
        task = self.server.task(m.group(1)) if m else None
        if m is None or task is None or int(m.group(2)) >= len(task.images):
            raise ApiError(404, f"No image at {short(path)}; images are /images/<task_id>/<index>.")
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

    def _get_status(self, path: str, query: dict[str, list[str]]) -> None:
        self._json(200, self.server.labeling.status())

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
        known = isinstance(task_id, str) and TASK_ID_RE.fullmatch(task_id)
        task = self.server.task(task_id) if known else None
        if task is None:
            raise ApiError(
                404, f"Unknown task_id {short(task_id)}; GET /api/tasks lists the tasks."
            )
        left = check_index(body, "left", len(task.images))
        right = check_index(body, "right", len(task.images))
        if left == right:
            raise ApiError(
                400, f"left and right are both image {left}; compare two different images."
            )
        if body["outcome"] not in OUTCOMES:
            raise ApiError(
                400, f"outcome must be one of {list(OUTCOMES)}; got {short(body['outcome'])}."
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
                400,
                f"answer_id must be an integer (the id of the last answer); got {short(answer_id)}.",
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
        if not isinstance(root, str) or resolve_dir(root) not in roots:
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
    store: Store,
    host: str = "127.0.0.1",
    port: int = 8765,
    verbose: bool = False,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> LabelServer:
    """Bind the server (``port=0`` picks a free port; read it back from ``server.url``).

    ``idle_timeout`` bounds each wait for a client's bytes, ``request_timeout`` a whole request.
    """
    try:
        return LabelServer((host, port), store, verbose, idle_timeout, request_timeout)
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
