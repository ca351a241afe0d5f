"""Text-to-image pipelines: the world's paths, model_index.json checks and load_pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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
from diffenvs.world.paths import weights_path

#: Components every Stable-Diffusion-layout pipeline folder must declare in ``model_index.json``.
PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def world_pipeline_path() -> Path:
    """Folder of the embedded world's text-to-image pipeline (diffusers layout)."""
    return weights_path("t2i")


def world_clip_path() -> Path:
    """Folder of the embedded world's CLIP (open_clip ``local-dir`` layout)."""
    return weights_path("clip")


def _check_model_index(index: dict[str, Any], where: str) -> None:
    if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
        raise InvalidModelError(
            f"{where} is an SDXL-layout pipeline ({index.get('_class_name')}, two text encoders), "
            "which the environments do not support. Use an SD 1.x/2.x or SD-Turbo checkpoint."
        )
    missing = [c for c in PIPELINE_COMPONENTS if not (index.get(c) or [None])[0]]
    if missing:
        raise InvalidModelError(
            f"{where} is not a Stable-Diffusion-layout pipeline: model_index.json "
            f"({index.get('_class_name')}) lacks {', '.join(missing)}. Pass a folder saved by "
            "StableDiffusionPipeline.save_pretrained or an SD 1.x/2.x / SD-Turbo hub id."
        )


def _read_model_index(file: Path, where: str) -> dict[str, Any]:
    try:
        index = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise InvalidModelError(
            f"Could not read {file} ({_short(err)}); re-save or re-download it."
        ) from err
    if not isinstance(index, dict):
        raise InvalidModelError(f"{file} is not a JSON object; re-save or re-download {where}.")
    return index


def _diffusers_dtype_kwarg() -> str:
    # diffusers renamed ``torch_dtype`` to ``dtype`` (the old name now warns); older releases
    # silently ignore ``dtype``, so pick the name the installed version understands.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def load_pipeline(
    name: str | Path = WORLD,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    **from_pretrained_kwargs: Any,
) -> Any:  # diffusers.StableDiffusionPipeline
    """A Stable-Diffusion-layout text-to-image pipeline: ``"world"``, a local folder, or a hub id.

    Anything ``StableDiffusionPipeline`` loads works: the world, SD 1.x/2.x and SD-Turbo-like
    checkpoints, e.g. ``load_pipeline("stabilityai/sd-turbo", device="cuda", dtype=torch.float16)``.
    The safety checker is not loaded and the progress bar is off (environments step the sampler).
    Extra keyword arguments (``revision``, ``variant``, ...) go to ``from_pretrained``.

    Raises:
        ModelNotFoundError: the folder does not exist, or the hub id is neither cached nor
            reachable (offline mode, no network).
        InvalidModelError: the folder or repo exists but is not a loadable SD-layout pipeline.
    """
    check_device(device)
    kind = "text-to-image model"
    text = str(name)
    path = world_pipeline_path() if text == WORLD else Path(text).expanduser()
    local = text == WORLD or path.exists()
    if text == WORLD and not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"The embedded world's text-to-image weights are missing from {path}. Reinstall "
            "diffenvs, or retrain them with `python -m diffenvs.world.training.train_unet`."
        )
    if local:
        if not (path / "model_index.json").is_file():
            raise InvalidModelError(
                f"{path} is not a diffusers pipeline folder: it has no model_index.json. Pass a "
                "folder saved by StableDiffusionPipeline.save_pretrained (model_index.json, unet/, "
                "vae/, text_encoder/, tokenizer/, scheduler/). A single-file .safetensors/.ckpt "
                "checkpoint must first be converted: on a machine with internet run "
                "`StableDiffusionPipeline.from_single_file(file).save_pretrained(folder)`."
            )
        _check_model_index(_read_model_index(path / "model_index.json", str(path)), str(path))
        source = str(path)
    elif _is_hub_id(text):
        index_file = _fetch_hub_file(
            text,
            "model_index.json",
            kind=kind,
            name=text,
            world=True,
            cache_dir=cache_dir,
            revision=from_pretrained_kwargs.get("revision"),
        )
        _check_model_index(_read_model_index(index_file, text), f"Hub repo {text!r}")
        source = text
    else:
        raise _missing_path(
            kind,
            text,
            "an existing pipeline folder, a hub id such as 'stabilityai/sd-turbo', or 'world'",
        )

    # Imported only now, so that a name that cannot be resolved fails without the slow import.
    from diffusers import StableDiffusionPipeline

    reason = None if local else _cache_only_reason()
    offline = local or reason is not None
    try:
        from diffenvs.runtime import quiet_loading

        with _hub_offline_mode(offline), quiet_loading():
            pipe = StableDiffusionPipeline.from_pretrained(
                source,
                **{_diffusers_dtype_kwarg(): dtype},
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=offline,
                cache_dir=None if cache_dir is None else str(cache_dir),
                **from_pretrained_kwargs,
            )
    except Exception as err:
        if not local and isinstance(err, OSError):
            # model_index.json was there, but a component is not (fully) cached or reachable.
            raise _hub_not_found(
                kind,
                text,
                err,
                reason=reason,
                repo=text,
                lookup="its model_index.json was found, but not all of its component files",
                world=True,
            ) from err
        raise InvalidModelError(
            f"{source} looks like a Stable Diffusion pipeline but could not be loaded "
            f"({_short(err)}). Check that every component folder is complete and was saved by "
            "save_pretrained; re-download or re-save it."
        ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
