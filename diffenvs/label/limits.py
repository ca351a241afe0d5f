"""What the labeling server accepts from a client, and the readers that enforce it.

Anything a client sends is untrusted: a broken script, a fuzzer or a stalled connection must get a
4xx that says what was wrong, never a 5xx, a traceback or a thread held forever. This module holds
the limits (sizes, nesting, number lengths, time) and the two pieces that apply them before a
route sees the request: :class:`DeadlineReader` (time) and :func:`parse_json_body` (content).
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import time
from email.message import Message
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20
"""Bytes per request body: an answer is ~100 bytes, a task list of a few thousand tasks fits."""
MAX_JSON_DEPTH = 16
"""Nesting of arrays and objects; the deepest legitimate body (a task list) has depth 3."""
MAX_INT_DIGITS = 15
"""Digits of a JSON integer: indices and answer ids are small, and 15 digits stay exact in JS."""
IDLE_TIMEOUT = 10.0
"""Seconds a connection may wait for the client's next bytes (or for it to read ours)."""
REQUEST_TIMEOUT = 30.0
"""Seconds for a whole request (request line, headers and body) to arrive."""
LINGER_SECONDS, LINGER_BYTES = 1.0, 2 * MAX_BODY
"""How long / how much of a refused body is read and dropped before closing (see ``linger``)."""

# A JSON string literal; the unrolled form never backtracks, so a hostile body stays linear.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CONTENT_LENGTH = re.compile(r"[0-9]+")
LABELER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # used with fullmatch: no "\n" tail
LABELER_RULE = "1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"


class ApiError(Exception):
    """A refusal: the HTTP status (always 4xx for client input) and what to change."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # the connection is unusable after this (e.g. a half-read body)


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


# ---------------------------------------------------------------------------------------- time


class DeadlineReader:
    """A request handler's ``rfile`` that cannot be held open by a slow or silent client.

    A plain socket timeout bounds each wait, but a client trickling one byte every few seconds
    would still hold a thread forever. Here every read waits at most ``idle`` seconds for data and
    stops with :class:`TimeoutError` once the request is ``total`` seconds old; lines are read one
    receive at a time so the deadline is checked between receives, not only at the end.
    """

    def __init__(self, raw: io.BufferedReader, sock: socket.socket, idle: float, total: float):
        self.raw, self.sock, self.idle, self.total = raw, sock, idle, total
        self.start_request()

    def start_request(self) -> None:
        self.deadline = time.monotonic() + self.total
        self.received = 0  # bytes of this request so far
        self.timed_out = False

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took longer than {self.total:g} s to arrive")
        self.sock.settimeout(min(self.idle, left))

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        try:
            while limit < 0 or len(out) < limit:
                self._arm()
                chunk = self.raw.peek(1)  # what is buffered, or one receive
                if not chunk:
                    break
                room = len(chunk) if limit < 0 else min(len(chunk), limit - len(out))
                end = chunk.find(b"\n", 0, room)
                out += self.raw.read(room if end < 0 else end + 1)
                if end >= 0:
                    break
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            self.received += len(out)
            self.sock.settimeout(self.idle)  # writes get the idle bound, not what was left
        return bytes(out)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("read the body with an explicit length")
        out = bytearray()
        try:
            while len(out) < n:
                self._arm()
                chunk = self.raw.read1(min(n - len(out), 1 << 16))
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            self.received += len(out)
            self.sock.settimeout(self.idle)
        return bytes(out)

    def __getattr__(self, name: str) -> Any:  # close(), closed, ... of the wrapped reader
        return getattr(self.raw, name)


def has_unread_input(sock: socket.socket) -> bool:
    """Whether the client sent bytes nobody read (or is still sending), without blocking."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError (nothing there), or the connection is already gone
        return False


