"""Hub plumbing shared by every loader: offline detection, cache-only fallback, fetching one
file of a hub repo, and the "not available here" / "no such path" errors."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffenvs.models.errors import InvalidModelError, ModelNotFoundError

WORLD = "world"


def hub_offline() -> bool:
    """Whether Hugging Face hub access is switched off.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once at import, so setting it later (as a test or a
    notebook does) would otherwise be ignored; the environment is therefore read again here.
    """
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


_HUB_FLAG_LOCK = threading.RLock()
_PROBE_TTL_S = 60.0
_probe_cache: dict[tuple[str, int], tuple[float, str | None]] = {}


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub endpoint cannot be reached, or None if a TCP connection to it succeeds.

    Without network, huggingface_hub retries a missing file five times with backoff (about 25 s,
    minutes when packets are dropped) before giving up. One short connection attempt, remembered
    for a minute, turns that into an immediate cache-only load.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows; let huggingface_hub try
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    key = (url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443))
    now = time.monotonic()
    if key in _probe_cache and now - _probe_cache[key][0] < _PROBE_TTL_S:
        return _probe_cache[key][1]
    try:
        with socket.create_connection(key, timeout=timeout):
            reason = None
    except OSError as err:
        reason = f"{key[0]}:{key[1]} cannot be reached: {err}"
    _probe_cache[key] = (now, reason)
    return reason


def _cache_only_reason() -> str | None:
    """Why hub look-ups must stay in the local cache right now (None: the hub may be used)."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    unreachable = _hub_unreachable()
    return f"the hub is unreachable ({unreachable})" if unreachable else None


@contextlib.contextmanager
def _hub_offline_mode(offline: bool) -> Iterator[None]:
    """Make huggingface_hub refuse network requests while loading, if ``offline``.

    open_clip has no ``local_files_only`` switch, so its downloads only stay off the network when
    huggingface_hub's module-level flag is set; it is restored afterwards.
    """
    from huggingface_hub import constants

    # The flag is process-wide: loads from several threads take turns so none restores it early.
    with _HUB_FLAG_LOCK:
        previous = constants.HF_HUB_OFFLINE
        if offline:
            constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = previous


def _is_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.startswith((".", "~", "/", "\\")):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def _hub_not_found(
    kind: str,
    name: str,
    err: BaseException,
    *,
    reason: str | None,
    repo: str,
    files: str = "",
    pass_as: str | None = "DIR",
    lookup: str | None = None,
    world: bool = False,
) -> ModelNotFoundError:
    """The one "not available here" error: which id failed, why, and the two ways to provide it.

    ``reason`` is why the hub was not used (from :func:`_cache_only_reason`, taken before
    :func:`_hub_offline_mode` changes what it reports), or None if it was tried.
    """
    why = (
        f"it is not in the local Hugging Face cache and cannot be downloaded: {reason}"
        if reason
        else "it could neither be fetched from the hub nor found in the local Hugging Face cache"
    )
    if lookup is None:
        lookup = (
            "it names a Hugging Face hub repo"
            if name.startswith("hf-hub:")
            else "there is no local path of that name, so it was looked up as a Hugging Face hub id"
        )
    download = f"hf download {repo}{' ' + files if files else ''}"
    ways = []
    if pass_as:
        ways.append(
            f"on a machine with internet run `{download} --local-dir DIR`, copy DIR here and pass "
            f"{pass_as} instead of {name!r}"
        )
    ways.append(
        f"on a machine with internet run `{download}`, copy its Hugging Face cache "
        "(~/.cache/huggingface) here and point HF_HOME at the copy before starting Python "
        "(or pass cache_dir=COPY/hub)"
    )
    return ModelNotFoundError(
        # With a known reason the library's own text ("set local_files_only=False") only
        # misleads; it stays available as the chained exception.
        f"Could not load {kind} {name!r}: {lookup}, but {why}"
        + ("" if reason else f" ({_short(err)})")
        + ". To provide it: "
        + "; or ".join(ways)
        + ". Gated repos also need `hf auth login` before downloading."
        + (f" Use {WORLD!r} for the embedded offline world." if world else "")
    )


def _fetch_hub_file(
    repo: str,
    filename: str,
    *,
    kind: str,
    name: str,
    cache_dir: str | Path | None,
    revision: str | None = None,
    **hint: Any,
) -> Path:
    """One file of a hub repo from the cache (or the network unless offline).

    Fetching a small file first turns every "not available" case into one clear
    :class:`ModelNotFoundError` before a library buries it in its own error chain.
    ``hint`` is passed to :func:`_hub_not_found` (how to provide the model).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    reason = _cache_only_reason()
    offline = reason is not None
    try:
        with _hub_offline_mode(offline):
            file = hf_hub_download(
                repo,
                filename,
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
                local_files_only=offline,
            )
    except LocalEntryNotFoundError as err:
        raise _hub_not_found(kind, name, err, reason=reason, repo=repo, **hint) from err
    except EntryNotFoundError as err:
        # The repo exists and answered, but has no such file: it is the wrong kind of model.
        raise InvalidModelError(
            f"Hub repo {repo!r} has no {filename}, so it is not a {kind}. Check the id, or pass "
            "a local folder in the expected layout (see docs/models.md)."
        ) from err
    except Exception as err:  # network errors, 404 / gated repos, offline refusals
        raise _hub_not_found(kind, name, err, reason=reason, repo=repo, **hint) from err
    return Path(file)


def _missing_path(kind: str, text: str, forms: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{kind[0].upper()}{kind[1:]} {text!r} does not exist: no file or folder at "
        f"{Path(text).expanduser().resolve()} and it is not a valid Hugging Face hub id. "
        f"Pass {forms}."
    )
