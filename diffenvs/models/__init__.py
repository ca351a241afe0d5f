"""Load every model the environments and rewards use, by name, hub id or local path.

One place resolves names for all model kinds:

* ``"world"`` (the default everywhere) is the small embedded world shipped inside this package;
  it never touches the network.
* An existing local path is loaded from disk (a diffusers pipeline folder, an open_clip folder, a
  weights file).
* Anything else is treated as a Hugging Face hub id (or, for CLIP, an open_clip ``ARCH/TAG``).
  Offline mode (``HF_HUB_OFFLINE=1``, read when the function is called, not only at import) means
  the local cache only. When a hub id is neither cached nor reachable, :class:`ModelNotFoundError`
  names the id and says how to provide it.

Weights are read as safetensors, or with ``torch.load(..., weights_only=True)``: no loader here
unpickles arbitrary objects.

See ``docs/models.md`` for the name grammar and worked examples with real checkpoints.

The loaders live in submodules: :mod:`~diffenvs.models.hub` (offline detection, hub fetching),
:mod:`~diffenvs.models.errors`, :mod:`~diffenvs.models.pipeline`, :mod:`~diffenvs.models.clip`,
:mod:`~diffenvs.models.aesthetic`, :mod:`~diffenvs.models.pickscore` and
:mod:`~diffenvs.models.reward_networks`; every public name is re-exported here. To monkeypatch a
module-level name (e.g. ``world_pipeline_path``), patch it in the submodule that uses it.

Every ``load_*`` call loads afresh. Envs, rewards and agents instead share one copy per process
through :mod:`~diffenvs.models.cache` (``shared_clip``, ``shared_pipeline``, ``shared_oracle``).
"""

from __future__ import annotations

from diffenvs.models.aesthetic import (
    AestheticLinear,
    AestheticMLP,
    load_aesthetic,
    read_state_dict,
)
from diffenvs.models.cache import (
    MODEL_CACHE,
    ModelCache,
    clear_caches,
    shared,
    shared_clip,
    shared_oracle,
    shared_pipeline,
)
from diffenvs.models.clip import ClipModel, load_clip, prepare_images
from diffenvs.models.errors import InvalidModelError, ModelNotFoundError
from diffenvs.models.hub import WORLD, hub_offline
from diffenvs.models.pickscore import (
    PICKSCORE_MODEL,
    PICKSCORE_PROCESSOR,
    PickScore,
    load_pickscore,
)
from diffenvs.models.pickscore import _features as _features
from diffenvs.models.pipeline import (
    PIPELINE_COMPONENTS,
    load_pipeline,
    world_clip_path,
    world_pipeline_path,
)
from diffenvs.models.reward_networks import load_judge, load_oracle, load_reward_network

__all__ = [
    "MODEL_CACHE",
    "PICKSCORE_MODEL",
    "PICKSCORE_PROCESSOR",
    "PIPELINE_COMPONENTS",
    "WORLD",
    "AestheticLinear",
    "AestheticMLP",
    "ClipModel",
    "InvalidModelError",
    "ModelCache",
    "ModelNotFoundError",
    "PickScore",
    "clear_caches",
    "hub_offline",
    "load_aesthetic",
    "load_clip",
    "load_judge",
    "load_oracle",
    "load_pickscore",
    "load_pipeline",
    "load_reward_network",
    "prepare_images",
    "read_state_dict",
    "shared",
    "shared_clip",
    "shared_oracle",
    "shared_pipeline",
    "world_clip_path",
    "world_pipeline_path",
]
