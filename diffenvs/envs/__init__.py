"""The environments, importable by class as well as by Gymnasium id.

    from diffenvs.envs import DiffusionDenoiseEnv, GrammarGridEnv, PromptAppendEnv

* ``DiffusionDenoise-v0``: :class:`DiffusionDenoiseEnv` (:mod:`.diffusion_denoise`), with the
  native vector env :class:`DiffusionDenoiseVectorEnv` (:mod:`.denoise_vector`); both step a
  :class:`DenoiseCore` (:mod:`.denoise_core`).
* ``PromptAppend-v0``: :class:`PromptAppendEnv` (:mod:`.prompt_append`).
* ``GrammarGrid-v0``: :class:`GrammarGridEnv` (:mod:`.grammar_grid`).

The classes are imported on first access, so importing one light submodule (the prompt task sets,
the action checks) does not load torch and every model library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffenvs.envs.denoise_core import DenoiseCore
    from diffenvs.envs.denoise_vector import DiffusionDenoiseVectorEnv
    from diffenvs.envs.diffusion_denoise import DiffusionDenoiseEnv
    from diffenvs.envs.grammar_grid import GrammarGridEnv
    from diffenvs.envs.prompt_append import PromptAppendEnv

_EXPORTS = {
    "DenoiseCore": "diffenvs.envs.denoise_core",
    "DiffusionDenoiseEnv": "diffenvs.envs.diffusion_denoise",
    "DiffusionDenoiseVectorEnv": "diffenvs.envs.denoise_vector",
    "GrammarGridEnv": "diffenvs.envs.grammar_grid",
    "PromptAppendEnv": "diffenvs.envs.prompt_append",
}

__all__ = [
    "DenoiseCore",
    "DiffusionDenoiseEnv",
    "DiffusionDenoiseVectorEnv",
    "GrammarGridEnv",
    "PromptAppendEnv",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffenvs.envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
