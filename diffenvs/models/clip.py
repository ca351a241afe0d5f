"""CLIP (open_clip): torch preprocessing, the ClipModel wrapper and load_clip."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffenvs.models.devices import check_device
from diffenvs.models.errors import InvalidModelError, ModelNotFoundError
from diffenvs.models.hub import (
    WORLD,
    _cache_only_reason,
    _fetch_hub_file,
    _hub_not_found,
    _hub_offline_mode,
    _is_hub_id,
    _missing_path,
    _short,
)
from diffenvs.models.pipeline import world_clip_path

_CLIP_FORMS = (
    "'world', an open_clip folder (or 'local-dir:PATH'), 'hf-hub:org/repo', or 'ARCH/TAG' with an "
    "open_clip pretrained tag such as 'ViT-B-32/openai' or 'ViT-L-14/openai'"
)


def prepare_images(
    images: torch.Tensor | np.ndarray,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """CLIP-style preprocessing in torch, so it is batched and differentiable.

    Takes uint8 (B, H, W, 3) arrays or float (B, 3, H, W) tensors in [0, 1]. ``resize_mode``
    follows open_clip: ``"shortest"`` scales the short side to ``size`` and centre-crops (OpenAI
    CLIP's preprocessing), ``"longest"`` scales the long side and zero-pads, ``"squash"`` resizes.
    """
    from diffenvs.world.oracle import as_image_tensor

    x = as_image_tensor(images).to(device=device, dtype=torch.float32)
    mode = interpolation if interpolation in ("bicubic", "bilinear", "nearest") else "bicubic"
    extra: dict[str, Any] = {} if mode == "nearest" else {"antialias": True, "align_corners": False}
    h, w = x.shape[-2:]
    if resize_mode == "squash" or h == w:
        target = (size, size)
    else:
        scale = size / (min(h, w) if resize_mode == "shortest" else max(h, w))
        target = (max(1, round(h * scale)), max(1, round(w * scale)))
    if tuple(x.shape[-2:]) != target:
        x = F.interpolate(x, size=target, mode=mode, **extra)
    if resize_mode == "longest":
        ph, pw = size - x.shape[-2], size - x.shape[-1]
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    else:
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).to(dtype)


class ClipModel:
    """An open_clip model with its tokenizer and preprocessing, batched and differentiable.

    ``encode_images`` takes uint8 images (B, H, W, 3) or float tensors (B, 3, H, W) in [0, 1], and
    ``encode_texts`` a list of strings; both return L2-normalised float32 embeddings.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name
        self.interpolation = interpolation
        self.resize_mode = resize_mode

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, image_size={self.image_size}, device={self.device})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device) -> ClipModel:
        self.model.to(device)
        return self

    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        return prepare_images(
            images,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            resize_mode=self.resize_mode,
            device=self.device,
            dtype=self.dtype,
        )

    def encode_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str] | str) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def score(self, images: torch.Tensor | np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each image with its own text, shape (B,)."""
        return (self.encode_images(images) * self.encode_texts(texts)).sum(-1)


def _wrap_open_clip(model: nn.Module, tokenizer: Any, name: str) -> ClipModel:
    import open_clip

    # open_clip records each model's preprocessing (from its config or pretrained tag) here.
    pp = dict(getattr(model.visual, "preprocess_cfg", None) or {})
    size = pp.get("size") or model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    return ClipModel(
        model,
        tokenizer,
        image_size=int(size),
        mean=pp.get("mean") or open_clip.OPENAI_DATASET_MEAN,
        std=pp.get("std") or open_clip.OPENAI_DATASET_STD,
        name=name,
        interpolation=str(pp.get("interpolation") or "bicubic"),
        resize_mode=str(pp.get("resize_mode") or "shortest"),
    )


def _check_clip_folder(folder: Path) -> None:
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise InvalidModelError(
            f"{folder} is not an open_clip model folder: open_clip_config.json is missing. An "
            "open_clip folder holds open_clip_config.json (model_cfg + preprocess_cfg) and "
            "open_clip_model.safetensors, as written by open_clip's push_to_hf_hub / "
            "diffenvs.world.clip_architecture."
        )
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise InvalidModelError(
            f"Could not read {config} ({_short(err)}); re-save or re-download it."
        ) from err
    if not isinstance(cfg, dict) or "model_cfg" not in cfg:
        raise InvalidModelError(
            f"{config} has no 'model_cfg'; it is not an open_clip config. Re-save it with open_clip."
        )
    # Without weights open_clip would silently build a randomly initialised model.
    if not any(f.suffix in {".safetensors", ".bin", ".pth"} for f in folder.iterdir()):
        raise InvalidModelError(
            f"{folder} has an open_clip config but no weights (open_clip_model.safetensors). "
            "Copy the weights file into the folder."
        )


def _load_clip_folder(folder: Path, name: str) -> ClipModel:
    import open_clip

    _check_clip_folder(folder)
    spec = f"local-dir:{folder}"
    try:
        with _hub_offline_mode(True):  # a local folder never needs the network
            model = open_clip.create_model(spec)
            tokenizer = open_clip.get_tokenizer(spec)
    except Exception as err:
        raise InvalidModelError(
            f"Could not load the open_clip model in {folder} ({_short(err)}). The weights file is "
            "corrupt or does not match open_clip_config.json; re-save or re-download the folder."
        ) from err
    return _wrap_open_clip(model, tokenizer, name)


def _load_clip_hub(text: str, cache_dir: str | Path | None) -> ClipModel:
    import open_clip
    from open_clip.pretrained import download_pretrained_from_hf

    repo = text.removeprefix("hf-hub:")
    kind = "CLIP"
    if not _is_hub_id(repo):
        raise ModelNotFoundError(
            f"CLIP {text!r} does not name a valid hub repo. Pass {_CLIP_FORMS}."
        )
    _fetch_hub_file(repo, "open_clip_config.json", kind=kind, name=text, cache_dir=cache_dir)
    reason = _cache_only_reason()
    offline = reason is not None
    cache = None if cache_dir is None else str(cache_dir)
    with _hub_offline_mode(offline):
        # open_clip only logs a warning when hub weights are missing and returns a random model.
        try:
            download_pretrained_from_hf(repo, cache_dir=cache)
        except Exception as err:
            raise _hub_not_found(kind, text, err, reason=reason, repo=repo) from err
        try:
            model = open_clip.create_model(text, cache_dir=cache)
            tokenizer = open_clip.get_tokenizer(text, cache_dir=cache)
        except Exception as err:
            raise InvalidModelError(
                f"Could not build the open_clip model {text!r} ({_short(err)}); re-download it."
            ) from err
    return _wrap_open_clip(model, tokenizer, text)


def _load_clip_tag(text: str, cache_dir: str | Path | None) -> ClipModel:
    import open_clip

    arch, sep, tag = text.rpartition("/")
    arch = arch.replace("/", "-")  # open_clip spells 'ViT-B/32' as 'ViT-B-32'
    if not sep or not arch or not tag:
        raise ModelNotFoundError(
            f"Unknown CLIP {text!r}: it is no local folder and not of the form ARCH/TAG. Pass {_CLIP_FORMS}."
        )
    models = open_clip.list_models()
    if arch not in models:
        near = difflib.get_close_matches(arch, models, n=4)
        raise ModelNotFoundError(
            f"Unknown CLIP {text!r}: no local folder of that name and {arch!r} is not an open_clip "
            f"architecture{f' (close: {near})' if near else ''}. Pass {_CLIP_FORMS}; "
            "open_clip.list_pretrained() lists every ARCH/TAG pair."
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelNotFoundError(
            f"Unknown open_clip pretrained tag {tag!r} for {arch}; known tags: {tags}."
        )
    # open_clip's tags name their weights as 'org/repo/' or 'org/repo/file' on the hub.
    org, repo_name, *file = str(cfg.get("hf_hub", "")).split("/")
    repo = f"{org}/{repo_name}"
    reason = _cache_only_reason()
    offline = reason is not None
    cache = None if cache_dir is None else str(cache_dir)
    with _hub_offline_mode(offline):
        # Fetch (or find) the weights first, so "not available" is told apart from a broken file.
        try:
            open_clip.download_pretrained(cfg, cache_dir=cache)
        except Exception as err:
            raise _hub_not_found(
                "CLIP",
                text,
                err,
                reason=reason,
                repo=repo,
                files="/".join(file),
                pass_as=None,  # open_clip finds tag weights through the cache only
                lookup=f"its weights are the hub repo {repo}",
            ) from err
        try:
            model = open_clip.create_model(arch, pretrained=tag, cache_dir=cache)
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache)
        except Exception as err:
            raise InvalidModelError(
                f"Could not build open_clip {arch} with weights {tag!r} ({_short(err)}); delete the cached file and fetch it again."
            ) from err
    return _wrap_open_clip(model, tokenizer, text)


def load_clip(
    name: str | Path = WORLD,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> ClipModel:
    """A CLIP by name, wrapped as a :class:`ClipModel`.

    ``name`` is ``"world"``, an open_clip folder (``PATH`` or ``"local-dir:PATH"``),
    ``"hf-hub:org/repo"``, or ``"ARCH/TAG"`` for an open_clip pretrained tag (e.g.
    ``"ViT-L-14/openai"``, the CLIP the LAION aesthetic MLP reads).

    Raises:
        ModelNotFoundError: unknown name, missing folder, or weights neither cached nor reachable.
        InvalidModelError: the folder or file exists but is not a loadable open_clip model.
    """
    check_device(device)
    text = str(name)
    if text == WORLD:
        folder = world_clip_path()
        if not (folder / "open_clip_model.safetensors").is_file():
            raise ModelNotFoundError(
                f"The embedded world's CLIP weights are missing from {folder}. Reinstall diffenvs, "
                "or retrain them with `python -m diffenvs.world.training.train_clip`."
            )
        clip = _load_clip_folder(folder, text)
    elif text.startswith("local-dir:"):
        folder = Path(text.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"CLIP folder {folder} (from {text!r}) does not exist. Pass an existing open_clip folder."
            )
        clip = _load_clip_folder(folder, text)
    elif text.startswith("hf-hub:"):
        clip = _load_clip_hub(text, cache_dir)
    elif Path(text).expanduser().exists():
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise InvalidModelError(
                f"{folder} is a file, not an open_clip folder. Put it in a folder next to its "
                "open_clip_config.json, or pass 'ARCH/TAG' for a built-in open_clip model."
            )
        clip = _load_clip_folder(folder, text)
    elif text.startswith((".", "~", "/", "\\")) or text.count("/") > 2:
        raise _missing_path("CLIP", text, _CLIP_FORMS)
    else:
        clip = _load_clip_tag(text, cache_dir)
    return clip.to(device)
