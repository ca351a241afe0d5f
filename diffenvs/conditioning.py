"""Family-specific model calls: how SDXL UNets, SD3 transformers and FLUX transformers read a prompt.

The denoising env observes one prompt embedding per env (``obs["prompt_embeds"]``, (L', D)) and a
policy calls ``sampler.model_output(model, latents, k, embeds)`` with it, whatever the family. Three
families need more than the token embeddings:

* SDXL: a pooled text embedding and the size/crop conditioning ``time_ids`` (``added_cond_kwargs``).
* SD3: a pooled text embedding (``pooled_projections``).
* FLUX: a pooled text embedding, the distilled guidance embedding ``guidance``, position ids of the
  text and image tokens, and latents *packed* into 2 x 2 patches ((B, C, h, w) -> (B, hw/4, 4C)).

The pooled embedding travels inside the prompt embedding: :class:`PooledPacking` appends it as
extra rows (zero-padded to the width D), so observations, agents and the embedding cache stay one
tensor per prompt. The constant parts (``time_ids``, position ids, the guidance value) live in the
call objects below, which :class:`diffenvs.sampler.BaseSampler` holds. Each call computes exactly
what its diffusers pipeline computes in one denoising step (same argument order and dtypes), with
classifier-free guidance as ``uncond + w (text - uncond)``, the unconditional half first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class PooledPacking:
    """A pooled embedding (B, P) stored as ``rows`` extra rows of a (B, L, D) token embedding."""

    tokens: int  # L
    pooled_dim: int  # P
    width: int  # D

    @property
    def rows(self) -> int:
        return math.ceil(self.pooled_dim / self.width)

    @property
    def shape(self) -> tuple[int, int]:
        """(L + rows, D): the packed embedding of one prompt."""
        return (self.tokens + self.rows, self.width)

    def pack(self, embeds: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        b = embeds.shape[0]
        flat = pooled.new_zeros(b, self.rows * self.width)
        flat[:, : self.pooled_dim] = pooled
        return torch.cat([embeds, flat.reshape(b, self.rows, self.width).to(embeds)], dim=1)

    def check(self, packed: torch.Tensor) -> None:
        """A clear error unless ``packed`` is (B, L + rows, D)."""
        if tuple(packed.shape[1:]) != self.shape:
            raise ValueError(
                f"Prompt embeddings of shape {tuple(packed.shape[1:])} do not match this model's "
                f"{self.shape} (token embeddings plus the pooled embedding's {self.rows} row(s)); "
                "pass obs['prompt_embeds'] of this env."
            )

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeddings (B, L, D), pooled embedding (B, P)) of a packed embedding."""
        self.check(packed)
        pooled = packed[:, self.tokens :].reshape(packed.shape[0], -1)[:, : self.pooled_dim]
        return packed[:, : self.tokens], pooled


@dataclass(frozen=True, eq=False)
class ModelCall:
    """One (guided) denoising-model forward of a family; subclasses define :meth:`forward`."""

    family: ClassVar[str] = ""
    packing: PooledPacking

    def forward(self, model: Any, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> Any:
        raise NotImplementedError

    def __call__(
        self,
        model: Any,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        *,
        guidance_scale: float,
        negative_embeds: torch.Tensor | None,
        upcast: bool = False,
    ) -> torch.Tensor:
        """The guided model output for x_t = ``latents`` (B, C, h, w) at timesteps ``t`` (B,)."""
        self.packing.check(embeds)
        b = latents.shape[0]
        x, emb, t_in = latents, embeds, t
        if negative_embeds is not None:
            x = torch.cat([latents, latents])
            emb = torch.cat([negative_embeds.expand(b, -1, -1).to(embeds), embeds])
            t_in = t if t.ndim == 0 else torch.cat([t, t])
        out = self.forward(model, x, t_in, emb)
        if upcast:
            out = out.float()
        if negative_embeds is not None:
            uncond, text = out.chunk(2)
            out = uncond + guidance_scale * (text - uncond)
        return out


@dataclass(frozen=True, eq=False)
class SDXLCall(ModelCall):
    """``StableDiffusionXLPipeline``'s UNet call: pooled ``text_embeds`` and ``time_ids``."""

    family: ClassVar[str] = "sdxl"
    time_ids: torch.Tensor  # (1, 6): original size, crop top-left, target size
    timestep_cond: torch.Tensor | None = None  # LCM-style guidance embedding

    def forward(self, model: Any, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> Any:
        tokens, pooled = self.packing.unpack(emb)
        # One timestep shared by the batch goes in as a 0-d tensor, as the pipeline passes it.
        t_in = t[0] if t.ndim == 1 and bool((t == t[0]).all()) else t
        n = x.shape[0]
        added = {"text_embeds": pooled, "time_ids": self.time_ids.to(x.device).expand(n, -1)}
        cond = None if self.timestep_cond is None else self.timestep_cond.expand(n, -1)
        return model(
            x,
            t_in,
            encoder_hidden_states=tokens,
            timestep_cond=cond,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]


@dataclass(frozen=True, eq=False)
class SD3Call(ModelCall):
    """``StableDiffusion3Pipeline``'s transformer call: ``pooled_projections``, timestep = t."""

    family: ClassVar[str] = "sd3"

    def forward(self, model: Any, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> Any:
        tokens, pooled = self.packing.unpack(emb)
        return model(
            hidden_states=x,
            timestep=t.expand(x.shape[0]) if t.ndim == 0 else t,
            encoder_hidden_states=tokens,
            pooled_projections=pooled,
            return_dict=False,
        )[0]


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """FLUX's 2 x 2 patch packing: (B, C, h, w) -> (B, (h/2)(w/2), 4C)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: (B, (h/2)(w/2), 4C) -> (B, C, h, w)."""
    b, _, c4 = x.shape
    x = x.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, h, w)


@dataclass(frozen=True, eq=False)
class FluxCall(ModelCall):
    """``FluxPipeline``'s transformer call on packed latents, timestep = t / 1000.

    ``guidance`` is the distilled guidance scale FLUX.1-dev embeds (``None`` for a transformer
    without ``guidance_embeds``, e.g. FLUX.1-schnell); there is no classifier-free pass.
    """

    family: ClassVar[str] = "flux"
    text_ids: torch.Tensor  # (L, 3)
    image_ids: torch.Tensor  # ((h/2)(w/2), 3)
    guidance: float | None = None

    def forward(self, model: Any, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> Any:
        tokens, pooled = self.packing.unpack(emb)
        n, _, h, w = x.shape
        timestep = (t.expand(n) if t.ndim == 0 else t).to(x.dtype)
        guidance = None
        if self.guidance is not None:
            guidance = torch.full([1], self.guidance, device=x.device, dtype=torch.float32)
            guidance = guidance.expand(n)
        out = model(
            hidden_states=pack_latents(x),
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=tokens,
            txt_ids=self.text_ids,
            img_ids=self.image_ids,
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)
