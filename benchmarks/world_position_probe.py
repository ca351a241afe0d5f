"""Does a world text-to-image model place objects where the prompt says, or where x_T says?

Twelve single-object scenes, each prompted with "on the left of", "in the middle of" and "on the
right of", all three sampled from the SAME starting noise x_T (20 DDIM steps, guidance 4). The
world oracle reads each image's position. Printed and written:

* ``position_accuracy``: the oracle's position agrees with the prompt (chance 1/3);
* ``same_position_across_prompts``: share of scenes whose three images the oracle puts at the same
  place: 1.0 means the text does not move the object at all (x_T decides);
* with ``--leak``, the same again after adding to x_T what an SD-schedule model was trained to
  see at its first sampling step: sqrt(alpha_bar_t) times the VAE latent of the renderer's drawing
  of the prompt. If position follows the prompt only then, the model reads layout from the leak.

    python benchmarks/world_position_probe.py --pipeline diffenvs/world/weights/t2i --leak
    python benchmarks/world_position_probe.py --pipeline runs/world_v2/t2i_zsnr_leg1

Writes ``benchmarks/results/world/position_probe_<name>.json`` and ``.png`` (rows: scenes; columns:
left, middle, right from one x_T).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

OUT = Path("benchmarks/results/world")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SCENES = ("snow field", "grass field", "desert", "ocean")


def probe_scenes() -> list:
    from diffenvs.world.attributes import COLOURS, POSITIONS
    from diffenvs.world.render import Scene

    return [
        Scene("one", SHAPES[i % 6], COLOURS[(i * 5) % len(COLOURS)], "large", p, SCENES[i % 4])
        for i in range(12)
        for p in POSITIONS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=Path("diffenvs/world/weights/t2i"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--leak", action="store_true", help="also run with the leak added to x_T")
    parser.add_argument("--name", default=None, help="output name (default: the folder's name)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from diffenvs.world.attributes import POSITIONS
    from diffenvs.world.oracle import predict_attributes, read_oracle
    from diffenvs.world.render import render_array

    pipe = StableDiffusionPipeline.from_pretrained(args.pipeline, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    oracle = read_oracle()
    scenes = probe_scenes()
    prompts = [s.caption() for s in scenes]
    truth = np.array([POSITIONS.index(s.position) for s in scenes])
    x_T = torch.randn(
        12,
        pipe.unet.config.in_channels,
        pipe.unet.config.sample_size,
        pipe.unet.config.sample_size,
        generator=torch.Generator().manual_seed(0),
    ).repeat_interleave(3, 0)
    pipe.scheduler.set_timesteps(args.steps)
    t0 = int(pipe.scheduler.timesteps[0])
    alpha_bar = float(pipe.scheduler.alphas_cumprod[t0])

    def sample(latents: torch.Tensor) -> np.ndarray:
        images = pipe(
            prompts,
            num_inference_steps=args.steps,
            guidance_scale=4.0,
            latents=latents.clone(),
            output_type="np",
        ).images
        return (images * 255).round().astype(np.uint8)

    def score(images: np.ndarray) -> dict:
        pred = predict_attributes(oracle, images)["position"]
        same = [len(set(pred[3 * i : 3 * i + 3])) == 1 for i in range(12)]
        return {
            "position_accuracy": float((pred == truth).mean()),
            "same_position_across_prompts": float(np.mean(same)),
        }

    images = sample(x_T)
    result = {
        "pipeline": str(args.pipeline),
        "steps": args.steps,
        "first_timestep": t0,
        "sqrt_alpha_bar_first_step": alpha_bar**0.5,
        "prediction_type": pipe.scheduler.config.prediction_type,
        "pure_noise": score(images),
    }
    if args.leak:
        x = torch.from_numpy(render_array(scenes)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        result["with_leak"] = score(sample(alpha_bar**0.5 * z + (1 - alpha_bar) ** 0.5 * x_T))
    name = args.name or args.pipeline.name
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"position_probe_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    grid = images[:18].reshape(6, 3, *images.shape[1:]).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(6 * images.shape[1], 3 * images.shape[2], 3)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(
        args.out / f"position_probe_{name}.png"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
