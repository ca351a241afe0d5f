"""Train the world's flow-matching text-to-image model (SD3 layout) in the VAE's latent space.

Rectified flow (Liu et al., *Flow Straight and Fast*): x_σ = (1 − σ) x₀ + σ ε, and the transformer
regresses the velocity ε − x₀; σ is drawn logit-normal (Esser et al., *Scaling Rectified Flow
Transformers*, "rf/lognorm(0, 1)"). 10 % empty captions for classifier-free guidance, and an EMA of
the weights, which is what gets saved. The latents are the shared world-v2 VAE's (cached as
``train_unet`` caches them), the tokenizer the world's. Writes a complete
``StableDiffusion3Pipeline`` folder (see :mod:`diffenvs.world.flow_t2i`) every ``save_every`` steps.

    python -m diffenvs.world.training.train_flow --steps 3000 --out runs/world_flow/t2i
"""

from __future__ import annotations

import copy
import csv
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from diffusers import AutoencoderKL, SD3Transformer2DModel
from tqdm import tqdm
from transformers import CLIPTextModelWithProjection

from diffenvs.world.data import cache_dir, make_dataset
from diffenvs.world.flow_t2i import (
    encode_prompts,
    make_flow_text_encoder,
    make_pipeline,
    make_transformer,
    use_t5_sink,
    with_t5_sink,
)
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.tokenizer import build_world_tokenizer
from diffenvs.world.training.train_unet import encode_dataset, save_folder_atomically


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 3_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    caption_dropout: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0
    """σ = sigmoid(n), n ~ N(logit_mean, logit_std²): the logit-normal timestep density."""
    ema_decay: float = 0.999
    save_every: int = 250
    stop_after: int | None = None
    """Stop (and save) after this many steps while keeping the ``steps``-long LR schedule."""
    seed: int = 0
    threads: int = 1
    out: Path = Path("runs/world_flow/t2i")
    init_from: Path | None = None
    """Start from the transformer and text encoder of this SD3-layout folder (e.g. ``out`` itself,
    to train longer) instead of from random weights. The tokenizer and VAE must be the world's."""
    vae: Path = WEIGHTS_DIR / "t2i" / "vae"
    """The AutoencoderKL folder whose latents to train on (copied into ``out/vae``)."""
    width: int = 128
    layers: int = 3
    heads: int = 4


def _latents(cfg: Config, vae: AutoencoderKL, images: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Posterior means and stds of the training images, cached on disk by (data, VAE) digest."""
    digest = hashlib.sha256(
        (cfg.vae / "diffusion_pytorch_model.safetensors").read_bytes()
    ).hexdigest()[:12]
    latent_file = cache_dir() / f"latents_{cfg.train_size}_{cfg.seed}_{digest}.pt"
    if latent_file.exists():
        return torch.load(latent_file, weights_only=True)
    means, stds = encode_dataset(vae, images)
    torch.save((means, stds), latent_file)
    return means, stds


def _models(cfg: Config, tokenizer) -> tuple[SD3Transformer2DModel, CLIPTextModelWithProjection]:
    if cfg.init_from is None:
        text_encoder = make_flow_text_encoder(
            len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id
        )
        return make_transformer(cfg.width, cfg.layers, cfg.heads), text_encoder
    return (
        SD3Transformer2DModel.from_pretrained(cfg.init_from / "transformer"),
        CLIPTextModelWithProjection.from_pretrained(cfg.init_from / "text_encoder"),
    )


def save_pipeline(out: Path, vae, text_encoder, tokenizer, transformer) -> None:
    """Write the SD3-layout folder atomically (no half-written model for a reader to load)."""
    pipe = make_pipeline(vae, text_encoder, tokenizer, transformer)
    save_folder_atomically(out, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))


def main(cfg: Config) -> None:
    """Training loop (one function, like train_unet's)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    vae = AutoencoderKL.from_pretrained(cfg.vae).eval()
    vae.requires_grad_(False)
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    means, stds = _latents(cfg, vae, train.images)
    scale = vae.config.scaling_factor
    shift = vae.config.shift_factor or 0.0

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_world_tokenizer(tmp)
    transformer, text_encoder = _models(cfg, tokenizer)
    ema_transformer, ema_text = (
        copy.deepcopy(transformer).eval(),
        copy.deepcopy(text_encoder).eval(),
    )
    use_t5_sink(transformer)  # the 256 zero T5 rows as one token: same computation, cheaper
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, cfg.warmup)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, max(1, cfg.steps - cfg.warmup), eta_min=cfg.lr * 0.05
    )
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], [cfg.warmup])

    rng = np.random.default_rng(cfg.seed)
    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    bar = tqdm(range(1, last + 1), desc="flow", mininterval=10)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = (cfg.out.parent / f"{cfg.out.name}_progress.csv").open("a", newline="")
    log = csv.writer(log_file)
    running, n_running = 0.0, 0
    for step in bar:
        idx = rng.integers(0, len(train), cfg.batch_size)
        x0 = (means[idx] + stds[idx] * torch.randn_like(stds[idx]) - shift) * scale
        captions = ["" if rng.random() < cfg.caption_dropout else train.captions[i] for i in idx]
        tokens = tokenizer(
            captions, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids
        sigma = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(len(idx)))
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        context, pooled = encode_prompts(text_encoder, tokens)
        pred = transformer(
            hidden_states=xt,
            encoder_hidden_states=with_t5_sink(context),
            pooled_projections=pooled,
            timestep=sigma * 1000,
        ).sample
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_transformer, transformer), (ema_text, text_encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
                    pe.lerp_(pl, 1 - decay)
        running, n_running = running + loss.item(), n_running + 1
        if step % 50 == 0 or step == last:
            mean_loss = running / n_running
            log.writerow([step, round(mean_loss, 5), round((time.time() - start) / 60, 2)])
            log_file.flush()
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            running, n_running = 0.0, 0
        if step % cfg.save_every == 0 or step == last:
            save_pipeline(cfg.out, vae, ema_text, tokenizer, ema_transformer)
            (cfg.out.parent / f"{cfg.out.name}_progress.txt").write_text(
                f"steps={step} minutes={(time.time() - start) / 60:.1f} loss={loss.item():.4f}\n"
            )
    log_file.close()
    print(f"minutes={(time.time() - start) / 60:.1f}")


if __name__ == "__main__":
    main(tyro.cli(Config))
