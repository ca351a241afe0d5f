"""Configuration of the GRPO agent: the dataclass, its presets and validation.

Imports nothing else of the agent (and no torch), so ``diffenvs train --help`` lists the options
without loading a model. The presets are runs measured on the embedded world; docs/agents/grpo.md
and docs/results/grpo.md have their results and commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import tyro

Preset = Literal["target-image"]


@dataclass
class GRPOConfig:
    """GRPO (group-relative policy optimisation) of a diffusion or flow model through
    DiffusionDenoise-v0 in latent mode: groups of images per prompt, a window of SDE steps."""

    preset: Preset | None = None
    """Start from a preset; options given on the command line override it (from Python: options
    that differ from the defaults, or that ``explicit`` names)."""
    env: str = "DiffusionDenoise-v0"
    """The env id: DiffusionDenoise-v0 or a reference task (ReferenceGMM2D-v0, ...;
    docs/envs/reference.md), where ``model`` names the base mixture and ``reward`` its reward."""
    model: str = "world"
    prompts: str = "world"
    """Training prompts: 'world', 'world:heldout', 'counts', 'prompt:TEXT' or a prompt file."""
    eval_prompts: str = "world:heldout"
    reward: str = "target_rmse"
    """Any diffenvs reward name: target_rmse, colourfulness, jpeg_compressibility, oracle, ..."""
    num_steps: int = 10
    """Sampler steps per image (episode length T)."""
    guidance_scale: float = 4.0
    eta: float = 1.0
    """The env's DDIM noise inside the SDE window (> 0: those steps are Gaussian policy steps)."""
    cfg_free: bool = False
    """Train and sample the policy without classifier-free guidance (one conditional pass per
    step; the reference model of the KL runs the same way). Evaluation then samples the policy
    (and the base model of the 'before' numbers) without guidance too."""
    group_size: int = 4
    """G: images per prompt (the group whose rewards are compared)."""
    num_envs: int = 8
    """Images per env batch, per process: num_envs / group_size prompts per batch."""
    episodes_per_update: int = 1
    """Env batches per update (per process)."""
    sde_window: int | None = None
    """W: only a contiguous window of W of the T steps is stochastic and trained (DanceGRPO's and
    Flow-GRPO-Fast's cheap rollouts); the other steps are the deterministic (ODE) step of the
    sampler: DDIM with eta = 0. None: every step is an SDE step."""
    window_start: int | None = None
    """First step of the window (0 = the noisiest step). None: drawn uniformly for each update."""
    num_updates: int = 50
    num_epochs: int = 1
    """Passes over each rollout."""
    grad_accum_steps: int | None = None
    """Forward/backward blocks (one env batch at one window step) per optimiser step. None: all of
    an epoch's blocks, i.e. one optimiser step per epoch (the clip then acts only from epoch 2)."""
    adv_std: Literal["group", "batch", "none"] = "group"
    """Divide the mean-centred advantages by the group's reward std (GRPO, Shao et al.), the whole
    batch's (Flow-GRPO's global std) or nothing (centred only, as Dr. GRPO)."""
    adv_clip: float = 5.0
    logprob_reduction: Literal["mean", "sum"] = "mean"
    """How a step's log-prob is reduced over the D latent dimensions in the ratio and the KL loss
    ('mean': per dimension, as DDPO and Flow-GRPO; 'sum': the whole latent)."""
    clip_range: float = 1e-4
    """Clip ε of the importance ratio (under 'mean', of the per-dimension ratio)."""
    kl_coef: float = 0.0
    """β of the closed-form per-step KL to the reference (the base model) in the loss (GRPO's KL
    term; Flow-GRPO uses 0.004-0.04). > 0 runs the reference model on every window step."""
    reward_norm: Literal["fit", "none"] = "fit"
    """'fit': rewards in units of the base model's std on the evaluation samples (so centred-only
    advantages have a scale that does not depend on the reward); 'none': raw rewards."""
    finetune: Literal["lora", "full", "cross_attention", "modules"] = "lora"
    """As the PPO agent: LoRA adapters, every weight, the cross-attention keys and values, or the
    named modules."""
    train_modules: tuple[str, ...] = ("conv_norm_out", "conv_out")
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    learning_rate: float = 3e-4
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    eval_episodes: int = 32
    """Held-out images before and after training (same prompts, x_T and step noise; every step
    stochastic, as the PPO agent evaluates); 0 skips evaluation."""
    eval_seed: int = 1_000_000
    eval_oracle: bool = True
    grid_images: int = 16
    seed: int = 0
    torch_threads: int = 1
    cpu: bool = False
    output_dir: str = "runs/grpo"
    run_name: str | None = None
    save: bool = True
    save_every: int = 10
    resume: bool = False
    stop_after_updates: int | None = None
    tensorboard: bool = True
    progress: bool = True
    explicit: tyro.conf.Suppress[tuple[str, ...]] = ()
    """Options given on the command line (the CLI fills this in): they win over the preset."""


