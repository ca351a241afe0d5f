"""The networks behind pretrained rewards: the world's oracle, and ``load_reward_network``, which
picks any of them (oracle, LAION aesthetic head, PickScore) by one name.

Not to be confused with :func:`diffenvs.preference.load_reward_model`, which loads a reward model
*trained here* on rankings (a model folder).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffenvs.models.aesthetic import load_aesthetic
from diffenvs.models.devices import check_device
from diffenvs.models.errors import ModelNotFoundError
from diffenvs.models.pickscore import PICKSCORE_MODEL, load_pickscore


def load_oracle(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """The world's attribute oracle (see :mod:`diffenvs.world.oracle`); ``path`` overrides the
    shipped safetensors file."""
    check_device(device)
    from diffenvs.world.oracle import read_oracle

    try:
        model = read_oracle(path)
    except FileNotFoundError as err:
        raise ModelNotFoundError(str(err)) from err
    return model.to(device)


def load_judge(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """The world's independent judge (see :mod:`diffenvs.world.judge`): a second attribute
    classifier for evaluation only. Report its reading beside any oracle-based reward, never train
    on it. ``path`` overrides the shipped safetensors file."""
    check_device(device)
    from diffenvs.world.judge import read_judge

    try:
        model = read_judge(path)
    except FileNotFoundError as err:
        raise ModelNotFoundError(str(err)) from err
    return model.to(device)


_REWARD_FORMS = (
    "'oracle' or 'oracle:PATH', 'aesthetic:PATH' (or 'aesthetic:hf-hub:org/repo/file'), "
    "'pickscore' or 'pickscore:NAME'"
)


def load_reward_network(
    name: str, *, device: str | torch.device = "cpu", cache_dir: str | Path | None = None
) -> nn.Module:
    """The network behind a pretrained reward, by one name.

    * ``"oracle"`` / ``"oracle:PATH"`` → the world's :class:`~diffenvs.world.oracle.AttributeOracle`
      (images → attribute logits).
    * ``"aesthetic:PATH"`` → :func:`load_aesthetic` (CLIP image embeddings → score).
    * ``"pickscore"`` / ``"pickscore:NAME"`` → :func:`load_pickscore` ((images, prompts) → score).
    * ``"imagereward"`` is not bundled; see docs/models.md.

    The reward functions built on these (and their batching and standardisation) live in the
    reward library (:mod:`diffenvs.rewards.pretrained`). Each call loads afresh; envs and rewards
    share one copy through :mod:`diffenvs.models.cache`.
    """
    kind, _, arg = str(name).partition(":")
    kind = kind.strip().lower()
    if kind == "oracle":
        return load_oracle(arg or None, device=device)
    if kind == "aesthetic":
        if not arg:
            raise ModelNotFoundError(
                "'aesthetic' needs the weights: pass 'aesthetic:PATH' with the LAION predictor "
                "file (e.g. sac+logos+ava1-l14-linearMSE.pth, see docs/models.md)."
            )
        return load_aesthetic(arg, device=device, cache_dir=cache_dir)
    if kind == "pickscore":
        return load_pickscore(arg or PICKSCORE_MODEL, device=device, cache_dir=cache_dir)
    if kind == "imagereward":
        raise NotImplementedError(
            "ImageReward is not bundled: its BLIP-based model needs the `image-reward` package. "
            "Install it, load it with `ImageReward.load(...)` and wrap its `score(prompt, images)` "
            "as a reward function; or use 'pickscore' or 'aesthetic:PATH' (docs/models.md)."
        )
    raise ModelNotFoundError(f"Unknown reward model {name!r}. Pass {_REWARD_FORMS}.")
