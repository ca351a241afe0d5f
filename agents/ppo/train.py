"""Diffusion-policy PPO (Kristiansen & Vågen 2023 §5.3, DDPO, DPOK) on ``DiffusionDenoise-v0``.

The policy is a trainable copy of the env's UNet (LoRA adapters on the attention projections by
default, or every weight): at step k it outputs the Gaussian of x_{t-1} given x_t (the sampler's
step with its own noise prediction), samples x_{t-1} and hands it to the env (latent mode) as the
action. The env keeps running the frozen base UNet and reports the base model's log-prob of each
action, which gives the per-step KL penalty (eq. 5.3). The terminal reward is standardised with
the base model's reward statistics (eq. 5.2). Updates use PPO's clipped objective over per-step
transitions, with critic-free per-prompt advantages (default) or a value function with GAE.

One script for 1 CPU, N GPUs or several nodes (``accelerate``)::

    python -m agents.ppo.train --preset quick                 # ~5 min demo on 2 CPU cores
    diffenvs train ppo --preset target-image                  # the same through the CLI
    accelerate launch --num_processes 4 -m agents.ppo.train --preset colourfulness-kl
    torchrun --standalone --nproc_per_node 2 -m agents.ppo.train --preset quick --cpu

The package reads in the order the data flows: :mod:`~agents.ppo.config` (options, presets) →
:mod:`~agents.ppo.policy` → :mod:`~agents.ppo.rollout` → :mod:`~agents.ppo.losses` →
:mod:`~agents.ppo.update` (one PPO update, top to bottom) → this training loop →
:mod:`~agents.ppo.evaluate` and :mod:`~agents.ppo.checkpoint`. See ``docs/agents/ppo.md``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from agents.common.cli_args import options_in_argv
from agents.ppo.checkpoint import load_checkpoint, save_checkpoint
from agents.ppo.config import PPOConfig, needs_base_model, resolve_config
from agents.ppo.evaluate import (
    collapse_check,
    eval_summary,
    evaluate,
    evaluate_base,
    save_curves,
    save_eval_report,
)
from agents.ppo.losses import AdaptiveKLController, FixedKLController, PromptStatTracker
from agents.ppo.policy import DiffusionActorCritic, ValueNet, build_policy_unet, trainable_state
from agents.ppo.rollout import collect_rollout, make_prompt_source
from agents.ppo.update import compute_advantages, make_optimizer, ppo_update


def _mixed_precision(cfg: PPOConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    cuda = torch.cuda.is_available() and not cfg.cpu
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"


def make_envs(cfg: PPOConfig, device: Any) -> Any:
    """The agent's vector env in latent mode: ``cfg.num_envs`` copies of ``cfg.env`` with its model,
    prompts, sampler settings and reward. The env adds no KL penalty (the agent applies it with its
    own β) and runs the frozen base model only when a KL term needs it, so a rollout step costs
    one guided UNet pass otherwise."""
    import gymnasium as gym

    import diffenvs  # noqa: F401  (registers the environments)

    return gym.make_vec(
        cfg.env,
        num_envs=cfg.num_envs,
        model=cfg.model,
        prompts=make_prompt_source(cfg.prompts),
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        reward=cfg.reward,
        action_mode="latent",
        kl_coef=0.0,
        base_step="always" if needs_base_model(cfg) else "auto",
        device=device,
    )


class RunLog:
    """The per-update log of the main process: TensorBoard scalars and ``progress.csv``."""

    def __init__(self, run_dir: Path, cfg: PPOConfig, active: bool) -> None:
        self.run_dir, self.active = run_dir, active and cfg.save
        self.writer, self.file, self.rows = None, None, None
        self.inner_file, self.inner_rows = None, None
        if self.active:
            from diffenvs.io import write_json

            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "config.json", json.loads(json.dumps(asdict(cfg), default=str)))
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tb"))

    def write(self, row: dict[str, float]) -> None:
        if not self.active:
            return
        step = int(row["update"])
        if self.writer is not None:
            for key, v in row.items():
                if key != "update":
                    self.writer.add_scalar(f"train/{key}", v, step)
        if self.file is None:
            path = self.run_dir / "progress.csv"
            new = not path.exists()  # a resumed run appends to its own file
            self.file = open(path, "a", newline="")  # noqa: SIM115
            self.rows = csv.DictWriter(self.file, fieldnames=list(row), extrasaction="ignore")
            if new:
                self.rows.writeheader()
        self.rows.writerow(row)
        self.file.flush()

    def write_inner(self, update: int, inner: list[dict[str, float]]) -> None:
        """One ``inner_steps.csv`` row per optimiser step: approx KL, clip fraction, max ratio."""
        if not self.active or not inner:
            return
        if self.inner_file is None:
            path = self.run_dir / "inner_steps.csv"
            new = not path.exists()
            self.inner_file = open(path, "a", newline="")  # noqa: SIM115
            names = ["update", "inner_step", *inner[0]]
            self.inner_rows = csv.DictWriter(self.inner_file, fieldnames=names)
            if new:
                self.inner_rows.writeheader()
        for j, row in enumerate(inner):
            self.inner_rows.writerow({"update": update, "inner_step": j + 1, **row})
        self.inner_file.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()
        if self.inner_file is not None:
            self.inner_file.close()


def train(cfg: PPOConfig) -> dict[str, Any]:
    """Train; returns the evaluation before/after, the per-update history and the run folder.

    The training loop, written out top to bottom (longer than other functions on purpose): set-up,
    the base model's evaluation, then per update a rollout, advantages and the PPO update
    (:mod:`agents.ppo.update`), logging and checkpoints; the evaluation after training last.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    import diffenvs  # noqa: F401  (registers the environments)
    from diffenvs.rewards import make_reward

    cfg = resolve_config(cfg)
    torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=_mixed_precision(cfg))
    main_proc, rank = accelerator.is_main_process, accelerator.process_index
    # The same seed on every process: identical LoRA / critic initialisation everywhere.
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or f"{cfg.preset or 'custom'}_seed{cfg.seed}")

    envs = make_envs(cfg, accelerator.device)
    # The base sampler (schedule, guidance, the frozen UNet) is all the policy needs of the env.
    sampler = envs.unwrapped.sampler
    value = None
    if cfg.advantage == "gae":
        value = ValueNet(sampler.latent_shape[0], sampler.embed_shape[-1])
    model = DiffusionActorCritic(build_policy_unet(sampler.unet, cfg), sampler, value)
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
    # Rewards are standardised with the base model's statistics (eq. 5.2).
    if "reward_mean_std" in state:
        mu, sigma = state["reward_mean_std"]
    elif cfg.reward_norm == "fit" and before is not None:
        mu, sigma = float(before["rewards"].mean()), float(before["rewards"].std()) or 1.0
    else:
        mu, sigma = 0.0, 1.0
    beta0 = state.get("beta", 0.0 if cfg.kl == "none" else cfg.kl_coef)
    controller = (
        AdaptiveKLController(beta0, cfg.kl_target, cfg.kl_horizon)
        if cfg.kl == "adaptive"
        else FixedKLController(beta0)
    )

    tracker = None
    if cfg.prompt_stats == "tracker":
        tracker = PromptStatTracker(cfg.tracker_buffer, cfg.tracker_min_count)
        tracker.history = {p: list(v) for p, v in state.get("prompt_stats", {}).items()}

    log = RunLog(run_dir, cfg, main_proc)
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
        t_roll = time.perf_counter()
        buffer = collect_rollout(policy, envs, train_prompts, cfg, rng, accelerator.autocast)
        t_train = time.perf_counter()
        beta = controller.beta
        # Without the base model's step (no KL term) the KL is unknown: NaN in the log, and the
        # penalty (β = 0 then) gets zeros.
        kl = buffer.kl(cfg.kl_estimator).float() if buffer.has_base else torch.zeros(buffer.shape)
        terminal = (buffer.rewards - mu) / sigma
        advantages, returns = compute_advantages(terminal, kl, beta, buffer, cfg, tracker)
        stats = ppo_update(
            model, optimizer, scheduler, buffer, advantages, returns, cfg, accelerator, gen
        )
        timing = {"rollout_s": t_train - t_roll, "train_s": time.perf_counter() - t_train}

        kl_image = kl.sum(1).mean() if buffer.has_base else torch.tensor(float("nan"))
        local = torch.tensor(
            [buffer.rewards.mean(), kl_image, terminal.mean()], device=accelerator.device
        )
        inner = stats.pop("inner")
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
            **timing,
            **stats,
        }
        controller.update(kl_mean, n_traj)
        history.append(row)
        if main_proc:
            bar.set_postfix(reward=f"{reward_mean:.3f}", kl=f"{kl_mean:.3g}")
        log.write(row)
        log.write_inner(update + 1, inner)
        done = update + 1
        stopped = cfg.stop_after_updates is not None and done >= cfg.stop_after_updates
        if cfg.save and (done % cfg.save_every == 0 or done == cfg.num_updates or stopped):
            snapshot = {"history": history, "beta": controller.beta, "reward_mean_std": [mu, sigma]}
            if tracker is not None:
                snapshot["prompt_stats"] = tracker.state()
            save_checkpoint(run_dir, done, model, optimizer, scheduler, snapshot, accelerator)
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
        summary["train_time_s"] = time.perf_counter() - t0
        summary["updates"] = len(history)
        summary |= collapse_check(summary["before"], summary["after"], warn=main_proc)
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


def main(cfg: PPOConfig) -> dict[str, Any]:
    """Train and print the before/after evaluation: ``diffenvs train ppo`` and
    ``python -m agents.ppo.train``."""
    result = train(cfg)
    if result["accelerator"].is_main_process and "eval" in result:
        print(json.dumps(result["eval"], indent=2))
        print(f"run folder: {result['run_dir']}")
    return result


if __name__ == "__main__":
    import sys

    cli_cfg = tyro.cli(PPOConfig)
    main(replace(cli_cfg, explicit=options_in_argv(sys.argv[1:], PPOConfig)))
