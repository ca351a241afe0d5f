"""What differs between pipeline families in ``DiffusionDenoise-v0``: encoding, schedule, decoding.

:func:`diffenvs.envs.denoise_flow_family.make_family` wraps a loaded pipeline in one of

* :class:`SDFamily`: ``StableDiffusionPipeline`` (SD 1.x/2.x, SD-Turbo, LCM-style UNets),
* :class:`SDXLFamily`: ``StableDiffusionXLPipeline`` (two text encoders, pooled embedding and
  size conditioning),
* :class:`~diffenvs.envs.denoise_flow_family.SD3Family`: ``StableDiffusion3Pipeline`` (``SD3Transformer2DModel``, flow matching,
  two CLIPs and an optional T5),
* :class:`~diffenvs.envs.denoise_flow_family.FluxFamily`: ``FluxPipeline`` (``FluxTransformer2DModel`` on packed latents, distilled
  guidance, CLIP + T5),

and :class:`~diffenvs.envs.denoise_core.DenoiseCore` asks it for the prompt embeddings, the
scheduler and its timesteps, the base sampler (:mod:`diffenvs.sampler`) and the decoded images.
Each family does what its diffusers pipeline does, so noise-mode episodes (DDIM/DDPM) and ODE
episodes (flow models, ``noise_level=0``) reproduce the pipelines' images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffenvs.conditioning import PooledPacking, SDXLCall
from diffenvs.logprob import previous_timestep, step_coefficients
from diffenvs.sampler import BaseSampler, FlowSampler

UNET_SCHEDULERS = ("ddim", "ddpm")


@dataclass
class Schedule:
    """The env's scheduler after ``set_timesteps`` and the per-step Gaussian coefficients."""

    scheduler: Any
    name: str  # "ddim", "ddpm" or "flow"
    timesteps: torch.Tensor  # (T,) long (UNet) or float (flow)
    prev_timesteps: torch.Tensor
    coeffs: Any  # StepCoefficients or FlowCoefficients, on the env's device
    t_list: list[int] | list[float]  # the timesteps as Python numbers (observations, infos)


def pipeline_family(pipe: Any) -> str:
    """``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"`` for a loaded pipeline, or a clear error."""
    name = type(pipe).__name__
    if getattr(pipe, "transformer", None) is not None:
        if "Flux" in name:
            return "flux"
        if "StableDiffusion3" in name:
            return "sd3"
        raise TypeError(
            f"{name} is a transformer pipeline the denoising env does not support; supported are "
            "StableDiffusion3Pipeline (SD3 layout), FluxPipeline (FLUX layout), "
            "StableDiffusionXLPipeline and StableDiffusionPipeline."
        )
    missing = [
        c
        for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
        if getattr(pipe, c, None) is None
    ]
    if missing:
        raise TypeError(
            f"model must be 'world', a pipeline folder, a hub id, or a loaded text-to-image "
            f"pipeline (Stable Diffusion 1.x/2.x, SDXL, SD3 or FLUX layout); got a {name} "
            f"without {missing}."
        )
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


def image_hw(image_size: Any, default: int) -> tuple[int, int]:
    if image_size is None:
        return default, default
    hw = (image_size, image_size) if isinstance(image_size, int | np.integer) else image_size
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"image_size must be an int or (height, width), got {image_size!r}."
        ) from err
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return h, w


