"""diffenvs: Gymnasium environments for reinforcement learning on text-to-image diffusion models.

Importing the package registers every environment with Gymnasium::

    import gymnasium as gym
    import diffenvs  # noqa: F401

    env = gym.make("GrammarGrid-v0")

The package also exposes the reward library and the model loaders::

    reward = diffenvs.make_reward("clip_score")        # any name of diffenvs.rewards
    clip = diffenvs.load_clip("world")                 # a fresh copy
    clip = diffenvs.shared_clip("world")               # the copy every env and reward shares

They are imported on first use, so ``import diffenvs`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from diffenvs.registration import ENV_IDS, register_envs

if TYPE_CHECKING:
    from diffenvs.models import (
        clear_caches,
        load_aesthetic,
        load_clip,
        load_judge,
        load_oracle,
        load_pickscore,
        load_pipeline,
        load_reward_network,
        shared_clip,
        shared_oracle,
        shared_pipeline,
    )
    from diffenvs.preference import load_reward_model
    from diffenvs.rewards import Reward, available_rewards, make_reward

try:
    # pyproject.toml's version is the single source; the installed metadata carries it.
    __version__ = version("diffenvs")
except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0+unknown"

_LAZY = {
    "Reward": "diffenvs.rewards",
    "available_rewards": "diffenvs.rewards",
    "make_reward": "diffenvs.rewards",
    "clear_caches": "diffenvs.models",
    "load_aesthetic": "diffenvs.models",
    "load_clip": "diffenvs.models",
    "load_judge": "diffenvs.models",
    "load_oracle": "diffenvs.models",
    "load_pickscore": "diffenvs.models",
    "load_pipeline": "diffenvs.models",
    "load_reward_network": "diffenvs.models",
    "shared_clip": "diffenvs.models",
    "shared_oracle": "diffenvs.models",
    "shared_pipeline": "diffenvs.models",
    "load_reward_model": "diffenvs.preference",
}

register_envs()

__all__ = [
    "ENV_IDS",
    "Reward",
    "__version__",
    "available_rewards",
    "clear_caches",
    "load_aesthetic",
    "load_clip",
    "load_judge",
    "load_oracle",
    "load_pickscore",
    "load_pipeline",
    "load_reward_model",
    "load_reward_network",
    "make_reward",
    "register_envs",
    "shared_clip",
    "shared_oracle",
    "shared_pipeline",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffenvs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
