"""Train the world's text-conditioned UNet (and its small CLIP text encoder) in the VAE's latent space.

Standard latent-diffusion training: epsilon prediction on SD's scaled-linear schedule (or, with
``--schedule zero-snr``, v-prediction on the same betas rescaled to zero terminal SNR), 10 % empty
captions for classifier-free guidance, min-SNR loss weighting, and an EMA of the weights, which is
what gets saved. Writes a complete Stable-Diffusion-layout folder (`model_index.json`, `vae/`,
`unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`) every ``save_every`` steps.

    python -m diffenvs.world.training.train_unet --steps 3500
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel

from diffenvs.world.data import cache_dir, make_dataset
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.t2i import make_scheduler, make_text_encoder, make_unet
from diffenvs.world.tokenizer import build_world_tokenizer


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 3_500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    save_every: int = 500
    stop_after: int | None = None
    """Stop (and save) after this many steps while keeping the ``steps``-long LR schedule."""
    seed: int = 0
    threads: int = 1
    out: Path = WEIGHTS_DIR / "t2i"
    init_from: Path | None = None
    """Start from the UNet and text encoder of this pipeline folder (e.g. ``out`` itself, to train
    longer) instead of from random weights. The tokenizer and VAE must be the world's."""
    vae: Path | None = None
    """The AutoencoderKL folder whose latents to train on (default: ``out/vae``). A new encoder
    means a new latent space, so a UNet trained on another VAE cannot be continued on this one."""
    arch: str = "v1"
    """UNet architecture from scratch: 'v1' (cross-attention at 8×8 and 4×4) or 'v2' (also a
    pooled-text embedding added to the time embedding, so every ResNet block, including those at
    the latent resolution, sees the whole prompt: position words can act where objects are drawn)."""
    schedule: str = "sd"
    """'sd' (epsilon prediction, SD's schedule) or 'zero-snr' (v-prediction, zero terminal SNR,
    trailing timesteps: x_T carries no trace of the image, so the layout must come from the
    prompt; see ``diffenvs.world.t2i.make_scheduler``). ``--init-from`` an 'sd' folder with
    'zero-snr' fine-tunes the UNet into the new parametrisation."""
    object_weight: float = 1.0
    """Loss weight of the latent pixels an object touches (the renderer's coverage mask, max-pooled
    to the latent grid); the rest weigh 1. Objects cover a few percent of an image while textured
    backgrounds (bricks, waves) dominate a uniform loss; > 1 spends the small UNet's capacity on
    the objects' outlines, which is where shape lives."""
    object_weight_below_t: int = 1000
    """Apply ``object_weight`` only at timesteps below this one. A weight that depends on the clean
    image biases the learned mean towards images with objects wherever x_t cannot tell where the
    objects are (measured: 6,000 steps at weight 4 on every timestep took shape 41 -> 60 % but
    count 94 -> 83 %); below t ~ 500 x_t already shows where they are, so the weight only shifts
    effort to their outlines."""


