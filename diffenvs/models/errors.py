"""The two errors every model loader raises."""

from __future__ import annotations


class ModelNotFoundError(FileNotFoundError):
    """The name resolves to nothing available here.

    Raised for a missing local path, an unknown name, or a hub id that is neither in the local
    Hugging Face cache nor reachable (offline mode, no network, no access).
    """


class InvalidModelError(ValueError):
    """Something was found under the name, but it cannot be loaded as the requested kind of model
    (missing config, corrupt file, wrong keys or shapes, unsupported layout)."""
