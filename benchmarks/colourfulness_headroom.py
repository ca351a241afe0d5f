"""How much colourfulness (seed 004 App. A) can the world's images gain while the oracle still reads
their prompts? Edits the base model's held-out samples by hand and scores them, to show what a
policy would have to learn to meet the "1.5x colourfulness within 10 points" bar of diffusion PPO.

    python benchmarks/colourfulness_headroom.py   # ~1 min; writes docs/benchmarks/colourfulness_headroom.{md,json}

Edits: saturation (each pixel pushed away from its grey), Gaussian RGB noise per pixel, the same
noise in 8 x 8 blocks, and Gaussian noise added to the final latent before the VAE decodes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class Args:
    n: int = 64
    """Held-out world prompts (the PPO evaluation's: world:heldout from seed 1000000)."""
    num_steps: int = 10
    seed: int = 0
    out: str = "docs/benchmarks/colourfulness_headroom"


def main(args: Args) -> None:
    from agents.ppo_diffusion_lib import make_prompt_source
    from diffenvs.io import atomic_write_bytes
    from diffenvs.models import load_pipeline
    from diffenvs.rewards import make_reward

    torch.manual_seed(args.seed)
    source = make_prompt_source("world:heldout")
    rng = np.random.default_rng(1_000_000)
    prompts = [source.sample(rng) for _ in range(args.n)]
    pipe = load_pipeline("world")
    colourfulness, oracle = make_reward("colourfulness"), make_reward("oracle")
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        latents = pipe(
            prompts,
            num_inference_steps=args.num_steps,
            eta=1.0,  # the stochastic sampler that DiffusionDenoise-v0 and PPO use
            output_type="latent",
            generator=gen,
        ).images

        def decode(z: torch.Tensor) -> torch.Tensor:
            return ((pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample + 1) / 2).clamp(
                0, 1
            )

        base = decode(latents)

    def score(images: torch.Tensor) -> tuple[float, float]:
        c = colourfulness.evaluate(images, prompts).rewards.mean()
        a = oracle.evaluate(images, prompts).details["accuracy"].mean()
        return float(c), float(a)

    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    rows: list[dict] = []

    def add(edit: str, strength: str, images: torch.Tensor) -> None:
        c, a = score(images)
        rows.append({"edit": edit, "strength": strength, "colourfulness": c, "accuracy": a})

    add("none (base model)", "", base)
    for k in (1.5, 2.0):
        grey = base.mean(1, keepdim=True)
        add("saturation", f"x{k}", (grey + (base - grey) * k).clamp(0, 1))
    for amp in (8, 16, 24):
        noise = torch.randn(base.shape, generator=noise_gen) * amp / 255
        add("RGB noise per pixel", f"σ = {amp}/255", (base + noise).clamp(0, 1))
    for amp in (8, 16):
        small = torch.randn((len(base), 3, 8, 8), generator=noise_gen) * amp / 255
        block = small.repeat_interleave(8, 2).repeat_interleave(8, 3)
        add("RGB noise in 8×8 blocks", f"σ = {amp}/255", (base + block).clamp(0, 1))
    with torch.no_grad():
        for s in (0.2, 0.5):
            z = latents + s * torch.randn(latents.shape, generator=noise_gen)
            add("noise on the final latent", f"σ = {s}", decode(z))

    c0, a0 = rows[0]["colourfulness"], rows[0]["accuracy"]
    lines = [
        "# Colourfulness headroom",
        "",
        "Written by `python benchmarks/colourfulness_headroom.py`. The base model's samples of "
        f"{args.n} held-out world prompts ({args.num_steps} DDIM steps, η = 1), edited by hand and scored "
        "by `colourfulness` (vivid-pixel share × hue entropy, seed 004 App. A) and by the oracle's "
        "prompt-following accuracy. The diffusion-PPO bar asks for ≥ 1.5× colourfulness with the "
        "accuracy within 10 points.",
        "",
        "| edit | strength | colourfulness | × base | oracle accuracy | Δ points | meets both |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio, delta = r["colourfulness"] / c0, 100 * (r["accuracy"] - a0)
        ok = "yes" if ratio >= 1.5 and delta >= -10 else "no"
        lines.append(
            f"| {r['edit']} | {r['strength']} | {r['colourfulness']:.2f} | {ratio:.2f} | "
            f"{100 * r['accuracy']:.1f} % | {delta:+.1f} | {ok} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(rows, indent=2) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