@torch.no_grad()
def encode_dataset(
    vae: AutoencoderKL, images: np.ndarray, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in tqdm(range(0, len(images), batch), desc="encode latents"):
        dist = vae.encode(as_image_tensor(images[i : i + batch]) * 2 - 1).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def save_folder_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp folder next to ``out``, then swap it in: no half-written model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    write(tmp)
    # mkdtemp makes a private (0700) folder; the shipped folder must be readable like any other.
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)
    old = out.with_name(out.name + ".old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet, schedule: str = "sd") -> None:
    """Write the SD-layout folder (``model_index.json``, ``vae/``, ``unet/``, ...) atomically."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(schedule),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_folder_atomically(out, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))


def main(cfg: Config) -> None:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    vae_dir = cfg.vae if cfg.vae is not None else cfg.out / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    vae.requires_grad_(False)
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    vae_digest = hashlib.sha256(
        (vae_dir / "diffusion_pytorch_model.safetensors").read_bytes()
    ).hexdigest()[:12]
    latent_file = cache_dir() / f"latents_{cfg.train_size}_{cfg.seed}_{vae_digest}.pt"
    if latent_file.exists():
        means, stds = torch.load(latent_file, weights_only=True)
    else:
        means, stds = encode_dataset(vae, train.images)
        torch.save((means, stds), latent_file)
    scale = vae.config.scaling_factor
    if cfg.object_weight < 1.0:
        raise ValueError(
            f"--object-weight must be >= 1 (got {cfg.object_weight}); 1 is a uniform loss."
        )
    factor = train.images.shape[1] // means.shape[-1]
    object_cells = F.max_pool2d(torch.from_numpy(train.masks).float()[:, None] / 255, factor) > 0.05
    pixel_weight = 1.0 + (cfg.object_weight - 1.0) * object_cells.float()

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_world_tokenizer(tmp)
    if cfg.init_from is None:
        text_encoder = make_text_encoder(
            len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id
        )
        unet = make_unet(cfg.arch)
    else:
        text_encoder = CLIPTextModel.from_pretrained(cfg.init_from / "text_encoder")
        unet = UNet2DConditionModel.from_pretrained(cfg.init_from / "unet")
    scheduler = make_scheduler(cfg.schedule)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, cfg.warmup)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, cfg.steps - cfg.warmup, eta_min=cfg.lr * 0.05
    )
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], [cfg.warmup])
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)

    rng = np.random.default_rng(cfg.seed)
    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    bar = tqdm(range(1, last + 1), desc="unet", mininterval=10)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = (cfg.out.parent / f"{cfg.out.name}_progress.csv").open("a", newline="")
    log = csv.writer(log_file)
    running = 0.0
    for step in bar:
        idx = rng.integers(0, len(train), cfg.batch_size)
        z0 = (means[idx] + stds[idx] * torch.randn_like(stds[idx])) * scale
        captions = ["" if rng.random() < cfg.caption_dropout else train.captions[i] for i in idx]
        tokens = tokenizer(
            captions, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),))
        noise = torch.randn_like(z0)
        zt = scheduler.add_noise(z0, noise, t)
        cond = text_encoder(tokens).last_hidden_state
        pred = unet(zt, t, cond).sample
        if v_prediction:
            # Min-SNR on the x_0 error, floored at 1 so the zero-SNR steps (where the layout is
            # decided from the prompt alone) keep their weight; a v error is (SNR + 1) x_0 errors.
            target = scheduler.get_velocity(z0, noise, t)
            weight = snr[t].clamp(min=1.0, max=cfg.min_snr_gamma) / (snr[t] + 1)
        else:
            target = noise
            weight = snr[t].clamp(max=cfg.min_snr_gamma) / snr[t]
        pixels = torch.where(
            (t < cfg.object_weight_below_t)[:, None, None, None], pixel_weight[idx], 1.0
        )
        error = F.mse_loss(pred, target, reduction="none") * pixels
        loss = (weight * error.mean(dim=(1, 2, 3)) / pixels.mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
                    pe.lerp_(pl, 1 - decay)
        running += loss.item()
        if step % 50 == 0:
            log.writerow([step, round(running / 50, 5), round((time.time() - start) / 60, 2)])
            log_file.flush()
            bar.set_postfix(loss=f"{running / 50:.4f}")
            running = 0.0
        if step % cfg.save_every == 0 or step == last:
            save_pipeline(cfg.out, vae, ema_text, tokenizer, ema_unet, cfg.schedule)
            (cfg.out.parent / "t2i_progress.txt").write_text(
                f"steps={step} minutes={(time.time() - start) / 60:.1f} loss={loss.item():.4f}\n"
            )
    log_file.close()
    print(f"minutes={(time.time() - start) / 60:.1f}")


if __name__ == "__main__":
    main(tyro.cli(Config))
