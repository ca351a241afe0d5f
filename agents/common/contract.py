"""The agent contract: how the ``diffenvs train`` command finds every agent without a hand-written list.

Every agent package (``agents/ppo/``, ``agents/prompt/``, ...) declares, in its ``__init__.py``,

    AGENTS = (AgentSpec(name="ppo", config=PPOConfig, train="agents.ppo.train:train",
                        summary="Diffusion-policy PPO (DDPO/DPOK) on DiffusionDenoise-v0"),)

``config`` is the agent's tyro dataclass; ``train`` names the function that takes one config and
runs the agent. It is a string so that listing agents (``diffenvs train --help``) imports only the
light config modules, never torch-heavy training code. A package's ``__init__.py`` therefore
imports nothing but its config module(s).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AgentSpec:
    name: str
    """The CLI name: ``diffenvs train NAME``."""
    config: type
    """The agent's config dataclass (parsed by tyro)."""
    train: str
    """``"module:function"``: the function that runs the agent on one config."""
    summary: str
    """One line for ``diffenvs train --help``."""

    def load_train(self) -> Callable[[Any], Any]:
        module, _, func = self.train.partition(":")
        return getattr(importlib.import_module(module), func)


def discover() -> dict[str, AgentSpec]:
    """Every agent declared by a package under ``agents``, by CLI name (sorted)."""
    import agents

    found: dict[str, AgentSpec] = {}
    for info in pkgutil.walk_packages(agents.__path__, prefix="agents."):
        if not info.ispkg:
            continue
        module = importlib.import_module(info.name)
        for spec in getattr(module, "AGENTS", ()):
            if spec.name in found:
                raise RuntimeError(
                    f"Two agents are named {spec.name!r} ({found[spec.name].train} and "
                    f"{spec.train}); rename one in its package's AGENTS."
                )
            found[spec.name] = spec
    return dict(sorted(found.items()))
