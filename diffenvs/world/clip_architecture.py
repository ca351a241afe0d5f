"""The world's small CLIP, stored as an ordinary open_clip ``local-dir`` model.

The folder holds ``open_clip_config.json``, ``open_clip_model.safetensors`` and the world tokenizer,
so plain open_clip loads it: ``open_clip.create_model_and_transforms("local-dir:" + path)`` and
``open_clip.get_tokenizer("local-dir:" + path)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from diffenvs.io import write_json
from diffenvs.world.render import IMAGE_SIZE
from diffenvs.world.tokenizer import CONTEXT_LENGTH

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_config(vocab_size: int, eos_id: int) -> dict:
    return {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": {
                "image_size": IMAGE_SIZE,
                "layers": 4,
                "width": 96,
                "head_width": 32,
                "patch_size": 8,
            },
            "text_cfg": {
                "context_length": CONTEXT_LENGTH,
                "vocab_size": vocab_size,
                "width": 96,
                "heads": 3,
                "layers": 3,
                "pool_type": "eos",
                "eos_id": eos_id,
                "pad_id": eos_id,
                "hf_tokenizer_name": "diffenvs-world",
            },
        },
        "preprocess_cfg": {
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def create_world_clip(directory: str | Path):
    """Write config + tokenizer into ``directory`` and return a freshly initialised model."""
    from open_clip.model import CLIP

    from diffenvs.world.tokenizer import build_world_tokenizer

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_world_tokenizer(tmp)
    tokenizer.save_pretrained(directory)
    cfg = clip_config(len(tokenizer), tokenizer.eos_token_id)
    write_json(directory / "open_clip_config.json", cfg)
    return CLIP(**cfg["model_cfg"]), tokenizer