def linger(sock: socket.socket) -> None:
    """Read and drop what the client is still sending, then let the caller close.

    Closing a socket with unread input makes the kernel reset the connection, and the reset can
    destroy our answer (a 413 or 405) before the client reads it; so after a refused body the
    server half-closes and drains for a bounded time first.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        end, got = time.monotonic() + LINGER_SECONDS, 0
        while got < LINGER_BYTES and (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(1 << 16)
            if not data:
                return
            got += len(data)
    except OSError:  # reset, timeout or already closed: nothing left to protect
        pass


# ------------------------------------------------------------------------------------- content


def content_length(headers: Message) -> int:
    """The declared body size, refusing what would make the body ambiguous or too large."""
    if headers.get("Transfer-Encoding") is not None:
        raise ApiError(
            411, "Transfer-Encoding is not supported; send the body with a Content-Length.", True
        )
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        raise ApiError(411, "A Content-Length header with the body size in bytes is required.")
    if len(values) > 1:
        raise ApiError(400, f"Conflicting Content-Length headers {sorted(values)}; send one.", True)
    value = values.pop()
    if not _CONTENT_LENGTH.fullmatch(value):
        raise ApiError(
            400, f"Content-Length must be a number of bytes, got {short(value)}.", close=True
        )
    if len(value) > 9 or int(value) > MAX_BODY:
        raise ApiError(
            413,
            f"The body is {value + ' bytes' if len(value) <= 9 else 'over a gigabyte'}; the "
            f"limit is {MAX_BODY} bytes. "
            "Send fewer tasks per request.",
            close=True,
        )
    return int(value)


def read_body(rfile: DeadlineReader, n: int) -> bytes:
    try:
        raw = rfile.read(n)
    except TimeoutError:
        raise ApiError(
            408,
            f"The body did not arrive in time ({n} bytes announced; a request may take at most "
            f"{rfile.total:g} s and pause at most {rfile.idle:g} s).",
            close=True,
        ) from None
    if len(raw) < n:
        raise ApiError(
            400,
            f"The body ended after {len(raw)} of the {n} bytes in Content-Length; send all of it.",
            close=True,
        )
    return raw


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects nest deeper than ``limit`` (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # fast path: too few brackets to nest that deep
    depth = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        if depth > limit:
            return True
    return False


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ApiError(
            400,
            f"The body holds an integer of {digits} digits; integers here are image indices and "
            f"answer ids of at most {MAX_INT_DIGITS} digits.",
        )
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(
            400, f"The number {short(text, 30)} is too large for a float; send a finite number."
        )
    return value


def _constant(name: str) -> None:
    raise ApiError(400, f"{name} is not valid JSON; send a finite number.")


def _check_text(obj: object) -> None:
    """Refuse lone UTF-16 surrogates (JSON ``"\\ud800"``): they cannot be stored or served."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(
                    400,
                    f"The body holds a string with an unpaired surrogate ({short(item)}); "
                    "send valid Unicode text.",
                ) from None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body as one JSON object within the limits above, or raise ApiError 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(
            400, f"The body is not UTF-8 (byte {err.start}: {err.reason}); send UTF-8 JSON."
        ) from None
    if json_depth_exceeds(text):
        raise ApiError(
            400,
            f"The body nests arrays/objects more than {MAX_JSON_DEPTH} levels deep; "
            "no request needs more than 3.",
        )
    try:
        body = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as err:
        raise ApiError(
            400,
            f"The body is not valid UTF-8 JSON ({err.msg} at line {err.lineno} column "
            f"{err.colno}); send a JSON object.",
        ) from None
    except RecursionError:  # the depth check should make this unreachable; stay a 400 anyway
        raise ApiError(400, "The body nests too deeply; send a flat JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The body must be a JSON object, got {type(body).__name__}.")
    _check_text(body)
    return body


# -------------------------------------------------------------------------------------- fields


def check_labeler(value: object) -> str:
    if not isinstance(value, str) or not LABELER_RE.fullmatch(value):
        raise ApiError(400, f"labeler must be a name of {LABELER_RULE}; got {short(value)}.")
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
        raise ApiError(
            400, f"Unknown field(s) {short(sorted(extra))}; allowed fields are {allowed}."
        )


def check_index(body: dict[str, Any], key: str, n: int) -> int:
    value = body[key]
    # bool is an int subclass in Python, but `true` is not an image index.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise ApiError(
            400, f"{key} must be an integer image index in 0..{n - 1}; got {short(value)}."
        )
    return value


def resolve_dir(root: str) -> Path | None:
    """``root`` as an absolute path, or None when no file system could hold it."""
    if not root or "\x00" in root or len(root) > 4096:
        return None
    try:
        return Path(root).resolve()
    except (OSError, ValueError):
        return None
