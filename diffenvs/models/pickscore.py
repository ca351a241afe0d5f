"""PickScore (a CLIP-H fine-tuned on Pick-a-Pic preferences) and load_pickscore."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffenvs.models.clip import prepare_images
from diffenvs.models.devices import check_device
from diffenvs.models.errors import InvalidModelError
from diffenvs.models.hub import (
    _cache_only_reason,
    _fetch_hub_file,
    _hub_not_found,
    _hub_offline_mode,
    _is_hub_id,
    _missing_path,
    _short,
)

#: PickScore's released model and the processor it was trained with.
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _features(out: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding;
    # transformers 4 returned the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class PickScore(nn.Module):
    """PickScore (a CLIP-H fine-tuned on Pick-a-Pic preferences) as a batched reward.

    ``score(images, prompts)`` is ``logit_scale.exp() * cos(image, prompt)`` per pair, as in the
    PickScore paper. Images are preprocessed in torch (see :func:`prepare_images`), so scores are
    differentiable; they can differ slightly from the PIL-based processor.
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
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.name = name

    def encode_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        p = next(self.model.parameters())
        x = prepare_images(
            images,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            device=p.device,
            dtype=p.dtype,
        )
        return F.normalize(_features(self.model.get_image_features(pixel_values=x)).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
        return F.normalize(_features(out).float(), dim=-1)

    def forward(self, images: torch.Tensor | np.ndarray, prompts: Sequence[str]) -> torch.Tensor:
        return self.score(images, prompts)

    def score(self, images: torch.Tensor | np.ndarray, prompts: Sequence[str]) -> torch.Tensor:
        """One score per (image, prompt) pair, shape (B,)."""
        cos = (self.encode_images(images) * self.encode_texts(prompts)).sum(-1)
        return self.model.logit_scale.exp().float() * cos


def _pickscore_source(spec: str, role: str) -> tuple[str, bool]:
    """(folder or hub id, is_local) for PickScore's model or processor."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path), True
    if not _is_hub_id(spec):
        raise _missing_path(
            f"PickScore {role}",
            spec,
            f"a transformers CLIP folder or a hub id such as {PICKSCORE_MODEL!r}",
        )
    return spec, False


def _pickscore_file(
    source: str, local: bool, filename: str, role: str, cache_dir: str | Path | None
) -> Path:
    if not local:
        pass_as = "DIR" if role == "model" else "processor=DIR"
        kind = f"PickScore {role}"
        return _fetch_hub_file(
            source, filename, kind=kind, name=source, cache_dir=cache_dir, pass_as=pass_as
        )
    file = Path(source) / filename
    if not file.is_file():
        raise InvalidModelError(
            f"{source} has no {filename}, so it is not a transformers CLIP {role} folder. Pass "
            "a folder saved by CLIPModel/CLIPProcessor.save_pretrained (PickScore's layout)."
        )
    return file


def load_pickscore(
    name: str | Path = PICKSCORE_MODEL,
    *,
    processor: str | Path | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> PickScore:
    """PickScore from a local transformers CLIP folder or a hub id (default ``PickScore_v1``).

    The tokenizer and image settings come from ``processor``: by default the model folder itself
    when it holds ``preprocessor_config.json``, else ``PICKSCORE_PROCESSOR`` (the CLIP-H processor
    PickScore was trained with).
    """
    check_device(device)
    from transformers import AutoTokenizer, CLIPModel

    source, local = _pickscore_source(str(name), "model")
    _pickscore_file(source, local, "config.json", "model", cache_dir)
    if processor is None:
        has_own = local and (Path(source) / "preprocessor_config.json").is_file()
        processor = source if has_own else PICKSCORE_PROCESSOR
    proc_source, proc_local = _pickscore_source(str(processor), "processor")
    pp_file = _pickscore_file(
        proc_source, proc_local, "preprocessor_config.json", "processor", cache_dir
    )
    pp = json.loads(pp_file.read_text())
    crop = pp.get("crop_size") or pp.get("size") or 224
    crop = crop if isinstance(crop, int) else crop.get("height") or crop.get("shortest_edge")

    def load(cls: Any, src: str, is_local: bool, role: str) -> Any:
        reason = None if is_local else _cache_only_reason()
        offline = is_local or reason is not None
        try:
            with _hub_offline_mode(offline):
                return cls.from_pretrained(
                    src,
                    local_files_only=offline,
                    cache_dir=None if cache_dir is None else str(cache_dir),
                )
        except OSError as err:
            if is_local:
                raise InvalidModelError(
                    f"Could not load the PickScore {role} from {src} ({_short(err)}); re-save "
                    "or re-download the folder."
                ) from err
            raise _hub_not_found(
                f"PickScore {role}",
                src,
                err,
                reason=reason,
                repo=src,
                pass_as="DIR" if role == "model" else "processor=DIR",
            ) from err

    return PickScore(
        load(CLIPModel, source, local, "model"),
        load(AutoTokenizer, proc_source, proc_local, "processor"),
        image_size=int(crop),
        mean=pp.get("image_mean", (0.48145466, 0.4578275, 0.40821073)),
        std=pp.get("image_std", (0.26862954, 0.26130258, 0.27577711)),
        name=str(name),
    ).to(device)
