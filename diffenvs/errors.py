"""The error types every public entry point raises, and the checks that raise them.

The validation policy (``docs/validation.md``): environment constructors, ``reset``, ``step``,
reward calls and model loaders check their inputs at the boundary and raise one of

* ``TypeError``: an argument of the wrong kind (a list where a number is wanted);
* ``ValueError``: the right kind but a value outside its valid range, including
  :class:`NonFiniteError` for NaN/inf where finite numbers are required, and
  :class:`~diffenvs.models.errors.InvalidModelError` for a model file that cannot be loaded;
* ``FileNotFoundError``: a path that does not exist, and
  :class:`~diffenvs.models.errors.ModelNotFoundError` for a model name that resolves to nothing;
* ``RuntimeError``: a call in the wrong state (``step()`` before ``reset()`` or after the episode
  ended), and :class:`DeviceUnavailableError` for a device this machine does not have.

Every message names the argument, summarises the bad value (never dumps an array) and says what
is valid. This module imports only numpy, so every layer can use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DOCUMENTED_ERRORS",
    "MAX_SEED",
    "ArgumentTypeError",
    "DeviceUnavailableError",
    "NonFiniteError",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_number",
    "check_seed",
    "check_str",
    "summarise",
]

#: Seeds are integers in 0..MAX_SEED (what numpy's and torch's generators both accept).
MAX_SEED = 2**63 - 1


class NonFiniteError(ValueError):
    """A number, array, latent, observation or reward holds NaN or infinity where only finite
    values are valid."""


class ArgumentTypeError(TypeError):
    """An argument of the wrong kind (the ``TypeError`` the checks here raise).

    ``gymnasium.make`` re-raises an env constructor's ``TypeError`` as ``type(err)(message +
    every kwarg's repr)``, which would print whole arrays; this class cuts that suffix, keeping
    the message and the env id.
    """

    _GYM_SUFFIX = " was raised from the environment creator for "

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and self._GYM_SUFFIX in args[0]:
            head, _, tail = args[0].partition(self._GYM_SUFFIX)
            env_id = tail.partition(" with kwargs (")[0]
            args = (f"{head} (raised by {env_id}'s constructor)", *args[1:])
        super().__init__(*args)


class DeviceUnavailableError(RuntimeError):
    """The requested device (``"cuda"``, ``"cuda:3"``, ``"mps"``) does not exist on this machine
    or has no driver."""


#: Every error type a public entry point may raise for bad input (the fuzz tests check this).
DOCUMENTED_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    RuntimeError,
)


def summarise(value: Any, limit: int = 60) -> str:
    """A short description of ``value`` for an error message: arrays by dtype, shape and range,
    long reprs cut."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        kind = type(value).__name__
        try:
            arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
            if arr.size and np.issubdtype(arr.dtype, np.number):
                finite = arr[np.isfinite(arr)] if arr.dtype.kind in "fc" else arr
                span = f", range [{finite.min():.4g}, {finite.max():.4g}]" if finite.size else ""
                n_bad = int(arr.size - finite.size)
                bad = f", {n_bad} non-finite" if n_bad else ""
                return f"a {kind} of dtype {arr.dtype} and shape {tuple(arr.shape)}{span}{bad}"
        except Exception:  # a summary must never fail
            pass
        return f"a {kind} of dtype {value.dtype} and shape {tuple(value.shape)}"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (or open ends), else a TypeError/ValueError."""
    scalar = isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"
    real = isinstance(value, int | float | np.integer | np.floating) or scalar
    if isinstance(value, bool | np.bool_) or not real:
        raise ArgumentTypeError(f"{name} must be a real number, got {summarise(value)}.")
    number = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    valid = f"{lo}{low:g}, {high:g}{hi}"
    if not math.isfinite(number):
        raise NonFiniteError(f"{name} must be a finite number in {valid}, got {number}.")
    if (
        number < low
        or number > high
        or (low_open and number == low)
        or (high_open and number == high)
    ):
        raise ValueError(f"{name} must be in {valid}, got {number:g}.")
    return number


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (``None``: unbounded); integral floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"{name} must be an integer, got {summarise(value)}.")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        shown = (
            str(number) if len(str(number)) <= 30 else f"an integer of {len(str(number))} digits"
        )
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {shown}.")
    return number


def check_seed(name: str, seed: Any, allow_none: bool = True) -> int | None:
    """A seed: ``None`` (when allowed) or an int in 0..:data:`MAX_SEED`."""
    if seed is None and allow_none:
        return None
    return check_int(name, seed, 0, MAX_SEED)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (``"no"`` or ``0`` are refused: they would read as a flag)."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentTypeError(f"{name} must be True or False, got {summarise(value)}.")
    return bool(value)


def check_str(name: str, value: Any) -> str:
    """``value`` if it is a str."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, got {summarise(value)}.")
    return value


def check_choice(name: str, value: Any, allowed: Any, meaning: str = "") -> Any:
    """``value`` if it is one of ``allowed``, else a ValueError listing them."""
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value looked up in a dict
        ok = False
    if not ok:
        extra = f" ({meaning})" if meaning else ""
        raise ValueError(f"Unknown {name} {summarise(value)}; use one of {list(allowed)}{extra}.")
    return value


def check_finite(name: str, array: Any) -> None:
    """Raise :class:`NonFiniteError` if a numpy array or torch tensor holds NaN or infinity."""
    if hasattr(array, "detach"):  # a torch tensor: count on its own device
        import torch

        t = array.detach()
        if not t.is_floating_point() or bool(torch.isfinite(t).all()):
            return
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    else:
        arr = np.asarray(array)
        if arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all()):
            return
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    raise NonFiniteError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite values; every value must be finite."
    )
