"""The flow-matching families of ``DiffusionDenoise-v0``: SD3 and FLUX layouts (docs/flow.md).

They share the SD family's interface (:mod:`diffenvs.envs.denoise_family`) and differ in what the
diffusers pipelines do differently: a transformer instead of a UNet, ``FlowMatchEulerDiscreteScheduler``
timesteps set as ``StableDiffusion3Pipeline`` / ``FluxPipeline`` set them (resolution-dependent
shift), prompt encoders with a pooled embedding (and T5), FLUX's packed latents and embedded
guidance, and the Gaussian step of :mod:`diffenvs.flow_logprob` (Flow-GRPO SDE or CPS; noise level
0 is the pipelines' deterministic Euler step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffenvs.conditioning import FluxCall, SD3Call
from diffenvs.envs.denoise_family import (
    Schedule,
    SDFamily,
    SDXLFamily,
    image_hw,
    pipeline_family,
    pooled_packing,
)
from diffenvs.flow_logprob import SDE_TYPES, check_noise_level, flow_coefficients

FLOW_SCHEDULERS = ("flow",)


class SD3Family(SDFamily):
    """``StableDiffusion3Pipeline``: SD3 transformer, flow matching, CLIP-L/G (+ optional T5)."""

    name = "sd3"
    flow = True
    default_sequence_length = 256

    def __init__(self, pipe: Any, **kwargs: Any) -> None:
        super().__init__(pipe, **kwargs)
        if self.max_sequence_length is None:
            self.max_sequence_length = self.default_sequence_length
        with torch.no_grad():
            emb, pooled = self._encode_raw([""])
        self.packing = pooled_packing(emb, pooled)
        self.sde_type, self.noise_levels = "sde", [0.0]

    def denoiser(self) -> Any:
        return self.pipe.transformer

    def vae_scale(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def latents_for(self, image_size: Any) -> tuple[int, int, int]:
        cfg = self.model.config
        h, w = image_hw(image_size, int(cfg.sample_size) * self.scale)
        shape = (int(cfg.in_channels), h // self.scale, w // self.scale)
        p = int(cfg.patch_size)
        if shape[1] % p or shape[2] % p or min(shape[1:]) == 0:
            raise ValueError(
                f"image_size {image_size!r} gives {shape[1]} x {shape[2]} latents, which the SD3 "
                f"transformer cannot split into {p} x {p} patches; use a multiple of "
                f"{self.scale * p} pixels."
            )
        top = getattr(cfg, "pos_embed_max_size", None)
        if top is not None and max(shape[1:]) // p > int(top):
            raise ValueError(
                f"image_size {image_size!r} is too large for this SD3 transformer: its position "
                f"embeddings cover {int(top) * p * self.scale} pixels per side at most."
            )
        return shape

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1

    def _encode_raw(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return emb, pooled

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.packing.pack(*self._encode_raw(prompts))

    def negative(self) -> torch.Tensor | None:
        if not self.do_cfg:
            return None
        _, neg, _, neg_pooled = self.pipe.encode_prompt(
            prompt="",
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=True,
            negative_prompt=self.negative_prompt,
            max_sequence_length=self.max_sequence_length,
        )
        return self.packing.pack(neg, neg_pooled)

    def timestep_cond(self) -> torch.Tensor | None:
        return None

    def model_call(self, embed_shape: tuple[int, ...], timestep_cond: Any) -> Any:
        return SD3Call(self.packing)

    def build_scheduler(self, spec: Any) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if isinstance(spec, FlowMatchEulerDiscreteScheduler):
            return type(spec).from_config(spec.config)
        if spec is not None and not (isinstance(spec, str) and spec.lower() in FLOW_SCHEDULERS):
            raise ValueError(
                f"Unknown scheduler {spec!r} for the flow-matching {self.name} pipeline: use "
                "'flow' (the default; the Flow-GRPO SDE step, see noise_level and sde_type) or "
                "pass a FlowMatchEulerDiscreteScheduler. DDIM/DDPM are for UNet pipelines."
            )
        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def set_timesteps(self, scheduler: Any, num_steps: int) -> None:
        """``set_timesteps`` as ``StableDiffusion3Pipeline`` calls it (dynamic shift if set)."""
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
                calculate_shift,
            )

            p = int(self.model.config.patch_size)
            cfg = scheduler.config
            kwargs["mu"] = calculate_shift(
                (self.latent_shape[1] // p) * (self.latent_shape[2] // p),
                cfg.get("base_image_seq_len", 256),
                cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5),
                cfg.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(int(num_steps), device=self.device, **kwargs)

    def schedule(self, spec: Any, num_steps: int, eta: float, **flow_args: Any) -> Schedule:
        from diffenvs.envs import validate

        sde_type = "sde" if flow_args.get("sde_type") is None else flow_args["sde_type"]
        if sde_type not in SDE_TYPES:
            raise ValueError(f"Unknown sde_type {sde_type!r}; use one of {list(SDE_TYPES)}.")
        level = 0.7 if flow_args.get("noise_level") is None else flow_args["noise_level"]
        self.noise_levels = check_noise_level(level, int(num_steps), sde_type)
        self.sde_type = sde_type
        scheduler = self.build_scheduler(spec)
        validate.check_schedule(scheduler, num_steps)
        self.set_timesteps(scheduler, int(num_steps))
        timesteps = scheduler.timesteps.to(self.device).float()
        coeffs = flow_coefficients(
            scheduler.sigmas,
            self.noise_levels,
            sde_type=sde_type,
            num_train_timesteps=int(scheduler.config.num_train_timesteps),
            timesteps=timesteps,
        )
        return Schedule(
            scheduler,
            "flow",
            timesteps,
            coeffs.prev_timestep.to(self.device),
            coeffs.to(self.device),
            [float(t) for t in timesteps],
        )


class FluxFamily(SD3Family):
    """``FluxPipeline``: FLUX transformer on 2 x 2-packed latents, CLIP pooled + T5 tokens."""

    name = "flux"
    default_sequence_length = 512
    default_sample_size = 128  # FluxPipeline.default_sample_size

    def __init__(self, pipe: Any, **kwargs: Any) -> None:
        super().__init__(pipe, **kwargs)
        if self.negative_prompt is not None:
            raise ValueError(
                "FLUX pipelines are guidance-distilled: guidance_scale sets the embedded guidance "
                "and there is no negative prompt. Leave negative_prompt None."
            )

    def vae_scale(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def latents_for(self, image_size: Any) -> tuple[int, int, int]:
        h, w = image_hw(image_size, self.default_sample_size * self.scale)
        # FluxPipeline.prepare_latents: an even number of latent rows and columns (2 x 2 packing).
        shape = (
            int(self.model.config.in_channels) // 4,
            2 * (h // (self.scale * 2)),
            2 * (w // (self.scale * 2)),
        )
        if min(shape[1:]) == 0:
            raise ValueError(
                f"image_size {image_size!r} is too small for FLUX: use at least "
                f"{2 * self.scale} pixels (a multiple of {2 * self.scale})."
            )
        return shape

    @property
    def do_cfg(self) -> bool:
        return False  # FLUX embeds the guidance scale instead

    def _encode_raw(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return emb, pooled

    def negative(self) -> torch.Tensor | None:
        return None

    def model_call(self, embed_shape: tuple[int, ...], timestep_cond: Any) -> Any:
        _, h, w = self.latent_shape
        text_ids = torch.zeros(self.packing.tokens, 3, device=self.device, dtype=self.dtype)
        image_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        guidance = self.guidance_scale if self.model.config.guidance_embeds else None
        return FluxCall(self.packing, text_ids, image_ids, guidance)

    def set_timesteps(self, scheduler: Any, num_steps: int) -> None:
        """``set_timesteps`` as ``FluxPipeline`` calls it (linear sigmas, resolution shift)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        cfg = scheduler.config
        mu = calculate_shift(
            (self.latent_shape[1] // 2) * (self.latent_shape[2] // 2),
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
        if sigmas is None:
            scheduler.set_timesteps(num_steps, device=self.device, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)


_FAMILIES = {"sd": SDFamily, "sdxl": SDXLFamily, "sd3": SD3Family, "flux": FluxFamily}


def make_family(pipe: Any, **kwargs: Any) -> SDFamily:
    """The family wrapper of a loaded pipeline (see the module docstring)."""
    return _FAMILIES[pipeline_family(pipe)](pipe, **kwargs)
