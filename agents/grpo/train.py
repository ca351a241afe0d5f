"""GRPO on ``DiffusionDenoise-v0`` (Shao et al., DeepSeekMath; Liu et al., Flow-GRPO; Xue et al.,
DanceGRPO for the window of SDE steps).

Each update samples groups of G images per prompt with the policy (a trainable copy of the env's
model, LoRA or full, :mod:`agents.ppo.policy`): inside a window of W contiguous steps each step is
the sampler's Gaussian step, outside it the sampler's deterministic step. Advantages are the
rewards relative to their group (:func:`agents.grpo.update.group_advantages`); the loss is the
clipped importance ratio of the window steps plus β times the closed-form KL of each step to the
reference (base) model. One script for 1 CPU, N GPUs or several nodes (``accelerate``)::

    python -m agents.grpo.train --preset target-image --num-updates 20
    diffenvs train grpo --preset target-image
    accelerate launch --num_processes 4 -m agents.grpo.train --preset target-image

Logging (``progress.csv``, TensorBoard), checkpoints (safetensors, atomic, ``--resume``), the
evaluation before/after and its figures are the PPO agent's (:mod:`agents.ppo.checkpoint`,
:mod:`agents.ppo.evaluate`). See ``docs/agents/grpo.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from agents.common.cli_args import options_in_argv
from agents.grpo.config import GRPOConfig, resolve_config, window_size
from agents.grpo.rollout import collect_groups
from agents.grpo.sampling import ode_sampler, unguided_sampler, window_steps
from agents.grpo.update import group_advantages, grpo_update, make_optimizer
from agents.ppo.checkpoint import load_checkpoint, save_checkpoint
from agents.ppo.evaluate import (
    collapse_check,
    eval_summary,
    evaluate,
    evaluate_base,
    save_curves,
    save_eval_report,
)
from agents.ppo.policy import DiffusionActorCritic, build_policy_unet, trainable_state
from agents.ppo.rollout import make_prompt_source
from agents.ppo.train import RunLog


def _mixed_precision(cfg: GRPOConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    cuda = torch.cuda.is_available() and not cfg.cpu
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"


def make_envs(cfg: GRPOConfig, device: Any, model: Any = None, reward: Any = None) -> Any:
    """The vector env in latent mode. The agent takes every step itself (SDE in the window,
    deterministic elsewhere) and runs the reference model itself, so the env runs no UNet."""
    import gymnasium as gym

    import diffenvs  # noqa: F401  (registers the environments)

    return gym.make_vec(
        cfg.env,
        num_envs=cfg.num_envs,
        model=cfg.model if model is None else model,
        prompts=make_prompt_source(cfg.prompts),
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        reward=cfg.reward if reward is None else reward,
        action_mode="latent",
        kl_coef=0.0,
        base_step="auto",
        device=device,
    )


def train(cfg: GRPOConfig, *, model: Any = None, reward: Any = None) -> dict[str, Any]:
    """Train; returns the evaluation before/after, the per-update history and the run folder.

    ``model`` (a loaded pipeline) and ``reward`` (a Reward or ``fn(images, prompts)``) override
    ``cfg.model`` / ``cfg.reward`` from Python. The training loop, written out top to bottom
    (longer than other functions on purpose): set-up, the base model's evaluation, then per update
    a rollout, group advantages and the GRPO update, logging and checkpoints; evaluation last.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from diffenvs.rewards import make_reward

    cfg = resolve_config(cfg)
    torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=_mixed_precision(cfg))
    main_proc, rank = accelerator.is_main_process, accelerator.process_index
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or f"{cfg.preset or 'custom'}_seed{cfg.seed}")

    envs = make_envs(cfg, accelerator.device, model, reward)
    sampler = envs.unwrapped.sampler
    policy_sampler = unguided_sampler(sampler) if cfg.cfg_free else sampler
    if window_size(cfg) < cfg.num_steps:
        ode_sampler(policy_sampler)  # fails now, with what to change, if there is no ODE step
    wrapped = DiffusionActorCritic(build_policy_unet(sampler.unet, cfg), policy_sampler)
    wrapped.to(accelerator.device)
    # The reference of the KL is the env's frozen model, run with the policy's guidance.
    reference = sampler.unet if cfg.kl_coef > 0 else None
    optimizer, scheduler = make_optimizer(wrapped, cfg)
    net, optimizer = accelerator.prepare(wrapped, optimizer)
    policy: DiffusionActorCritic = accelerator.unwrap_model(net)
    initial = trainable_state(policy)

    train_prompts = make_prompt_source(cfg.prompts)
    eval_source = make_prompt_source(cfg.eval_prompts)
    eval_rng = np.random.default_rng(cfg.eval_seed)
    eval_prompts = [eval_source.sample(eval_rng) for _ in range(cfg.eval_episodes)]
    oracle = None
    if cfg.eval_oracle and cfg.eval_episodes:
        oracle = make_reward("oracle", soft=False, device=accelerator.device)

    start, history, state = 0, [], {}
    if cfg.resume:
        state = load_checkpoint(run_dir, net, optimizer, scheduler, accelerator)
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

    log = RunLog(run_dir, cfg, main_proc)
    from tqdm.auto import tqdm

    bar = tqdm(
        range(start, cfg.num_updates),
        initial=start,
        total=cfg.num_updates,
        disable=not (main_proc and cfg.progress),
        desc="grpo",
    )
    w = window_size(cfg)
    stopped = False
    t0 = time.perf_counter() - (history[-1]["time_s"] if history else 0.0)
    for update in bar:
        # Every random draw of an update comes from (seed, process, update): a resumed run repeats
        # an uninterrupted one exactly.
        rng = np.random.default_rng([cfg.seed, rank, update])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        first = cfg.window_start
        if first is None:
            first = int(rng.integers(cfg.num_steps - w + 1))
        steps = window_steps(cfg.num_steps, w, first)
        t_roll = time.perf_counter()
        buffer = collect_groups(
            policy,
            envs,
            train_prompts,
            steps,
            cfg.group_size,
            cfg.episodes_per_update,
            rng,
            reference,
            accelerator.autocast,
        )
        t_train = time.perf_counter()
        terminal = (buffer.rewards - mu) / sigma
        advantages = group_advantages(terminal, buffer.groups, cfg.adv_std)
        stats = grpo_update(net, optimizer, scheduler, buffer, advantages, cfg, accelerator, gen)
        timing = {"rollout_s": t_train - t_roll, "train_s": time.perf_counter() - t_train}

        flat, ids = buffer.rewards.reshape(-1), buffer.groups.reshape(-1)
        flat_groups = [flat[ids == g] for g in torch.unique(ids)]
        tied = float(np.mean([float(r.max() - r.min()) == 0.0 for r in flat_groups]))
        kl_image = (
            buffer.ref_kl.sum(1).mean() if buffer.ref_kl is not None else torch.tensor(float("nan"))
        )
        local = torch.tensor(
            [flat.mean(), flat.std(), kl_image, terminal.mean()], device=accelerator.device
        )
        reward_mean, reward_std, kl_mean, norm_mean = accelerator.reduce(local, "mean").tolist()
        row = {
            "update": update + 1,
            "reward_mean": reward_mean,
            "reward_std": reward_std,
            "reward_norm_mean": norm_mean,
            "kl": kl_mean,
            "tied_groups": tied,
            "window_start": float(first),
            "lr": scheduler.get_last_lr()[0],
            "time_s": time.perf_counter() - t0,
            **timing,
            **stats,
        }
        history.append(row)
        if main_proc:
            bar.set_postfix(reward=f"{reward_mean:.3f}", kl=f"{kl_mean:.3g}")
        log.write(row)
        done = update + 1
        stopped = cfg.stop_after_updates is not None and done >= cfg.stop_after_updates
        if cfg.save and (done % cfg.save_every == 0 or done == cfg.num_updates or stopped):
            snapshot = {"history": history, "reward_mean_std": [mu, sigma]}
            save_checkpoint(run_dir, done, net, optimizer, scheduler, snapshot, accelerator)
        if stopped and done < cfg.num_updates:
            break
    bar.close()
    log.close()

    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "history": history,
        "stopped": stopped and len(history) < cfg.num_updates,
        "initial_params": initial,
        "params": trainable_state(policy),
        "policy": policy,
        "accelerator": accelerator,
    }
    if before is not None and not result["stopped"]:
        after = evaluate(policy, envs, eval_prompts, cfg.eval_seed, accelerator, oracle)
        summary = {
            "before": eval_summary(before, eval_prompts),
            "after": eval_summary(after, eval_prompts),
        }
        summary["train_time_s"] = history[-1]["time_s"] if history else 0.0
        summary["updates"] = len(history)
        summary |= collapse_check(summary["before"], summary["after"], warn=main_proc)
        result["eval"] = summary
        result["eval_results"] = {"before": before, "after": after}
        if main_proc and cfg.save:
            np.savez(run_dir / "eval_after.npz", **after)
            grid = min(cfg.grid_images, len(eval_prompts))
            save_eval_report(before, after, summary, run_dir, grid, cfg.reward, agent="GRPO")
    if main_proc and cfg.save:
        save_curves(history, run_dir / "curves.png")
    accelerator.wait_for_everyone()
    return result


def main(cfg: GRPOConfig) -> dict[str, Any]:
    """Train and print the before/after evaluation: ``diffenvs train grpo`` and
    ``python -m agents.grpo.train``."""
    result = train(cfg)
    if result["accelerator"].is_main_process and "eval" in result:
        print(json.dumps(result["eval"], indent=2))
        print(f"run folder: {result['run_dir']}")
    return result


if __name__ == "__main__":
    import sys

    cli_cfg = tyro.cli(GRPOConfig)
    main(replace(cli_cfg, explicit=options_in_argv(sys.argv[1:], GRPOConfig)))
