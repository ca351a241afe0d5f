"""Load a text-to-image pipeline, a CLIP and (optionally) an aesthetic predictor by name.

With no arguments everything comes from the embedded world (offline, CPU, a few seconds):

    python examples/load_models.py

Real checkpoints go through the same functions, by hub id (cached or downloadable) or folder:

    python examples/load_models.py --pipeline stabilityai/sd-turbo --steps 1 --guidance 0 \\
        --clip ViT-L-14/openai --aesthetic ~/models/sac+logos+ava1-l14-linearMSE.pth \\
        --device cuda --prompt "a watercolor fox in the snow"

See docs/models.md for every accepted name and for offline use.

Expected result with no arguments (measured): "pipeline: StableDiffusionPipeline from 'world'",
the world CLIP (image_size=64, cpu), a CLIP score of about 0.44 for the default prompt (0.440
measured, seed 0, 20 steps) and a 64x64 image in out/load_models.png. About 12 s on a busy 2-core
CPU, most of it loading.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from PIL import Image

from diffenvs.models import (
    WORLD,
    InvalidModelError,
    ModelNotFoundError,
    load_aesthetic,
    load_clip,
    load_pipeline,
)


@dataclass
class Args:
    pipeline: str = WORLD
    """'world', a diffusers SD folder, or a hub id such as 'stabilityai/sd-turbo'."""
    clip: str = WORLD
    """'world', an open_clip folder, 'hf-hub:org/repo' or 'ARCH/TAG' such as 'ViT-L-14/openai'."""
    aesthetic: str | None = None
    """Optional LAION aesthetic predictor file (.safetensors or .pth); needs --clip ViT-L-14/openai."""
    prompt: str = "two small red circles on a grass field, outlined"
    steps: int = 20
    guidance: float = 4.0
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    out: Path = Path("out/load_models.png")


def main(args: Args) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    # float16 halves memory for real checkpoints on a GPU; the CPU keeps float32.
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=dtype)
    clip = load_clip(args.clip, device=args.device)
    head = load_aesthetic(args.aesthetic, device=args.device) if args.aesthetic else None
    print(f"pipeline: {type(pipe).__name__} from {args.pipeline!r}")
    print(f"CLIP:     {clip}")

    with torch.no_grad():
        image = pipe(
            args.prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=torch.Generator().manual_seed(args.seed),
            output_type="np",
        ).images
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        print(f"CLIP score of {args.prompt!r}: {clip.score(image, [args.prompt]).item():.3f}")
        if head is not None:
            embedding = clip.encode_images(image)
            if embedding.shape[-1] != head.embed_dim:
                sys.exit(
                    f"The aesthetic predictor reads {head.embed_dim}-d embeddings but {args.clip!r} "
                    f"gives {embedding.shape[-1]}-d ones; pass the CLIP it was trained on "
                    "(--clip ViT-L-14/openai for the released LAION weights)."
                )
            print(f"aesthetic score: {head(embedding).item():.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[0]).save(args.out)
    print(f"wrote {args.out} ({image.shape[2]}x{image.shape[1]})")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except (ModelNotFoundError, InvalidModelError) as err:
        # These errors already say which model failed and how to provide it.
        sys.exit(f"error: {err}")
