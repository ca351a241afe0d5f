"""The LAION aesthetic predictor heads, weights-only state-dict reading and load_aesthetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffenvs.io import load_tensors
from diffenvs.models.devices import check_device
from diffenvs.models.errors import InvalidModelError, ModelNotFoundError
from diffenvs.models.hub import _fetch_hub_file, _short


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor head: CLIP image embedding → aesthetic score (~1-10).

    Same layers and parameter names (``layers.0.weight`` ...) as the released
    ``sac+logos+ava1-l14-linearMSE.pth``, which reads CLIP ViT-L/14 image embeddings (768-d).
    Inputs are L2-normalised here, as the predictor was trained on normalised embeddings.
    """

    def __init__(self, embed_dim: int = 768) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) embeddings → (B,) scores."""
        x = F.normalize(embeddings.to(self.layers[0].weight.dtype), dim=-1)
        return self.layers(x).squeeze(-1)


class AestheticLinear(nn.Linear):
    """The original LAION aesthetic predictor (v1): one linear layer, state dict ``weight``/``bias``."""

    def __init__(self, embed_dim: int = 768) -> None:
        super().__init__(embed_dim, 1)
        self.embed_dim = embed_dim

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return super().forward(F.normalize(embeddings.to(self.weight.dtype), dim=-1)).squeeze(-1)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from a ``.pth/.pt/.bin`` with ``weights_only=True``.

    A checkpoint that needs arbitrary unpickling is refused rather than executed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"No weights file at {path}. Check the path, or download the weights there."
        )
    if path.suffix == ".safetensors":
        try:
            state: Any = load_tensors(path)
        except ValueError as err:
            raise InvalidModelError(str(err)) from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise InvalidModelError(
                f"Could not read {path} as a weights-only torch checkpoint ({_short(err)}). Only "
                "plain tensors are loaded (torch.load(weights_only=True)); a file that pickles "
                "whole objects is refused. On a machine where you trust the file, re-save it with "
                "`safetensors.torch.save_file(module.state_dict(), 'weights.safetensors')`."
            ) from err
        # Training frameworks (e.g. Lightning) nest the weights under 'state_dict'.
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidModelError(
            f"{path} does not hold a flat dict of tensors (a state dict); save module.state_dict() instead."
        )
    return state


def _check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append(f"wrong shapes ({'; '.join(wrong)})")
    if problems:
        raise InvalidModelError(
            f"{source} does not match {type(model).__name__}({model.embed_dim}): "
            f"{', '.join(problems)}. Expected the LAION aesthetic predictor's state dict "
            "(layers.0/2/4/6/7.weight|bias for the MLP, or weight/bias for the linear v1)."
        )


def _resolve_weights_file(spec: str, *, kind: str, cache_dir: str | Path | None) -> Path:
    """A local path, or ``hf-hub:org/repo/path/in/repo`` fetched into (or found in) the HF cache."""
    if not spec.startswith("hf-hub:"):
        return Path(spec).expanduser()
    parts = spec.removeprefix("hf-hub:").split("/")
    if len(parts) < 3:
        raise ModelNotFoundError(
            f"{kind} {spec!r} must name a file: 'hf-hub:org/repo/file.safetensors'."
        )
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    return _fetch_hub_file(
        repo,
        filename,
        kind=kind,
        name=spec,
        cache_dir=cache_dir,
        files=filename,
        pass_as=f"DIR/{filename}",
    )


def load_aesthetic(
    path_or_name: str | Path,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> AestheticMLP | AestheticLinear:
    """A LAION aesthetic predictor mapping CLIP image embeddings (B, D) to scores (B,).

    ``path_or_name`` is a ``.safetensors`` file, a weights-only ``.pth/.pt/.bin`` (e.g. the
    released ``sac+logos+ava1-l14-linearMSE.pth``), or ``"hf-hub:org/repo/file"``. The MLP and the
    linear v1 head are told apart by their keys and the input width is read from the weights. Feed
    it ``load_clip("ViT-L-14/openai").encode_images(images)`` for the released weights.

    Raises:
        ModelNotFoundError: no such file, or a hub file neither cached nor reachable.
        InvalidModelError: corrupt file, pickled objects, wrong keys or wrong shapes.
    """
    check_device(device)
    spec = str(path_or_name)
    path = _resolve_weights_file(spec, kind="aesthetic model", cache_dir=cache_dir)
    state = read_state_dict(path)
    if "layers.0.weight" in state:
        model: AestheticMLP | AestheticLinear = AestheticMLP(
            int(state["layers.0.weight"].shape[-1])
        )
    elif "weight" in state and state["weight"].ndim == 2:
        model = AestheticLinear(int(state["weight"].shape[-1]))
    else:
        raise InvalidModelError(
            f"{path} is not a LAION aesthetic predictor: its keys are {sorted(state)[:8]}, expected "
            "'layers.0.weight', ... (improved MLP) or 'weight'/'bias' (linear v1)."
        )
    _check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model.eval().to(device)