PRESETS: dict[str, dict[str, Any]] = {
    # The PPO agent's target-image task (Kristiansen & Vågen 2023, Exp. 1) on one prompt; the
    # side-by-side comparison with `diffenvs train ppo --preset target-image` is in
    # docs/results/grpo.md.
    "target-image": {
        "reward": "target_rmse",
        "prompts": "prompt:one large yellow star in the middle of an ocean",
        "eval_prompts": "prompt:one large yellow star in the middle of an ocean",
        "num_steps": 4,
        "num_envs": 16,
        "group_size": 8,
        "sde_window": 2,
        "window_start": 0,
        "num_updates": 50,
        "finetune": "full",
        "learning_rate": 1e-4,
        "warmup_steps": 10,
        "adv_std": "none",
        "logprob_reduction": "sum",
        "clip_range": 1e-3,
        "eval_episodes": 64,
    },
}


def resolve_config(cfg: GRPOConfig) -> GRPOConfig:
    """Apply ``cfg.preset`` (options that differ from the defaults, or that ``cfg.explicit`` names,
    win), then validate."""
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"Unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}.")
        default = GRPOConfig()
        changed = {
            f.name: getattr(cfg, f.name)
            for f in fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name) or f.name in cfg.explicit
        }
        cfg = replace(replace(default, **PRESETS[cfg.preset]), **changed)
    validate_config(cfg)
    return cfg


def window_size(cfg: GRPOConfig) -> int:
    """W, the number of SDE (trained) steps per trajectory."""
    return cfg.num_steps if cfg.sde_window is None else cfg.sde_window


def blocks_per_epoch(cfg: GRPOConfig) -> int:
    """Forward/backward blocks of one epoch: one per env batch and window step."""
    return cfg.episodes_per_update * window_size(cfg)


def accum_steps(cfg: GRPOConfig) -> int:
    """Blocks per optimiser step (``grad_accum_steps``, or every block of an epoch)."""
    return blocks_per_epoch(cfg) if cfg.grad_accum_steps is None else cfg.grad_accum_steps


def validate_config(cfg: GRPOConfig) -> None:
    """Raise a ValueError that says what to change for an inconsistent configuration."""
    w = window_size(cfg)
    checks = [
        (cfg.num_steps >= 1, f"num_steps must be >= 1, got {cfg.num_steps}."),
        (
            cfg.group_size >= 2,
            f"group_size must be >= 2 (GRPO compares images of one prompt), got {cfg.group_size}.",
        ),
        (
            cfg.num_envs >= 1 and cfg.episodes_per_update >= 1,
            "num_envs and episodes_per_update must be >= 1.",
        ),
        (
            cfg.num_envs % cfg.group_size == 0,
            f"num_envs ({cfg.num_envs}) must be a multiple of group_size ({cfg.group_size}) so every "
            "group of images of one prompt is sampled in one env batch; change either.",
        ),
        (
            1 <= w <= cfg.num_steps,
            f"sde_window must be between 1 and num_steps ({cfg.num_steps}), got {cfg.sde_window}.",
        ),
        (
            cfg.window_start is None or 0 <= cfg.window_start <= cfg.num_steps - w,
            f"window_start must be between 0 and num_steps - sde_window = {cfg.num_steps - w} "
            f"(or None to draw it per update), got {cfg.window_start}.",
        ),
        (
            cfg.num_updates >= 0 and cfg.num_epochs >= 1,
            "num_updates must be >= 0 and num_epochs >= 1.",
        ),
        (
            cfg.grad_accum_steps is None or cfg.grad_accum_steps >= 1,
            "grad_accum_steps must be >= 1 (or None).",
        ),
        (
            blocks_per_epoch(cfg) % accum_steps(cfg) == 0,
            f"An epoch has episodes_per_update * sde_window = {blocks_per_epoch(cfg)} blocks (one env "
            f"batch at one window step), which must be a multiple of grad_accum_steps "
            f"({cfg.grad_accum_steps}).",
        ),
        (cfg.eta > 0, f"eta must be > 0 (the SDE steps are Gaussian policy steps), got {cfg.eta}."),
        (cfg.clip_range > 0 and cfg.adv_clip > 0, "clip_range and adv_clip must be > 0."),
        (
            cfg.kl_coef >= 0 and math.isfinite(cfg.kl_coef),
            f"kl_coef must be a finite number >= 0 (0 turns the KL loss off), got {cfg.kl_coef}.",
        ),
        (
            cfg.learning_rate > 0 and cfg.warmup_steps >= 0,
            "learning_rate must be > 0 and warmup_steps >= 0.",
        ),
        (cfg.max_grad_norm > 0, "max_grad_norm must be > 0."),
        (cfg.finetune != "lora" or cfg.lora_rank >= 1, "lora_rank must be >= 1."),
        (cfg.eval_episodes >= 0, "eval_episodes must be >= 0."),
        (
            cfg.reward_norm != "fit" or cfg.eval_episodes >= 2,
            "reward_norm='fit' standardises with the base model's rewards on the evaluation samples, "
            f"so it needs eval_episodes >= 2 (got {cfg.eval_episodes}); or set reward_norm='none'.",
        ),
        (
            cfg.torch_threads >= 1 and cfg.save_every >= 1,
            "torch_threads and save_every must be >= 1.",
        ),
        (
            cfg.stop_after_updates is None or cfg.stop_after_updates >= 1,
            "stop_after_updates must be >= 1 (or unset).",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
