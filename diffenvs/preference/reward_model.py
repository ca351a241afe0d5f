"""Learned reward models: a frozen feature extractor and a small trained head.

* ``clip-mlp`` (Võ Mạnh Quyền): an MLP on the CLIP image embedding, the prompt's text embedding and
  their product.
* ``latent`` (Kristiansen & Vågen 2023, §4): the frozen encoder half of the policy's own UNet (down blocks and mid
  block, at a fixed low-noise timestep, conditioned on the prompt) reads the image's VAE latent; a
  trained cross-attention pooling head (learned queries attending over the feature map) scores it.
  Condition dropout (the empty prompt in place of the real one) during training keeps the head from
  scoring the prompt instead of the image.

A model folder holds ``reward_model.json`` (kind, frozen backbone's name, sizes and the
standardisation statistics of Kristiansen & Vågen 2023, eq. 5.2) and ``head.safetensors``; both written atomically,
and loading never unpickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffenvs.images import as_images
from diffenvs.io import load_tensors, save_tensors, write_json
from diffenvs.models.cache import shared_clip

CONFIG_NAME = "reward_model.json"
WEIGHTS_NAME = "head.safetensors"
KINDS = ("clip-mlp", "latent")


class ClipMLPHead(nn.Module):
    """(image embedding, text embedding) → score."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3 * dim, hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden // 4),
            nn.GELU(),
            nn.Linear(hidden // 4, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        image, text = features.chunk(2, dim=-1)
        return self.net(torch.cat([image, text, image * text], -1)).squeeze(-1)


class CrossAttentionPool(nn.Module):
    """Learned queries attend over feature tokens (B, N, C); an MLP scores the pooled queries."""

    def __init__(self, channels: int, queries: int = 4, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, channels) * channels**-0.5)
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Sequential(
            nn.Linear(queries * channels, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm(tokens)
        q = self.queries.expand(len(tokens), -1, -1)
        pooled, _ = self.attn(q, kv, kv, need_weights=False)
        return self.out(pooled.flatten(1)).squeeze(-1)


class UNetEncoderFeatures:
    """Feature tokens (B, h*w, C) from the frozen down blocks + mid block of a pipeline's UNet."""

    def __init__(self, pipe: Any, timestep: int = 100) -> None:
        self.pipe, self.timestep = pipe, int(timestep)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()

    @property
    def channels(self) -> int:
        return int(self.pipe.unet.config.block_out_channels[-1])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.with_graph(images, prompts)

    def with_graph(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """The same features, keeping the graph back to ``images`` (the text side has none)."""
        pipe = self.pipe
        device = pipe.unet.device
        x = images.to(device) * 2 - 1
        latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        with torch.no_grad():
            text = pipe.text_encoder(ids)[0]
        unet = pipe.unet
        t = torch.full((len(x),), self.timestep, device=device, dtype=torch.long)
        emb = unet.time_embedding(unet.time_proj(t).to(latents.dtype))
        h = unet.conv_in(latents)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=text)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        h = unet.mid_block(h, emb, encoder_hidden_states=text)
        return h.flatten(2).transpose(1, 2).float()


class RewardModel:
    """A trained preference reward model: ``score(images, prompts)`` → (B,) standardised scores."""

    def __init__(self, config: dict, head: nn.Module, backbone: Any) -> None:
        self.config, self.head, self.backbone = config, head.eval(), backbone
        self.mean = float(config.get("score_mean", 0.0))
        self.std = float(config.get("score_std", 1.0))

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @torch.no_grad()
    def features(self, images: Any, prompts: Sequence[str], drop_prompt: bool = False) -> Any:
        """Frozen features (cacheable during training). ``drop_prompt``: condition dropout."""
        x = as_images(images)
        texts = [""] * len(x) if drop_prompt else list(prompts)
        if self.kind == "clip-mlp":
            return torch.cat(
                [self.backbone.encode_images(x), self.backbone.encode_texts(texts)], -1
            ).cpu()
        return self.backbone(x, texts).cpu()

    def raw_score(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def differentiable_score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Standardised scores (B,) of float images (B, 3, H, W) in [0, 1], with gradients back to
        the images (what direct reward fine-tuning needs; :meth:`score` keeps no graph)."""
        self.head.eval()
        x = as_images(images)
        if self.kind == "clip-mlp":
            with torch.no_grad():
                text = self.backbone.encode_texts(list(prompts))
            feats = torch.cat([self.backbone.encode_images(x), text], -1)
        else:
            feats = self.backbone.with_graph(x, list(prompts))
        device = next(self.head.parameters()).device
        return (self.raw_score(feats.to(device)) - self.mean) / self.std

    @torch.no_grad()
    def score(self, images: Any, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Standardised scores (Kristiansen & Vågen 2023, eq. 5.2) for a batch of images and their prompts."""
        self.head.eval()
        out = []
        for i in range(0, len(images), batch_size):
            feats = self.features(images[i : i + batch_size], prompts[i : i + batch_size])
            out.append(self.raw_score(feats))
        return (torch.cat(out) - self.mean) / self.std

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        save_tensors(self.head.state_dict(), folder / WEIGHTS_NAME)
        write_json(folder / CONFIG_NAME, self.config)
        return folder


def build_reward_model(
    kind: str, backbone_name: str = "world", *, timestep: int = 100, device: str = "cpu"
) -> RewardModel:
    """A fresh (untrained head) model of ``kind`` on a frozen backbone (a CLIP or T2I name)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown reward model kind {kind!r}; choose one of {list(KINDS)}.")
    config: dict[str, Any] = {"kind": kind, "backbone": backbone_name}
    if kind == "clip-mlp":
        clip = shared_clip(backbone_name, device)
        dim = int(clip.encode_texts(["a"]).shape[-1])
        config["dim"] = dim
        return RewardModel(config, ClipMLPHead(dim), clip)
    from diffenvs.models import load_pipeline

    # A private copy, not the shared one: the features freeze its modules (requires_grad off),
    # which must not reach a policy that copies the shared pipeline's UNet to train it.
    features = UNetEncoderFeatures(load_pipeline(backbone_name, device=device), timestep)
    config |= {"timestep": int(timestep), "channels": features.channels}
    return RewardModel(config, CrossAttentionPool(features.channels), features)


def load_reward_model(folder: str | Path, device: str = "cpu") -> RewardModel:
    """Load a model folder written by :meth:`RewardModel.save` (safetensors + JSON only)."""
    import json

    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"No {CONFIG_NAME} in {folder}; pass a folder written by "
            "`diffenvs preference train` (or RewardModel.save)."
        )
    config = json.loads(cfg_path.read_text())
    if not isinstance(config, dict) or config.get("kind") not in KINDS:
        raise ValueError(
            f"{cfg_path}: 'kind' must be one of {list(KINDS)} (the file must hold a JSON object)."
        )
    model = build_reward_model(
        config["kind"], config["backbone"], timestep=config.get("timestep", 100), device=device
    )
    state = load_tensors(folder / WEIGHTS_NAME)
    try:
        model.head.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{folder / WEIGHTS_NAME} does not fit a {config['kind']} head ({err}); the folder's "
            "files do not belong together — retrain or restore both."
        ) from err
    model.config = config
    model.mean = float(config.get("score_mean", 0.0))
    model.std = float(config.get("score_std", 1.0))
    model.head.eval()
    return model


def preference_accuracy(scores: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Share of (better, worse) pairs the scores order correctly; ties in score count half."""
    if not pairs:
        return float("nan")
    s = np.asarray(scores, dtype=float)
    hits = [1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0 for a, b in pairs]
    return float(np.mean(hits))
