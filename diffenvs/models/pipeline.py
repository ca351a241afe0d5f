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

_TRANSFORMER_COMPONENTS = (
    "transformer",
    "vae",
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "scheduler",
)  # SD3's T5 (text_encoder_3) is optional

#: The pipeline layouts the loaders accept: diffusers class and required components.
PIPELINE_LAYOUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sd": ("StableDiffusionPipeline", PIPELINE_COMPONENTS),
    "sdxl": ("StableDiffusionXLPipeline", (*PIPELINE_COMPONENTS, "text_encoder_2", "tokenizer_2")),
    "sd3": ("StableDiffusion3Pipeline", _TRANSFORMER_COMPONENTS),
    "flux": ("FluxPipeline", _TRANSFORMER_COMPONENTS),
}


def world_pipeline_path() -> Path:
    """Folder of the embedded world's text-to-image pipeline (diffusers layout)."""
    return weights_path("t2i")


def world_clip_path() -> Path:
    """Folder of the embedded world's CLIP (open_clip ``local-dir`` layout)."""
    return weights_path("clip")


def _declared(index: dict[str, Any], component: str) -> bool:
    return bool((index.get(component) or [None])[0])


def model_index_layout(index: dict[str, Any], where: str) -> str:
    """The layout (``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"``) a ``model_index.json`` declares.

    Raises:
        InvalidModelError: another kind of pipeline (an SDXL refiner, PixArt, ...), or a
            component the layout needs is missing.
    """
    cls = str(index.get("_class_name", ""))
    if _declared(index, "transformer"):
        layout = "flux" if "Flux" in cls else "sd3" if "StableDiffusion3" in cls else None
    elif "XL" in cls or _declared(index, "text_encoder_2"):
        layout = "sdxl"
    else:
        layout = "sd"
    if layout is None:
        raise InvalidModelError(
            f"{where} is a {cls or 'transformer'} pipeline, which the environments do not "
            "support. Supported layouts: StableDiffusionPipeline (SD 1.x/2.x, SD-Turbo), "
            "StableDiffusionXLPipeline, StableDiffusion3Pipeline and FluxPipeline."
        )
    missing = [c for c in PIPELINE_LAYOUTS[layout][1] if not _declared(index, c)]
    if missing:
        expected = PIPELINE_LAYOUTS[layout][0]
        hint = (
            " An SDXL refiner (no first text encoder) is an image-to-image model; use an SDXL base."
            if layout == "sdxl" and "text_encoder" in missing
            else ""
        )
        raise InvalidModelError(
            f"{where} is not a complete {expected}-layout pipeline: model_index.json "
            f"({cls}) lacks {', '.join(missing)}. Pass a folder saved by "
            f"{expected}.save_pretrained or a hub id of that layout.{hint}"
        )
    return layout


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
) -> Any:  # a diffusers text-to-image pipeline
    """A text-to-image pipeline: ``"world"``, a local folder, or a hub id.

    Four layouts load, chosen from ``model_index.json``: ``StableDiffusionPipeline`` (the world,
    SD 1.x/2.x, SD-Turbo), ``StableDiffusionXLPipeline`` (SDXL base), ``StableDiffusion3Pipeline``
    (SD3/SD3.5, with or without T5) and ``FluxPipeline`` (FLUX.1), e.g.
    ``load_pipeline("stabilityai/sd-turbo", device="cuda", dtype=torch.float16)``.
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
        index = _read_model_index(path / "model_index.json", str(path))
        layout = model_index_layout(index, str(path))
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
        index = _read_model_index(index_file, text)
        layout = model_index_layout(index, f"Hub repo {text!r}")
        source = text
    else:
        raise _missing_path(
            kind,
            text,
            "an existing pipeline folder, a hub id such as 'stabilityai/sd-turbo', or 'world'",
        )

    # Imported only now, so that a name that cannot be resolved fails without the slow import.
    import diffusers

    pipeline_class = getattr(diffusers, PIPELINE_LAYOUTS[layout][0])
    # Only Stable Diffusion 1.x/2.x pipelines take a safety checker.
    extra: dict[str, Any] = (
        {"safety_checker": None, "requires_safety_checker": False} if layout == "sd" else {}
    )
    if layout == "sd3":  # SD3 without its T5 encoder (saved with text_encoder_3=None)
        extra.update(
            {c: None for c in ("text_encoder_3", "tokenizer_3") if not _declared(index, c)}
        )
    reason = None if local else _cache_only_reason()
    offline = local or reason is not None
    try:
        from diffenvs.runtime import quiet_loading

        with _hub_offline_mode(offline), quiet_loading():
            pipe = pipeline_class.from_pretrained(
                source,
                **{_diffusers_dtype_kwarg(): dtype},
                **extra,
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
            f"{source} looks like a {PIPELINE_LAYOUTS[layout][0]} but could not be loaded "
            f"({_short(err)}). Check that every component folder is complete and was saved by "
            "save_pretrained; re-download or re-save it."
        ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
