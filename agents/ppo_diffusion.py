"""Diffusion-policy PPO (seed 004 §5.3, DDPO, DPOK) on ``DiffusionDenoise-v0`` in latent mode.

The policy is a trainable copy of the world's UNet (LoRA adapters on the attention projections by
default, or every weight): at step k it outputs the Gaussian of x_{t-1} given x_t (the sampler's
step with its own noise prediction), samples x_{t-1} and hands it to the env as the action. The
env keeps running the frozen base UNet and reports the base model's log-prob of each action, which
gives the per-step KL penalty (eq. 5.3, k3 estimator). The terminal reward is standardised with
the base model's reward statistics (eq. 5.2). Updates use PPO's clipped objective over per-step
transitions, with critic-free per-prompt advantages (default) or a value function with GAE.

One script for 1 CPU, N GPUs or several nodes (``accelerate``)::

    python -m agents.ppo_diffusion --preset quick                 # ~5 min demo on 2 CPU cores
    diffenvs train ppo --preset target-image                      # the same through the CLI
    accelerate launch --num_processes 4 -m agents.ppo_diffusion --preset colourfulness-kl
    torchrun --standalone --nproc_per_node 2 -m agents.ppo_diffusion --preset quick --cpu

The policy, rollouts and PPO update are in :mod:`agents.ppo_diffusion_policy`, evaluation and
figures in :mod:`agents.ppo_diffusion_eval`, checkpoints in :mod:`agents.ppo_diffusion_checkpoint`
the tensor-level helpers in :mod:`agents.ppo_diffusion_lib` and the presets in
:mod:`agents.ppo_diffusion_presets`. See ``docs/agents/ppo.md``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from agents.ppo_diffusion_checkpoint import load_checkpoint, save_checkpoint
from agents.ppo_diffusion_eval import (
    eval_summary,
    evaluate,
    evaluate_base,
    save_curves,
    save_eval_report,
)
from agents.ppo_diffusion_lib import (
    AdaptiveKLController,
    FixedKLController,
    gae_advantages,
    make_prompt_source,
    per_prompt_advantages,
    returns_to_go,
)
from agents.ppo_diffusion_policy import (
    DiffusionActorCritic,
    ValueNet,
    build_policy_unet,
    collect_rollout,
    make_optimizer,
    ppo_update,
    trainable_state,
)
from agents.ppo_diffusion_presets import PRESETS

Preset = Literal["target-image", "colourfulness-kl", "prompt-alignment", "rlhf", "quick"]


@dataclass
class PPODiffusionConfig:
    """PPO on a diffusion policy (the world's UNet) through DiffusionDenoise-v0 in latent mode."""

    preset: Preset | None = None
    """Start from a preset; options given on the command line override it (from Python: options
    that differ from the defaults, or that ``explicit`` names)."""
    model: str = "world"
    prompts: str = "world"
    """Training prompts: 'world', 'world:heldout', 'counts' (world captions naming counts), a file."""
    eval_prompts: str = "world:heldout"
    """Held-out evaluation prompts ('counts:heldout' for the count prompts)."""
    reward: str = "target_rmse"
    """Any diffenvs reward name: target_rmse, colourfulness, clip_score, oracle, ..."""
    num_steps: int = 10
    """Sampler steps per image (episode length T)."""
    guidance_scale: float = 4.0
    eta: float = 1.0
    """DDIM noise (> 0 so every step is a Gaussian policy)."""
    num_envs: int = 8
    """Images per env batch, per process."""
    episodes_per_update: int = 1
    """Env batches per update: num_envs * episodes_per_update trajectories per process."""
    samples_per_prompt: int = 4
    """Trajectories that share a prompt (the groups of per-prompt advantage normalisation)."""
    num_updates: int = 50
    num_epochs: int = 1
    """Passes over each rollout."""
    minibatch_size: int = 16
    """Per-step transitions per minibatch (per process)."""
    grad_accum_steps: int = 1
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's steps trained on (a fresh random subset per update)."""
    clip_range: float = 1e-3
    """PPO ratio clip; small because a step's log-prob sums over every latent dimension."""
    adv_clip: float = 5.0
    advantage: Literal["per-prompt", "gae"] = "per-prompt"
    """'per-prompt': critic-free, returns standardised per prompt (DDPO); 'gae': value net + GAE."""
    group_std: bool = True
    """Per-prompt advantages divide by their prompt group's std (DDPO). False: only subtract the
    group mean, so once a group's rewards differ by noise alone its advantages shrink instead of
    staying unit-variance noise (use with reward_norm='fit', whose unit is the base model's std)."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    vf_coef: float = 0.5
    kl: Literal["none", "fixed", "adaptive"] = "none"
    kl_estimator: Literal["exact", "k3"] = "exact"
    """'exact': closed-form KL of the policy's and the base model's Gaussian steps (same std);
    'k3': seed 004's sample estimate (eq. 5.3), noisy once the policy has drifted."""
    kl_coef: float = 0.02
    """β (the starting β for 'adaptive')."""
    kl_target: float = 2.0
    """Target KL per image (sum of per-step k3 estimates) for the adaptive controller."""
    kl_horizon: float = 2000.0
    pg_min_std: float = 0.0
    """Steps whose reverse-step std σ_t is below this get no policy-gradient term (they still
    count in the KL penalty and loss). Per unit of noise the log-prob gradient of a step is
    |dμ_t/dε| / σ_t; on the world's 4-step schedule the second-last step (σ = 0.04) has 7-8x the
    others' and swamps the signal of the steps that decide the picture. 0.1 drops the last two."""
    kl_loss_coef: float = 0.0
    """DPOK-style regulariser: add this × the exact per-step KL to the base model to the loss and
    differentiate it directly (low variance; independent of the reward penalty ``kl``)."""
    reward_norm: Literal["fit", "none"] = "fit"
    """'fit': (r - mu) / sigma with the base model's reward statistics on the eval samples."""
    finetune: Literal["lora", "full", "cross_attention", "modules"] = "lora"
    """'lora' (peft adapters on lora_targets), 'full' (every UNet weight), 'cross_attention'
    (only the keys and values of the text cross-attention, as Custom Diffusion trains) or
    'modules' (every weight of the UNet modules named in train_modules)."""
    train_modules: tuple[str, ...] = ("conv_norm_out", "conv_out")
    """UNet module names (or name prefixes, e.g. 'up_blocks.2') trained by finetune='modules'."""
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    learning_rate: float = 3e-4
    value_learning_rate: float = 1e-4
    warmup_steps: int = 0
    """Linear warm-up of the policy learning rate, in optimiser steps."""
    lr_decay: Literal["none", "linear"] = "none"
    """'linear': after warm-up the policy learning rate falls linearly to 0 at the last update."""
    value_warmup_steps: int = 0
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto': bf16 autocast on CUDA devices that support it, off on CPU."""
    eval_episodes: int = 32
    """Held-out images before and after training (same prompts and seeds); 0 skips evaluation."""
    eval_seed: int = 1_000_000
    eval_oracle: bool = True
    """Also report the world oracle's prompt-following accuracy."""
    grid_images: int = 16
    seed: int = 0
    torch_threads: int = 1
    cpu: bool = False
    """Force the CPU even when a GPU is visible."""
    output_dir: str = "runs/ppo_diffusion"
    run_name: str | None = None
    save: bool = True
    """Write checkpoints, logs and figures to output_dir/run_name."""
    save_every: int = 10
    resume: bool = False
    """Continue from the run folder's latest checkpoint."""
    stop_after_updates: int | None = None
    """Stop (after checkpointing) once this many updates are done, as if the run were killed."""
    tensorboard: bool = True
    progress: bool = True
    explicit: tyro.conf.Suppress[tuple[str, ...]] = ()
    """Options given on the command line (the CLI fills this in): they win over the preset even
    where they equal the defaults, e.g. ``--group-std`` after a preset that turns it off."""


def options_in_argv(argv: list[str], config_type: type = PPODiffusionConfig) -> tuple[str, ...]:
    """The config fields that command-line arguments name (``--kl-loss-coef``, ``--no-group-std``)."""
    names = {f.name for f in fields(config_type)}
    found: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in names and name.startswith("no_"):
            name = name[3:]
        if name in names and name not in found:
            found.append(name)
    return tuple(found)


def resolve_config(cfg: PPODiffusionConfig) -> PPODiffusionConfig:
    """Apply ``cfg.preset`` (options that differ from the defaults, or that ``cfg.explicit`` names,
    win), then validate."""
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"Unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}.")
        default = PPODiffusionConfig()
        changed = {
            f.name: getattr(cfg, f.name)
            for f in fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name) or f.name in cfg.explicit
        }
        if cfg.preset == "rlhf" and "reward" not in changed:
            raise ValueError(
                "The rlhf preset needs the reward to optimise: pass --reward learned:PATH (a model "
                "from `diffenvs preference train`) or another reward name, e.g. oracle:blurred."
            )
        cfg = replace(replace(default, **PRESETS[cfg.preset]), **changed)
    validate_config(cfg)
    return cfg


