"""Batched, cached text-to-image generation shared by the prompt-space environments.

``ImageGenerator.images(prompts, seeds)`` returns uint8 images; each (prompt, seed) is generated once
and then served from an in-memory cache, so an environment that revisits a prompt costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffenvs.errors import (
    ArgumentTypeError,
    check_finite,
    check_int,
    check_number,
    check_seed,
    summarise,
)
from diffenvs.models.cache import shared_pipeline
from diffenvs.models.hub import WORLD


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ImageGenerator:
    """Deterministic images for (prompt, seed) pairs from a Stable-Diffusion-layout pipeline
    (a loaded one, or a name/folder :func:`~diffenvs.models.load_pipeline` accepts)."""

    def __init__(
        self,
        pipeline: object | str = WORLD,
        *,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        negative_prompt: str | None = None,
        eta: float = 0.0,
        batch_size: int = 32,
        cache_size: int = 100_000,
    ) -> None:
        check_int("num_inference_steps", num_inference_steps, 1)
        check_number("guidance_scale", guidance_scale, 0.0, 1000.0)
        check_number("eta", eta, 0.0, 1.0)
        check_int("batch_size", batch_size, 1, 1_000_000)
        check_int("cache_size", cache_size, 0)
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ArgumentTypeError(
                f"negative_prompt must be a str or None, got {summarise(negative_prompt)}."
            )
        # A name resolves through the process-wide model cache: one copy of the weights however
        # many generators and envs use them (the sampler state __call__ sets is per call).
        self.pipe = shared_pipeline(pipeline) if isinstance(pipeline, str | Path) else pipeline
        missing = [c for c in ("unet", "scheduler", "device") if not hasattr(self.pipe, c)]
        if missing:
            raise ArgumentTypeError(
                f"pipeline must be a model name/folder or a loaded Stable-Diffusion-layout "
                f"pipeline; got a {type(self.pipe).__name__} without {missing}. The image "
                "generator behind PromptAppend-v0 and GrammarGrid-v0 runs UNet pipelines (SD 1.x/"
                "2.x, the world); flow-matching models (SD3, FLUX) run in DiffusionDenoise-v0."
            )
        n_train = int(self.pipe.scheduler.config.num_train_timesteps)
        if num_inference_steps > n_train:
            raise ValueError(
                f"num_inference_steps must be in [1, {n_train}] (the scheduler's training steps), "
                f"got {num_inference_steps}."
            )
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.eta = float(eta)  # DDIM noise; > 0 samples like DiffusionDenoise-v0's stochastic steps
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.stats = CacheStats()

    @torch.no_grad()
    def _generate(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        device = self.pipe.device
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        unet = self.pipe.unet
        shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        # Per-image generators: each image depends only on its (prompt, seed), never on its
        # batch-mates or torch's global stream. They draw the starting latent, then (eta > 0)
        # the sampler's step noise.
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
        out = self.pipe(
            list(prompts),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            **({"eta": self.eta} if self.eta else {}),
            negative_prompt=[self.negative_prompt] * len(prompts) if self.negative_prompt else None,
            latents=latents.to(self.pipe.unet.dtype),
            generator=generators,
            output_type="np",
        )
        check_finite(f"The generated images of {summarise(prompts)}", out.images)
        return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)

    def images(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        """uint8 array (B, H, W, 3), one image per (prompt, seed)."""
        if isinstance(prompts, str) or isinstance(seeds, int):
            raise ArgumentTypeError(
                "images() takes a list of prompts and a list of seeds, one per prompt."
            )
        prompts, seeds = list(prompts), list(seeds)
        if len(prompts) != len(seeds):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt."
            )
        for p in prompts:
            if not isinstance(p, str):
                raise ArgumentTypeError(f"Prompts must be str, got {summarise(p)}.")
        keys = [
            (p, check_seed("generation seed", s, allow_none=False))
            for p, s in zip(prompts, seeds, strict=True)
        ]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        self.stats.hits += len(keys) - sum(1 for k in keys if k in missing)
        self.stats.misses += sum(1 for k in keys if k in missing)
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            imgs = self._generate([p for p, _ in chunk], [s for _, s in chunk])
            for key, img in zip(chunk, imgs, strict=True):
                self._cache[key] = img
        out = np.stack([self._cache[k] for k in keys])
        for k in keys:
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out
