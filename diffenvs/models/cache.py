"""One process-wide, thread-safe cache of loaded models, shared by every env, reward and agent.

A vector env builds one env per slot, a benchmark builds dozens, and a denoising env, a prompt env
and a CLIP reward in one process all want the same CLIP: each model is loaded once per process and
key, and every later request gets the same object.

    clip = shared_clip("world")                    # loads it
    clip is shared_clip("world", device="cpu")     # True: same key, same object
    pipe = shared_pipeline("world")                # the pipeline DiffusionDenoise-v0 steps

Keys are tuples ``(kind, name, device[, dtype])``; the ``kind`` namespaces them, so
``clear_caches("prompt_append")`` drops one namespace only. Environments also keep their
per-prompt stores (images, embeddings) here under their own kind, so those stores are shared by
every env with the same image source and cleared with one call.

Loading happens outside the cache-wide lock, under a per-key lock: two threads asking for the same
model wait for one load, and a loader may itself ask the cache for another model (a learned reward
model asks for its CLIP) without a deadlock.

Objects handed out are shared: moving one to another device (``reward.to("cuda")``) moves it for
every holder. Code that changes a model's weights (a policy's UNet) must copy it first.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import torch

from diffenvs.models.devices import check_device, check_dtype

__all__ = [
    "MODEL_CACHE",
    "ModelCache",
    "check_device",
    "check_dtype",
    "clear_caches",
    "device_key",
    "shared",
    "shared_clip",
    "shared_oracle",
    "shared_pipeline",
]

T = TypeVar("T")
Key = tuple[Hashable, ...]


class ModelCache:
    """A thread-safe ``key → object`` store that runs each key's loader at most once.

    ``loads`` counts how often each key's loader has run (1 per key unless the key was cleared
    in between); tests read it to check that models are shared.
    """

    def __init__(self) -> None:
        self._entries: dict[Key, Any] = {}
        self._key_locks: dict[Key, threading.RLock] = {}
        self._lock = threading.Lock()
        self.loads: Counter[Key] = Counter()

    def get(self, key: Key, load: Callable[[], T]) -> T:
        """The object cached under ``key``, loading it with ``load()`` on first use."""
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.RLock())
        with key_lock:
            with self._lock:
                if key in self._entries:  # another thread loaded it while we waited
                    return self._entries[key]
            from diffenvs.runtime import apply_default

            apply_default()  # one torch thread unless the user chose (diffenvs/runtime.py)
            value = load()
            with self._lock:
                self._entries[key] = value
                self.loads[key] += 1
            return value

    def clear(self, kind: str | None = None) -> None:
        """Forget every entry (or those whose key starts with ``kind``); holders keep theirs."""
        with self._lock:
            if kind is None:
                self._entries.clear()
            else:
                for key in [k for k in self._entries if k and k[0] == kind]:
                    del self._entries[key]

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: The process-wide cache every loader in this package goes through.
MODEL_CACHE = ModelCache()


def device_key(device: str | torch.device | None) -> str:
    """The canonical device name of a key (``None`` means the loaders' default, the CPU).

    ``"cuda"`` and ``"cuda:0"`` name one GPU (a pipeline reports ``cuda:0`` where a user wrote
    ``cuda``), so both map to the current GPU's indexed name.
    """
    dev = check_device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


def shared(
    kind: str,
    name: Hashable,
    load: Callable[[], T],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> T:
    """``load()``'s result, cached under ``(kind, name, device[, dtype])`` in :data:`MODEL_CACHE`."""
    key: Key = (kind, name if isinstance(name, tuple) else str(name), device_key(device))
    if dtype is not None:
        key = (*key, str(dtype))
    return MODEL_CACHE.get(key, load)


def shared_clip(clip: Any = "world", device: str | torch.device | None = None) -> Any:
    """A :class:`~diffenvs.models.clip.ClipModel` from a name (``"world"``, ``"ViT-L-14/openai"``,
    a folder; loaded once per process and device) or an existing ClipModel (moved to ``device``
    when one is given)."""
    from diffenvs.models import clip as clip_module

    if isinstance(clip, clip_module.ClipModel):
        return clip if device is None else clip.to(device)
    if not isinstance(clip, str | Path):
        raise TypeError(f"clip must be a CLIP name or a ClipModel, got {type(clip).__name__}.")
    # Looked up at call time (not imported by name) so tests can count loads by patching it.
    return shared(
        "clip", clip, lambda: clip_module.load_clip(clip, device=device or "cpu"), device=device
    )


def shared_pipeline(
    model: str | Path = "world",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """A text-to-image pipeline by name or folder, loaded once per (device, dtype)."""
    from diffenvs.models import pipeline as pipeline_module

    check_dtype(dtype)
    dt = dtype or torch.float32
    dev = check_device(device)
    return shared(
        "pipeline",
        model,
        lambda: pipeline_module.load_pipeline(model, device=dev, dtype=dt),
        device=dev,
        dtype=dt,
    )


def shared_oracle(
    path: str | Path | None = None, device: str | torch.device | None = None
) -> torch.nn.Module:
    """The world's attribute oracle (``path`` overrides the shipped weights), loaded once."""
    from diffenvs.models import reward_networks

    name = "world" if path in (None, "world") else str(path)
    file = None if name == "world" else path
    return shared(
        "oracle",
        name,
        lambda: reward_networks.load_oracle(file, device=device or "cpu"),
        device=device,
    )


def clear_caches(kind: str | None = None) -> None:
    """Drop every cached model and store (or one ``kind``: ``"clip"``, ``"prompt_append"``, ...).

    Objects already handed out stay valid; the next request loads afresh.
    """
    MODEL_CACHE.clear(kind)