def validate_config(cfg: PPODiffusionConfig) -> None:
    """Raise a ValueError that says what to change for an inconsistent configuration."""
    steps = max(1, math.ceil(cfg.timestep_fraction * cfg.num_steps))
    per_update = cfg.num_envs * cfg.episodes_per_update * steps
    checks = [
        (cfg.num_steps >= 1, f"num_steps must be >= 1, got {cfg.num_steps}."),
        (cfg.num_envs >= 1, f"num_envs must be >= 1, got {cfg.num_envs}."),
        (cfg.episodes_per_update >= 1, "episodes_per_update must be >= 1."),
        (cfg.num_updates >= 0, "num_updates must be >= 0."),
        (cfg.num_epochs >= 1, "num_epochs must be >= 1."),
        (cfg.samples_per_prompt >= 1, "samples_per_prompt must be >= 1."),
        (
            cfg.num_envs % cfg.samples_per_prompt == 0,
            f"num_envs ({cfg.num_envs}) must be a multiple of samples_per_prompt "
            f"({cfg.samples_per_prompt}) so every prompt group fits in one env batch.",
        ),
        (
            0 < cfg.timestep_fraction <= 1,
            f"timestep_fraction must be in (0, 1], got {cfg.timestep_fraction}.",
        ),
        (cfg.minibatch_size >= 1 and cfg.grad_accum_steps >= 1, "minibatch sizes must be >= 1."),
        (
            per_update % (cfg.minibatch_size * cfg.grad_accum_steps) == 0,
            f"Each update trains on num_envs * episodes_per_update * ceil(timestep_fraction * "
            f"num_steps) = {per_update} transitions per process, which must be a multiple of "
            f"minibatch_size * grad_accum_steps = {cfg.minibatch_size * cfg.grad_accum_steps}.",
        ),
        (cfg.clip_range > 0, f"clip_range must be > 0, got {cfg.clip_range}."),
        (cfg.adv_clip > 0, "adv_clip must be > 0."),
        (
            0 <= cfg.gamma <= 1 and 0 <= cfg.gae_lambda <= 1,
            "gamma and gae_lambda must be in [0, 1].",
        ),
        (cfg.learning_rate > 0 and cfg.value_learning_rate > 0, "learning rates must be > 0."),
        (cfg.warmup_steps >= 0 and cfg.value_warmup_steps >= 0, "warm-up steps must be >= 0."),
        (cfg.max_grad_norm > 0, "max_grad_norm must be > 0."),
        (cfg.kl_coef >= 0 and math.isfinite(cfg.kl_coef), "kl_coef must be a finite number >= 0."),
        (
            cfg.kl_loss_coef >= 0 and math.isfinite(cfg.kl_loss_coef),
            f"kl_loss_coef must be a finite number >= 0 (0 turns the KL loss off), got "
            f"{cfg.kl_loss_coef}.",
        ),
        (
            cfg.kl != "adaptive" or (cfg.kl_target > 0 and cfg.kl_horizon > 0),
            "kl='adaptive' needs kl_target > 0 and kl_horizon > 0.",
        ),
        (
            cfg.kl != "adaptive" or cfg.kl_coef > 0,
            "kl='adaptive' multiplies β, so its starting kl_coef must be > 0.",
        ),
        (cfg.finetune != "lora" or cfg.lora_rank >= 1, "lora_rank must be >= 1."),
        (
            cfg.pg_min_std >= 0,
            f"pg_min_std must be >= 0 (0 = train every step), got {cfg.pg_min_std}.",
        ),
        (
            cfg.finetune != "modules" or len(cfg.train_modules) > 0,
            "finetune='modules' needs at least one UNet module name in train_modules "
            "(e.g. --train-modules conv_norm_out conv_out).",
        ),
        (cfg.eval_episodes >= 0, "eval_episodes must be >= 0."),
        (
            cfg.reward_norm != "fit" or cfg.eval_episodes >= 2,
            "reward_norm='fit' standardises with the base model's rewards on the evaluation "
            f"samples, so it needs eval_episodes >= 2 (got {cfg.eval_episodes}); or set "
            "reward_norm='none'.",
        ),
        (cfg.torch_threads >= 1, "torch_threads must be >= 1."),
        (cfg.save_every >= 1, "save_every must be >= 1."),
        (
            cfg.stop_after_updates is None or cfg.stop_after_updates >= 1,
            "stop_after_updates must be >= 1 (or unset).",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# --------------------------------------------------------------------------------------------
# Training


def _mixed_precision(cfg: PPODiffusionConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    cuda = torch.cuda.is_available() and not cfg.cpu
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"


def train(cfg: PPODiffusionConfig) -> dict[str, Any]:
    """Train; returns the evaluation before/after, the per-update history and the run folder."""
    import gymnasium as gym
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    import diffenvs  # noqa: F401  (registers the environments)
    from diffenvs.io import write_json
    from diffenvs.rewards import make_reward

    cfg = resolve_config(cfg)
    torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=_mixed_precision(cfg))
    main_proc, rank = accelerator.is_main_process, accelerator.process_index
    # The same seed on every process: identical LoRA / critic initialisation everywhere.
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or f"{cfg.preset or 'custom'}_seed{cfg.seed}")

    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=cfg.num_envs,
        model=cfg.model,
        prompts=make_prompt_source(cfg.prompts),
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        reward=cfg.reward,
        action_mode="latent",
        kl_coef=0.0,  # the agent applies the KL penalty itself, with its (adaptive) β
        device=accelerator.device,
    )
    core = envs.core
    value = None
    if cfg.advantage == "gae":
        value = ValueNet(core.latent_shape[0], core.embed_shape[-1])
    model = DiffusionActorCritic(build_policy_unet(core.pipe.unet, cfg), core, value)
    model.to(accelerator.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    # The scheduler is stepped by hand once per optimiser step (accelerate's wrapper would step it
    # once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    policy: DiffusionActorCritic = accelerator.unwrap_model(model)
    initial = trainable_state(policy)

    train_prompts = make_prompt_source(cfg.prompts)
    eval_source = make_prompt_source(cfg.eval_prompts)
    eval_rng = np.random.default_rng(cfg.eval_seed)
    eval_prompts = [eval_source.sample(eval_rng) for _ in range(cfg.eval_episodes)]
    oracle = None
    if cfg.eval_oracle and cfg.eval_episodes:
        oracle = make_reward("oracle", soft=False, device=accelerator.device)

    start, history = 0, []
    state: dict[str, Any] = {}
    if cfg.resume:
        state = load_checkpoint(run_dir, model, optimizer, scheduler, accelerator)
        start, history = state["update"], state["history"]
    before = None
    if cfg.eval_episodes:
        before = evaluate_base(policy, envs, eval_prompts, cfg, accelerator, oracle, run_dir)
    if "reward_mean_std" in state:
        mu, sigma = state["reward_mean_std"]
    elif cfg.reward_norm == "fit" and before is not None:
        mu, sigma = float(before["rewards"].mean()), float(before["rewards"].std()) or 1.0
    else:
        mu, sigma = 0.0, 1.0
    beta0 = 0.0 if cfg.kl == "none" else cfg.kl_coef
    beta0 = state.get("beta", beta0)
    controller = (
        AdaptiveKLController(beta0, cfg.kl_target, cfg.kl_horizon)
        if cfg.kl == "adaptive"
        else FixedKLController(beta0)
    )

    writer, csv_file, csv_writer = None, None, None
    if main_proc and cfg.save:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", json.loads(json.dumps(asdict(cfg), default=str)))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
    from tqdm.auto import tqdm

    bar = tqdm(
        range(start, cfg.num_updates),
        initial=start,
        total=cfg.num_updates,
        disable=not (main_proc and cfg.progress),
        desc="ppo",
    )
    stopped = False
    t0 = time.perf_counter()
    for update in bar:
        # Every random draw of an update comes from (seed, process, update): a resumed run repeats
        # an uninterrupted one exactly.
        rng = np.random.default_rng([cfg.seed, rank, update])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        buffer = collect_rollout(policy, envs, train_prompts, cfg, rng, accelerator.autocast)
        beta = controller.beta
        kl = buffer.kl(cfg.kl_estimator).float()
        terminal = (buffer.rewards - mu) / sigma
        if cfg.advantage == "gae":
            step_rewards = -beta * kl
            step_rewards[:, -1] += terminal
            advantages, returns = gae_advantages(
                step_rewards, buffer.values, cfg.gamma, cfg.gae_lambda
            )
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        else:
            advantages = per_prompt_advantages(
                returns_to_go(terminal, kl, beta), buffer.groups, scale=cfg.group_std
            )
            returns = None
        stats = ppo_update(
            model, optimizer, scheduler, buffer, advantages, returns, cfg, accelerator, gen
        )
        local = torch.tensor(
            [buffer.rewards.mean(), kl.sum(1).mean(), terminal.mean()], device=accelerator.device
        )
        reward_mean, kl_mean, norm_mean = accelerator.reduce(local, "mean").tolist()
        n_traj = buffer.shape[0] * accelerator.num_processes
        row = {
            "update": update + 1,
            "reward_mean": reward_mean,
            "reward_norm_mean": norm_mean,
            "kl": kl_mean,
            "beta": beta,
            "lr": scheduler.get_last_lr()[0],
            "time_s": time.perf_counter() - t0,
            **stats,
        }
        controller.update(kl_mean, n_traj)
        history.append(row)
        if main_proc:
            bar.set_postfix(reward=f"{reward_mean:.3f}", kl=f"{kl_mean:.3g}")
            if writer is not None:
                for key, v in row.items():
                    if key != "update":
                        writer.add_scalar(f"train/{key}", v, update + 1)
            if cfg.save:
                new = csv_file is None and not (run_dir / "progress.csv").exists()
                if csv_file is None:
                    csv_file = open(run_dir / "progress.csv", "a", newline="")  # noqa: SIM115
                    csv_writer = csv.DictWriter(
                        csv_file, fieldnames=list(row), extrasaction="ignore"
                    )
                    if new:
                        csv_writer.writeheader()
                csv_writer.writerow(row)
                csv_file.flush()
        done = update + 1
        stopped = cfg.stop_after_updates is not None and done >= cfg.stop_after_updates
        if cfg.save and (done % cfg.save_every == 0 or done == cfg.num_updates or stopped):
            snapshot = {
                "history": history,
                "beta": controller.beta,
                "reward_mean_std": [mu, sigma],
            }
            save_checkpoint(run_dir, done, model, optimizer, scheduler, snapshot, accelerator)
        if stopped and done < cfg.num_updates:
            break
    bar.close()
    if writer is not None:
        writer.close()
    if csv_file is not None:
        csv_file.close()

    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "history": history,
        "stopped": stopped and len(history) < cfg.num_updates,
        "initial_params": initial,
        "params": trainable_state(policy),
        "accelerator": accelerator,
    }
    if before is not None and not result["stopped"]:
        after = evaluate(policy, envs, eval_prompts, cfg.eval_seed, accelerator, oracle)
        summary = {"before": eval_summary(before), "after": eval_summary(after)}
        summary["train_time_s"] = time.perf_counter() - t0
        summary["updates"] = len(history)
        result["eval"] = summary
        result["eval_results"] = {"before": before, "after": after}
        if main_proc and cfg.save:
            np.savez(run_dir / "eval_after.npz", **after)
            grid = min(cfg.grid_images, len(eval_prompts))
            save_eval_report(before, after, summary, run_dir, grid, cfg.reward)
    if main_proc and cfg.save:
        save_curves(history, run_dir / "curves.png")
    accelerator.wait_for_everyone()
    return result


def main(cfg: PPODiffusionConfig) -> dict[str, Any]:
    """Entry point of ``diffenvs train ppo`` and ``python -m agents.ppo_diffusion``."""
    result = train(cfg)
    if result["accelerator"].is_main_process and "eval" in result:
        print(json.dumps(result["eval"], indent=2))
        print(f"run folder: {result['run_dir']}")
    return result


if __name__ == "__main__":
    import sys

    cli_cfg = tyro.cli(PPODiffusionConfig)
    main(replace(cli_cfg, explicit=options_in_argv(sys.argv[1:])))
