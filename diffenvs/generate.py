"""Batched, cached text-to-image generation shared by the prompt-space environments.

``ImageGenerator.images(prompts, seeds)`` returns uint8 images; each (prompt, seed) is generated once
and then served from an in-memory cache, so an environment that revisits a prompt costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

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
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        # A name resolves through the process-wide model cache: one copy of the weights however
        # many generators and envs use them (the sampler state __call__ sets is per call).
        self.pipe = shared_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
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
        # Per-image generators make each starting latent independent of its batch-mates. With
        # eta > 0 the sampler's step noise still comes from torch's global stream (so it depends
        # on the batch); passing these generators to the pipeline would change every image made
        # with eta > 0 so far, so that waits for a regeneration of those task sets.
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
        out = self.pipe(
            list(prompts),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            **({"eta": self.eta} if self.eta else {}),
            negative_prompt=[self.negative_prompt] * len(prompts) if self.negative_prompt else None,
            latents=latents.to(self.pipe.unet.dtype),
            output_type="np",
        )
        return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)

    def images(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        """uint8 array (B, H, W, 3), one image per (prompt, seed)."""
        if len(prompts) != len(seeds):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt."
            )
        keys = [(str(p), int(s)) for p, s in zip(prompts, seeds, strict=True)]
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
