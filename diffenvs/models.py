"""Load the models every environment and reward uses, by name, hub id or local path.

``"world"`` (the default everywhere) is the embedded world shipped inside this package. Any other
name is a local directory or a Hugging Face hub id; when it is neither on disk nor in the local
cache and the hub cannot be reached, :class:`ModelNotFoundError` says which id failed and how to
provide it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffenvs.world.paths import weights_path

WORLD = "world"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither the embedded world, a local folder, nor a reachable hub id."""


def _not_found(kind: str, name: str, err: Exception, example: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Could not load {kind} {name!r}: it is not a local directory and it could not be fetched "
        f"from the Hugging Face hub or found in the local cache ({type(err).__name__}: {err}). "
        f"On a machine with internet run `{example}` and pass the downloaded folder's path, or point "
        f"HF_HOME at a cache that holds it. Use {WORLD!r} for the embedded offline world."
    )


def world_pipeline_path() -> Path:
    return weights_path("t2i")


def world_clip_path() -> Path:
    return weights_path("clip")


def load_pipeline(
    name: str | Path = WORLD,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:  # StableDiffusionPipeline
    """A Stable-Diffusion-layout text-to-image pipeline: the world, a local folder, or a hub id.

    Works for SD 1.x/2.x and SD-Turbo-like checkpoints (anything ``StableDiffusionPipeline`` loads).
    The safety checker is not loaded; the progress bar is disabled (environments step it).
    """
    from diffusers import StableDiffusionPipeline

    path = world_pipeline_path() if str(name) == WORLD else Path(str(name)).expanduser()
    if str(name) == WORLD and not (path / "model_index.json").exists():
        raise ModelNotFoundError(
            f"The embedded world's text-to-image weights are missing from {path}. Reinstall "
            "diffenvs, or retrain them with `python -m diffenvs.world.training.train_unet`."
        )
    source = str(path) if path.exists() else str(name)
    if not path.exists() and (str(name).startswith((".", "/", "~")) or str(name).count("/") > 1):
        raise ModelNotFoundError(
            f"Text-to-image model folder {name!r} does not exist. Pass an existing folder with a "
            "model_index.json, a Hugging Face hub id such as 'stabilityai/sd-turbo', or 'world'."
        )
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    except (OSError, ValueError, EnvironmentError) as err:
        if path.exists():
            raise ValueError(
                f"{source} is not a loadable Stable Diffusion pipeline folder ({err}). It needs "
                "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
            ) from err
        raise _not_found("text-to-image model", str(name), err, f"hf download {name}") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class ClipModel:
    """An open_clip model with its tokenizer and preprocessing, batched and differentiable.

    ``encode_images`` takes uint8 images (B, H, W, 3) or float tensors (B, 3, H, W) in [0, 1], and
    ``encode_texts`` a list of strings; both return L2-normalised embeddings.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], name: str) -> None:  # fmt: skip
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ClipModel:
        self.model.to(device)
        return self

    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        from diffenvs.world.oracle import as_image_tensor

        x = as_image_tensor(images).to(self.device)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True, align_corners=False)  # fmt: skip
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def encode_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def score(self, images: torch.Tensor | np.ndarray, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its own text, shape (B,)."""
        return (self.encode_images(images) * self.encode_texts(texts)).sum(-1)


def load_clip(name: str | Path = WORLD, *, device: str | torch.device = "cpu") -> ClipModel:
    """A CLIP by name: ``"world"``, an open_clip ``local-dir`` folder, ``"hf-hub:org/repo"``, or
    ``"ARCH/TAG"`` for an open_clip pretrained tag (e.g. ``"ViT-B-32/openai"``)."""
    import open_clip

    text = str(name)
    if text == WORLD:
        folder: Path | None = world_clip_path()
        if not (folder / "open_clip_model.safetensors").exists():
            raise ModelNotFoundError(
                f"The embedded world's CLIP weights are missing from {folder}. Reinstall diffenvs, "
                "or retrain them with `python -m diffenvs.world.training.train_clip`."
            )
    else:
        folder = Path(text.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            folder = None
    if folder is not None:
        if not (folder / "open_clip_config.json").exists():
            raise ValueError(
                f"{folder} is not an open_clip model folder: open_clip_config.json is missing. "
                "Save one with open_clip's push_to_hf_hub layout (config + open_clip_model.safetensors)."
            )
        spec = "local-dir:" + str(folder)
        cfg = json.loads((folder / "open_clip_config.json").read_text())
        model = open_clip.create_model(spec)
        tokenizer = open_clip.get_tokenizer(spec)
        pre = cfg.get("preprocess_cfg", {})
        size = cfg["model_cfg"]["vision_cfg"]["image_size"]
        mean = tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(pre.get("std", open_clip.OPENAI_DATASET_STD))
        return ClipModel(model, tokenizer, int(size), mean, std, text).to(device)

    try:
        if text.startswith("hf-hub:"):
            model, _, preprocess = open_clip.create_model_and_transforms(text)
            tokenizer = open_clip.get_tokenizer(text)
        else:
            if "/" not in text:
                raise ValueError(
                    f"Unknown CLIP {text!r}. Use 'world', a folder, 'hf-hub:org/repo', or "
                    f"'ARCH/TAG' with an open_clip pretrained tag, e.g. 'ViT-B-32/openai'."
                )
            arch, tag = text.split("/", 1)
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag)
            tokenizer = open_clip.get_tokenizer(arch)
    except ValueError:
        raise
    except (OSError, RuntimeError) as err:
        raise _not_found("CLIP", text, err, f"hf download <the open_clip repo of {text}>") from err
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return ClipModel(model, tokenizer, int(size), tuple(mean), tuple(std), text).to(device)


def load_oracle(path: str | Path | None = None, *, device: str | torch.device = "cpu"):
    """The world's attribute oracle (see :mod:`diffenvs.world.oracle`)."""
    from diffenvs.world.oracle import load_oracle as _load

    return _load(path).to(device)
