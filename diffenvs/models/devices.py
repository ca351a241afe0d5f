"""Device and dtype checks every model loader runs first, so a missing GPU or driver is one
clear error instead of a message from deep inside torch."""

from __future__ import annotations

from typing import Any

import torch

from diffenvs.errors import ArgumentTypeError, DeviceUnavailableError, summarise

__all__ = ["check_device", "check_dtype"]


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or a clear error.

    ``None`` means the CPU. Raises ``TypeError`` for a non-device, ``ValueError`` for a string
    torch cannot read, and :class:`~diffenvs.errors.DeviceUnavailableError` for a device type or
    index that is not available here (no CUDA driver, ``cuda:7`` on a one-GPU machine, no MPS).
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise ArgumentTypeError(
            f"device must be a str such as 'cpu', 'cuda' or 'cuda:0', or a torch.device; got "
            f"{summarise(device)}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"device={summarise(device)} is not a device name; use 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailableError(
                f"device={str(dev)!r}: CUDA is not available on this machine (no GPU, no driver, "
                "or a CPU-only torch build); use device='cpu'."
            )
        if dev.index is not None and not 0 <= dev.index < count:
            raise DeviceUnavailableError(
                f"device={str(dev)!r}: this machine has {count} CUDA device(s), cuda:0.."
                f"cuda:{count - 1}."
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailableError(
                f"device={str(dev)!r}: Apple MPS is not available here; use 'cpu' (or 'cuda')."
            )
    elif dev.type != "cpu":
        raise DeviceUnavailableError(
            f"device={str(dev)!r}: only 'cpu', 'cuda[:N]' and 'mps' devices are supported."
        )
    return dev


def check_dtype(dtype: Any) -> None:
    """``dtype`` must be ``None`` or a floating-point ``torch.dtype``."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ArgumentTypeError(
            f"dtype must be None or a floating-point torch.dtype (torch.float32, torch.float16, "
            f"torch.bfloat16); got {summarise(dtype)}."
        )
