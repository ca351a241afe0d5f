"""One DiffusionDenoise-v0 episode on a flow-matching (SD3 / FLUX layout) model, step by step.

Runs the same seed twice: in SDE mode (each step a Gaussian policy step, Flow-GRPO's noise level
0.7), printing every step's timestep, std and base log-prob, and in ODE mode (``noise_level=0``),
whose image it checks against the diffusers pipeline's own for that seed.

python examples/denoise_flow_episode.py                              # a tiny random SD3 model
python examples/denoise_flow_episode.py --model PATH_OR_HUB_ID --device cuda --image-size 512
    # e.g. a saved StableDiffusion3Pipeline / FluxPipeline folder, or
    # stabilityai/stable-diffusion-3.5-medium when it is in the local Hugging Face cache

Without ``--model`` the script builds a randomly initialised SD3-layout pipeline (two small CLIPs,
no T5) in a temp folder, so it runs anywhere in a few seconds; its images are noise-like (the
weights are random), the mechanics are those of any SD3 checkpoint. Expected result with the
defaults (measured): 6 SDE steps with std 0.7000, 0.7850, 0.5777, 0.4828, 0.3974, 0.0063 (the
step's Gaussian, schedule-only) and the line "ODE episode vs StableDiffusion3Pipeline: max |diff|
0": the ODE episode is the pipeline's image bit for bit. About 30 s on a busy 2-core CPU.
The strip of rendered frames goes to out/denoise_flow_episode.png.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro
from PIL import Image

import diffenvs  # noqa: F401  (registers the environments)


@dataclass
class Args:
    model: str | None = None
    """a StableDiffusion3Pipeline / FluxPipeline folder or hub id (default: a tiny random SD3)."""
    prompt: str = "one large red circle in the middle of a grass field"
    steps: int = 6
    seed: int = 0
    noise_level: float = 0.7
    sde_type: str = "sde"
    """'sde' (Flow-GRPO) or 'cps' (coefficients-preserving)."""
    image_size: int | None = None
    device: str = "cpu"
    out: str = "out/denoise_flow_episode.png"


def tiny_random_sd3(folder: Path) -> Path:
    """A randomly initialised StableDiffusion3Pipeline (no T5) saved to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from diffenvs.world.tokenizer import CONTEXT_LENGTH, build_world_tokenizer

    torch.manual_seed(0)
    tok = build_world_tokenizer(folder / "_tokenizer")
    clip = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        projection_dim=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=16,
            pooled_projection_dim=32,
            out_channels=4,
            pos_embed_max_size=16,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16),
            latent_channels=4,
            norm_num_groups=4,
            shift_factor=0.1,
            scaling_factor=1.5,
        ),
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=tok,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(folder / "sd3")
    return folder / "sd3"


def episode(args: Args, model: str, noise_level: float, verbose: bool):
    env = gym.make(
        "DiffusionDenoise-v0",
        model=model,
        prompts=[args.prompt],
        num_steps=args.steps,
        noise_level=noise_level,
        sde_type=args.sde_type,
        image_size=args.image_size,
        device=args.device,
        reward="colourfulness",
        render_mode="rgb_array",
    )
    obs, info = env.reset(seed=args.seed)
    # The noise a pipeline with generator=manual_seed(seed) would draw after x_T.
    gen = torch.Generator().manual_seed(args.seed)
    torch.randn((1, *obs["latent"].shape), generator=gen)
    frames, done = [env.render()], False
    while not done:
        noise = torch.randn((1, *obs["latent"].shape), generator=gen)[0].numpy()
        obs, _, done, _, info = env.step(noise)
        frames.append(env.render())
        if verbose:
            print(f"step {info['step']}: t={info['timestep']:7.2f}  std={info['std']:.4f}  "
                  f"base log-prob={info['log_prob']:10.2f}")  # fmt: skip
    return env, frames, info


def main(args: Args) -> Path:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="flow-episode-") as tmp:
        model = args.model or str(tiny_random_sd3(Path(tmp)))
        _, frames, info = episode(args, model, args.noise_level, verbose=True)
        print(f"SDE episode ({args.sde_type}, noise_level {args.noise_level}): "
              f"colourfulness {info['terminal_reward']:.3f}")  # fmt: skip
        ode_env, ode_frames, _ = episode(args, model, 0.0, verbose=False)
        pipe = ode_env.unwrapped.core.pipe
        core = ode_env.unwrapped.core
        h, w = core.image_shape[:2]
        extra = {} if core.family.name == "flux" else {"guidance_scale": 4.0}
        ref = pipe(
            args.prompt,
            num_inference_steps=args.steps,
            height=h,
            width=w,
            generator=torch.Generator().manual_seed(args.seed),
            output_type="np",
            max_sequence_length=core.family.max_sequence_length,
            **extra,
        ).images[0]
        image = core.decode(core.latents).permute(0, 2, 3, 1)[0].float().cpu().numpy()
        print(f"ODE episode vs {type(pipe).__name__}: max |diff| {np.abs(image - ref).max():.3g}")
    strip = np.concatenate([np.concatenate(frames, 1), np.concatenate(ode_frames, 1)], 0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 256 // strip.shape[0])
    Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale)).save(out)
    print(f"wrote {out} (top: SDE episode, bottom: ODE episode; one frame per step)")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