class SDFamily:
    """``StableDiffusionPipeline``: one CLIP, a UNet, DDIM/DDPM steps (the original behaviour)."""

    name = "sd"
    flow = False

    def __init__(
        self,
        pipe: Any,
        *,
        guidance_scale: float,
        negative_prompt: str | None,
        image_size: Any = None,
        max_sequence_length: int | None = None,
    ) -> None:
        if max_sequence_length is not None and not self.flow:
            raise ValueError(
                f"max_sequence_length is the T5 prompt length of SD3/FLUX models; the {self.name} "
                "pipeline has no T5 encoder. Leave it None."
            )
        self.pipe = pipe
        self.model = self.denoiser()
        self.device, self.dtype = self.model.device, self.model.dtype
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.max_sequence_length = max_sequence_length
        self.scale = self.vae_scale()
        self.latent_shape = self.latents_for(image_size)
        self.image_shape = (self.latent_shape[1] * self.scale, self.latent_shape[2] * self.scale, 3)

    # -- shapes ---------------------------------------------------------------------------------
    def denoiser(self) -> Any:
        return self.pipe.unet

    def vae_scale(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    def latents_for(self, image_size: Any) -> tuple[int, int, int]:
        cfg = self.model.config
        if image_size is None:
            return (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        h, w = image_hw(image_size, 0)
        return (int(cfg.in_channels), h // self.scale, w // self.scale)

    # -- conditioning ---------------------------------------------------------------------------
    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1 and self.model.config.time_cond_proj_dim is None

    def encode(self, prompts: list[str]) -> torch.Tensor:
        emb, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return emb

    def negative(self) -> torch.Tensor | None:
        if not self.do_cfg:
            return None
        _, neg = self.pipe.encode_prompt(
            "", self.device, 1, True, negative_prompt=self.negative_prompt
        )
        return neg

    def timestep_cond(self) -> torch.Tensor | None:
        dim = getattr(self.model.config, "time_cond_proj_dim", None)
        if dim is None:
            return None
        w = torch.tensor([self.guidance_scale - 1.0])
        emb = self.pipe.get_guidance_scale_embedding(w, embedding_dim=dim)
        return emb.to(device=self.device, dtype=self.dtype)

    def model_call(self, embed_shape: tuple[int, ...], timestep_cond: Any) -> Any:
        return None

    # -- schedule -------------------------------------------------------------------------------
    def build_scheduler(self, spec: Any) -> Any:
        """A fresh DDIM/DDPM scheduler from the pipeline's config (never the pipeline's own)."""
        from diffusers import DDIMScheduler, DDPMScheduler

        if isinstance(spec, DDIMScheduler | DDPMScheduler):
            return type(spec).from_config(spec.config)
        spec = "ddim" if spec is None else spec
        if not isinstance(spec, str) or spec.lower() not in UNET_SCHEDULERS:
            raise ValueError(
                f"Unknown scheduler {spec!r}: use 'ddim' (with eta > 0) or 'ddpm', or pass a "
                "DDIMScheduler/DDPMScheduler instance. Other samplers have no Gaussian step "
                "log-probability."
            )
        cls = DDIMScheduler if spec.lower() == "ddim" else DDPMScheduler
        return cls.from_config(self.pipe.scheduler.config)

    def schedule(self, spec: Any, num_steps: int, eta: float, **flow_args: Any) -> Schedule:
        from diffenvs.envs import validate

        unused = {k: v for k, v in flow_args.items() if v is not None}
        if unused:
            raise ValueError(
                f"{sorted(unused)} configure the SDE of flow-matching models (SD3, FLUX); this "
                f"{self.name} pipeline samples with DDIM/DDPM: use eta and scheduler instead."
            )
        scheduler = self.build_scheduler(spec)
        validate.check_schedule(scheduler, num_steps)
        name = "ddim" if type(scheduler).__name__.startswith("DDIM") else "ddpm"
        if name == "ddim" and not eta > 0:
            raise ValueError(
                f"DDIM with eta={eta} is deterministic, so it is not an MDP with stochastic "
                "actions; use eta > 0 (eta=1.0 as in DDPO) or scheduler='ddpm'."
            )
        scheduler.set_timesteps(int(num_steps), device=self.device)
        timesteps = scheduler.timesteps.to(self.device).long()
        prev = previous_timestep(scheduler, timesteps)
        # The step Gaussians' coefficients depend only on the schedule: computed once, indexed.
        coeffs = step_coefficients(
            scheduler, timesteps.cpu(), eta=eta, prev_timestep=prev.cpu()
        ).to(self.device)
        return Schedule(scheduler, name, timesteps, prev, coeffs, [int(t) for t in timesteps])

    def sampler(self, sched: Schedule, *, eta: float, negative: Any, cond: Any, embed_shape: Any):
        kwargs = {}
        if sched.name == "flow":
            kwargs = {"sde_type": self.sde_type, "noise_level": tuple(self.noise_levels)}
        cls = FlowSampler if self.flow else BaseSampler
        return cls(
            scheduler_name=sched.name,
            eta=0.0 if self.flow else eta,  # flow models have no eta
            timesteps=sched.timesteps,
            prev_timesteps=sched.prev_timesteps,
            coefficients=sched.coeffs,
            guidance_scale=self.guidance_scale,
            negative_embeds=negative,
            timestep_cond=cond,
            latent_shape=self.latent_shape,
            embed_shape=embed_shape,
            unet=self.model,
            family=self.name,
            model_call=self.model_call(embed_shape, cond),
            **kwargs,
        )

    # -- images ---------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to float images (B, 3, H, W) in [0, 1], as the pipeline does."""
        vae = self.pipe.vae
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:  # SDXL-style per-channel latent statistics
            shape = (1, -1, 1, 1)
            m = torch.tensor(mean).reshape(shape).to(latents)
            s = torch.tensor(std).reshape(shape).to(latents)
            z = latents * s / vae.config.scaling_factor + m
        else:
            z = latents / vae.config.scaling_factor
            if getattr(vae.config, "shift_factor", None):
                z = z + vae.config.shift_factor
        image = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)


def pooled_packing(embeds: torch.Tensor, pooled: torch.Tensor) -> PooledPacking:
    return PooledPacking(int(embeds.shape[1]), int(pooled.shape[-1]), int(embeds.shape[2]))


class SDXLFamily(SDFamily):
    """``StableDiffusionXLPipeline``: two CLIPs; the pooled embedding rides in the prompt embeds."""

    name = "sdxl"

    def __init__(self, pipe: Any, **kwargs: Any) -> None:
        super().__init__(pipe, **kwargs)
        with torch.no_grad():
            emb, _, pooled, _ = self.pipe.encode_prompt(
                prompt=[""], device=self.device, do_classifier_free_guidance=False
            )
        self.packing = pooled_packing(emb, pooled)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        emb, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, do_classifier_free_guidance=False
        )
        return self.packing.pack(emb, pooled)

    def negative(self) -> torch.Tensor | None:
        if not self.do_cfg:
            return None
        _, neg, _, neg_pooled = self.pipe.encode_prompt(
            prompt="",
            device=self.device,
            do_classifier_free_guidance=True,
            negative_prompt=self.negative_prompt,
        )
        return self.packing.pack(neg, neg_pooled)

    def model_call(self, embed_shape: tuple[int, ...], timestep_cond: Any) -> Any:
        h, w = self.image_shape[:2]
        te2 = self.pipe.text_encoder_2
        time_ids = self.pipe._get_add_time_ids(
            (h, w),
            (0, 0),
            (h, w),
            dtype=self.dtype,
            text_encoder_projection_dim=int(te2.config.projection_dim),
        )
        return SDXLCall(self.packing, time_ids.to(self.device), timestep_cond)
