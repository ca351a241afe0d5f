"""How diffenvs uses the CPU: one torch thread per process by default, and quiet model loading.

**Threads.** The world's models are small (a 64×64 latent UNet, a small CLIP), so torch's
intra-op threads gain little on an idle machine and lose a lot when the cores are shared: OpenMP
threads wait for each other, and one descheduled thread stalls every operation
(``benchmarks/first_hour.py`` measures it; ``docs/results/first_hour.md`` has the numbers). So
diffenvs runs torch with **one intra-op thread per process** and gets its parallelism from
batching (a vector env steps its whole batch through one forward pass) and from processes
(``accelerate launch``/``torchrun``, one process per core).

One option changes it, the environment variable ``DIFFENVS_THREADS`` (the CLI's ``--threads``
sets it for one command):

* unset: one thread (or ``OMP_NUM_THREADS`` where you set that);
* ``N``: N intra-op threads;
* ``torch``: leave torch's own default (one thread per core).

Where it applies:

* The ``diffenvs`` CLI and ``benchmarks/first_hour.py`` call :func:`prepare_process` first,
  before torch loads. It also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) so that idle OpenMP
  threads sleep instead of spinning on cores other processes need (it matters only with more
  than one thread). The examples and the other scripts get the default from the next point.
* As a library, the first model a process loads (any env, reward or agent, through
  :mod:`diffenvs.models.cache`) calls :func:`apply_default`, which sets torch's thread count only
  if nobody chose one: not when ``DIFFENVS_THREADS``, ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is
  set, not after :func:`set_threads`, and not when ``torch.set_num_threads`` was already given a
  value other than torch's default.
* The agents' ``threads`` / ``torch_threads`` options (default 1) set it for their run; the CLI
  fills them from ``--threads`` / ``DIFFENVS_THREADS`` unless given on the command line.

**Quiet loading.** :func:`quiet_loading` hides diffusers' and transformers' per-component
"Loading pipeline components" bars (``DIFFENVS_VERBOSE=1`` or the CLI's ``--verbose`` shows them).

This module imports nothing of diffenvs, and torch only when a function needs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

ENV_VAR = "DIFFENVS_THREADS"
VERBOSE_VAR = "DIFFENVS_VERBOSE"
DEFAULT_THREADS = 1

_state = {"chosen": False, "applied": False}


def requested_threads() -> int | None:
    """The thread count this process should use: an int, or None for torch's own default.

    ``DIFFENVS_THREADS`` if set; otherwise ``OMP_NUM_THREADS`` if the user set it; otherwise 1.
    Raises a ValueError that says what to write for a bad ``DIFFENVS_THREADS``.
    """
    text = os.environ.get(ENV_VAR, "").strip().lower()
    if not text:
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        return int(omp) if omp.isdigit() and int(omp) >= 1 else DEFAULT_THREADS
    if text in ("torch", "auto", "default"):
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(
        f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a thread count: write a whole number >= 1 "
        f"(e.g. {ENV_VAR}=1, the default) or {ENV_VAR}=torch for torch's own default."
    )


def prepare_process(threads: int | str | None = None) -> int | None:
    """Set the thread policy for a process diffenvs starts (CLI, examples, benchmarks).

    Call it before torch is imported where you can (then OpenMP starts with the right settings);
    it also works afterwards. ``threads`` (an int, or ``"torch"``) overrides ``DIFFENVS_THREADS``
    and is written to it, so child processes inherit it. Returns the thread count (None: torch's
    default).
    """
    if threads is not None:
        os.environ[ENV_VAR] = str(threads)
    n = requested_threads()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if n is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    elif ENV_VAR in os.environ:  # 'torch': let torch pick one thread per core
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.pop(var, None)
    if "torch" in sys.modules and n is not None:
        sys.modules["torch"].set_num_threads(n)
    _state["chosen"] = True
    return n


def set_threads(n: int) -> None:
    """Use ``n`` torch intra-op threads from now on (and keep :func:`apply_default` from changing
    it)."""
    import torch

    if n < 1:
        raise ValueError(f"The thread count must be >= 1, got {n}.")
    torch.set_num_threads(n)
    _state["chosen"] = True


def _torch_default_threads() -> set[int]:
    """The counts torch starts with when nothing is set: one per physical or logical core."""
    logical = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    with contextlib.suppress(OSError):
        phys = core = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                    cores.add((phys, core))
    return {logical, len(cores) or logical}


def user_chose_threads() -> bool:
    """Whether someone already picked torch's thread count (see the module docstring)."""
    if _state["chosen"] or any(v in os.environ for v in (ENV_VAR, "OMP_NUM_THREADS")):
        return True
    if "MKL_NUM_THREADS" in os.environ:
        return True
    import torch

    return torch.get_num_threads() not in _torch_default_threads()


def apply_default() -> None:
    """Apply the one-thread default once per process, unless the user chose a thread count."""
    if _state["applied"]:
        return
    _state["applied"] = True
    if user_chose_threads():
        return
    import torch

    torch.set_num_threads(DEFAULT_THREADS)


def verbose() -> bool:
    """Whether model loading may print its progress bars (``DIFFENVS_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_VAR, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' loading bars inside the block (unless verbose)."""
    if verbose():
        yield
        return
    restore = []
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            logging = __import__(module, fromlist=["disable_progress_bar"])
        except ImportError:
            continue
        if logging.is_progress_bar_enabled():
            logging.disable_progress_bar()
            restore.append(logging.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()
