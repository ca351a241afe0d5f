"""Entrants: the leaderboard's interface to an algorithm, and the suite's own agents behind it.

An entrant is anything with a ``name``, a one-line ``summary`` and a ``train`` method::

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained

It trains on ``task`` (build the env with ``gym.make_vec("DiffusionDenoise-v0", ...,
**task.env_options())``), generating at most ``budget.images`` training images, and returns the
fine-tuned denoiser (a copy of ``env.unwrapped.sampler.unet`` with the same call signature, LoRA
or full) and its training curve. The leaderboard evaluates every entrant's denoiser the same way
(:mod:`agents.bench.evaluate`), so an entrant never grades itself. ``docs/benchmark.md`` and
``examples/bench_my_agent.py`` show a complete one in ~60 lines.

Built-in entrants are registered by name in :data:`ENTRANTS` as ``"module:factory"`` strings, so
listing them imports nothing heavy; a researcher's entrant is passed as ``--entrant
my_module:MyEntrant`` (anything importable).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

    from agents.bench.tasks import Task


@dataclass(frozen=True)
class Budget:
    """What one cell may spend. ``images``: training images generated (each is one episode of
    ``task.num_steps`` sampler steps). ``seconds``: the wall-clock budget at which the leaderboard
    reads each curve (an entrant may also stop early when it runs out)."""

    images: int
    seconds: float


@dataclass(frozen=True)
class CurvePoint:
    images: int
    """Training images generated so far."""
    seconds: float
    """Wall-clock seconds since training started."""
    reward: float
    """Mean raw reward of the training images of this point (the task's reward, unstandardised)."""


@dataclass
class Trained:
    denoiser: nn.Module | None
    """The fine-tuned copy of ``sampler.unet`` (same call signature), in eval mode; None for a
    noise-mode policy (``noise_policy``)."""
    curve: list[CurvePoint]
    config: dict[str, Any] = field(default_factory=dict)
    """The options the entrant ran with (saved in the cell's JSON)."""
    noise_policy: Any = None
    """Instead of a denoiser: a policy of ``DiffusionDenoise-v0``'s noise mode, called on a batch
    of observations and returning the ``(mean, std)`` of each step's noise (tensors shaped like
    the latent); the base sampler is (0, 1). See :mod:`agents.bench.sb3_entrant`."""


class Diverged(RuntimeError):
    """Raised by an entrant whose policy has left the model's range (non-finite or |x| beyond the
    env's ``ACTION_LIMIT``): the runner records the cell as diverged, with the curve so far,
    instead of failing it. ``curve``: the training curve up to the divergence."""

    def __init__(self, reason: str, curve: list[CurvePoint]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.curve = curve


@runtime_checkable
class Entrant(Protocol):
    name: str
    summary: str

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained: ...


def cannot_run(entrant: Entrant, task: Task) -> str | None:
    """Why ``entrant`` does not apply to ``task``, or None. An entrant may define
    ``cannot_run(task) -> str | None`` (e.g. a direct-backprop agent on a reward without
    gradients); the runner skips such cells and the page lists them, instead of failing them."""
    method = getattr(entrant, "cannot_run", None)
    return None if method is None else method(task)


def trained_from_run(result: dict[str, Any], config: Any, images_per_update: int) -> Trained:
    """A :class:`Trained` from the result of a suite agent's ``train(cfg)`` (PPO, GRPO, direct):
    its policy's UNet, one curve point per logged update, and its config as JSON."""
    import json
    from dataclasses import asdict

    curve = [
        CurvePoint(int(row["update"]) * images_per_update, float(row["time_s"]), row["reward_mean"])
        for row in result["history"]
    ]
    options = json.loads(json.dumps(asdict(config), default=str))
    return Trained(result["policy"].unet.eval(), curve, options)


#: Built-in entrants: name -> "module:factory" (a class or function returning an Entrant).
ENTRANTS: dict[str, str] = {
    "ppo": "agents.bench.ppo_entrants:DDPOEntrant",
    "ppo-kl": "agents.bench.ppo_entrants:DPOKEntrant",
    "ppo-gae": "agents.bench.ppo_entrants:GAEEntrant",
    "reinforce": "agents.bench.reinforce_entrant:ReinforceEntrant",
    "grpo": "agents.bench.grpo_entrant:GRPOEntrant",
    "draft": "agents.bench.direct_entrant:DRaFTEntrant",
    "refl": "agents.bench.direct_entrant:ReFLEntrant",
    "sb3-ppo": "agents.bench.sb3_entrant:SB3PPOEntrant",
}


def entrant_names() -> list[str]:
    return sorted(ENTRANTS)


def load_entrant(spec: str) -> Entrant:
    """A built-in entrant by name, or ``"module:attr"`` of any importable entrant class/factory."""
    target = ENTRANTS.get(spec, spec)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"Unknown entrant {spec!r}: use one of {entrant_names()} or 'module:Class' of your "
            "own entrant (see docs/benchmark.md)."
        )
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"Cannot load entrant {spec!r} ({err}); check that {module} is importable and "
            f"defines {attr}."
        ) from err
    try:
        entrant = factory()
    except TypeError as err:
        raise TypeError(
            f"{spec} cannot be made without arguments ({err}); an entrant is a class or factory "
            "callable as Factory() (see docs/benchmark.md for the interface)."
        ) from err
    if not isinstance(entrant, Entrant):
        raise TypeError(
            f"{spec} made a {type(entrant).__name__}, which lacks name, summary or "
            "train(task, budget, seed, run_dir); see docs/benchmark.md for the interface."
        )
    return entrant
