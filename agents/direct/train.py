"""Direct reward fine-tuning (ReFL, DRaFT-K, DRaFT-LV, AlignProp) on ``DiffusionDenoise-v0``.

The policy is a trainable copy of the env's UNet (LoRA rank 4 on the attention projections by
default, built exactly as the PPO agent builds it). Each optimiser step samples images with the
env's own sampler as differentiable torch code (:class:`diffenvs.differentiable.DifferentiableSampler`,
built from ``env.unwrapped.sampler``), scores them with a differentiable reward and
back-propagates ``-α · r̃ + β · KL`` (:mod:`agents.direct.objectives`) into the UNet. Run folder,
logging (``progress.csv``, optional TensorBoard), safetensors checkpoints with atomic writes and
``--resume`` follow the PPO agent (its checkpoint module is reused)::

    diffenvs train refl --preset ai-feedback --reward learned:runs/direct/rm
    diffenvs train draft --preset target-image
    diffenvs train alignprop --reward clip_score --num-updates 30
    python -m agents.direct.train --help

See ``docs/agents/direct.md``.
"""

from __future__ import annotations

import csv
import json
import resource
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from torch import nn

from agents.common.cli_args import options_in_argv
from agents.direct.config import DirectConfig, resolve_config
from agents.direct.evaluate import evaluate, load_readers, summary
from agents.direct.objectives import batch_loss


class DirectPolicy(nn.Module):
    """The trainable UNet (what checkpoints hold: its trainable parameters, prefixed ``unet.``)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA's allocated peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Log:
    """``config.json`` once, then one ``progress.csv`` row (and TensorBoard scalars) per update."""

    def __init__(self, run_dir: Path, cfg: DirectConfig) -> None:
        self.run_dir, self.active = run_dir, cfg.save
        self.file, self.rows, self.writer = None, None, None
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
        if self.writer is not None:
            for key, v in row.items():
                if key != "update":
                    self.writer.add_scalar(f"train/{key}", v, int(row["update"]))
        if self.file is None:
            path = self.run_dir / "progress.csv"
            new = not path.exists()  # a resumed run appends to its own file
            self.file = open(path, "a", newline="")  # noqa: SIM115
            self.rows = csv.DictWriter(self.file, fieldnames=list(row), extrasaction="ignore")
            if new:
                self.rows.writeheader()
        self.rows.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()


def _setup(cfg: DirectConfig, device: Any) -> tuple[Any, Any, Any]:
    """(env, differentiable sampler, reward): the env is made on the shared pipeline, and the
    differentiable sampler reads only its public sampler and that pipeline."""
    import gymnasium as gym

    import diffenvs  # noqa: F401  (registers the environments)
    from agents.ppo.rollout import make_prompt_source
    from diffenvs.differentiable import DifferentiableSampler
    from diffenvs.models.cache import shared_pipeline
    from diffenvs.rewards import make_reward

    pipe = shared_pipeline(cfg.model, device) if isinstance(cfg.model, str) else cfg.model
    reward = make_reward(cfg.reward, device=device)
    if not reward.supports_gradients:
        # Raises NotDifferentiableError, which says what to use instead.
        reward.differentiable_score(torch.zeros(1, 3, 8, 8), [""])
    env = gym.make(
        "DiffusionDenoise-v0",
        model=pipe,
        prompts=make_prompt_source(cfg.prompts),
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        reward="zero",
        device=device,
    )
    return env, DifferentiableSampler(env.unwrapped.sampler, pipe), reward


def train(cfg: DirectConfig) -> dict[str, Any]:
    """Train; returns the evaluation before/after, the per-update history and the run folder.

    The training loop, written out top to bottom: set-up, the base model's evaluation (which
    fits the reward standardisation), then per update ``grad_accum_steps`` micro-batches of
    :func:`~agents.direct.objectives.batch_loss`, one optimiser step, logging and checkpoints;
    the evaluation after training last.
    """
    from accelerate import Accelerator

    from agents.ppo.checkpoint import load_checkpoint, save_checkpoint
    from agents.ppo.policy import build_policy_unet, trainable_state
    from agents.ppo.rollout import make_prompt_source

    cfg = resolve_config(cfg)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    accelerator = Accelerator(cpu=cfg.cpu)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_dir = Path(cfg.output_dir) / (
        cfg.run_name or f"{cfg.algorithm}_{cfg.preset or 'custom'}_seed{cfg.seed}"
    )
    env, diff, reward = _setup(cfg, device)
    base_unet = diff.sampler.unet
    policy = DirectPolicy(build_policy_unet(base_unet, cfg)).to(device)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    initial = trainable_state(policy)

    train_prompts = make_prompt_source(cfg.prompts)
    eval_source = make_prompt_source(cfg.eval_prompts)
    eval_rng = np.random.default_rng(cfg.eval_seed)
    eval_prompts = [eval_source.sample(eval_rng) for _ in range(cfg.eval_episodes)]
    readers = load_readers(cfg.eval_oracle, cfg.eval_judge and cfg.eval_oracle, device)

    start, history, state = 0, [], {}
    if cfg.resume:
        state = load_checkpoint(run_dir, policy, optimizer, scheduler, accelerator)
        start, history = state["update"], state["history"]
    before = None
    if cfg.eval_episodes:
        before = evaluate(diff, base_unet, reward, eval_prompts, cfg.eval_seed, readers)
    if "reward_mean_std" in state:
        mu, sigma = state["reward_mean_std"]
    elif cfg.reward_norm == "fit" and before is not None:
        mu = float(before["objective"].mean())
        sigma = float(before["objective"].std()) or 1.0
    else:
        mu, sigma = 0.0, 1.0

    log = _Log(run_dir, cfg)
    from tqdm.auto import tqdm

    bar = tqdm(
        range(start, cfg.num_updates),
        initial=start,
        total=cfg.num_updates,
        disable=not cfg.progress,
        desc=cfg.algorithm,
    )
    stopped, t0 = False, time.perf_counter()
    elapsed0 = history[-1]["time_s"] if history else 0.0
    for update in bar:
        # Every draw of an update comes from (seed, update): a resumed run repeats an
        # uninterrupted one.
        rng = np.random.default_rng([cfg.seed, update])
        t_up = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        rows = []
        for _ in range(cfg.grad_accum_steps):
            prompts = [train_prompts.sample(rng) for _ in range(cfg.batch_size)]
            seeds = [int(s) for s in rng.integers(0, 2**31 - 1, cfg.batch_size)]
            loss, stats = batch_loss(
                cfg, diff, policy.unet, base_unet, reward, prompts, seeds, rng, (mu, sigma)
            )
            (loss / cfg.grad_accum_steps).backward()
            rows.append(stats | {"loss": float(loss.detach())})
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        row = {"update": update + 1}
        row |= {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        row |= {
            "grad_norm": grad_norm,
            "update_s": time.perf_counter() - t_up,
            "time_s": elapsed0 + time.perf_counter() - t0,
            "peak_mem_mb": peak_memory_mb(device),
        }
        history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3g}")
        log.write(row)
        done = update + 1
        stopped = cfg.stop_after_updates is not None and done >= cfg.stop_after_updates
        if cfg.save and (done % cfg.save_every == 0 or done == cfg.num_updates or stopped):
            snapshot = {"history": history, "reward_mean_std": [mu, sigma]}
            save_checkpoint(run_dir, done, policy, optimizer, scheduler, snapshot, accelerator)
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
        "reward_mean_std": (mu, sigma),
    }
    if before is not None and not result["stopped"]:
        after = evaluate(diff, policy.unet, reward, eval_prompts, cfg.eval_seed, readers)
        result["eval"] = {
            "before": summary(before),
            "after": summary(after),
            "train_time_s": time.perf_counter() - t0,
            "updates": len(history),
            "peak_mem_mb": peak_memory_mb(device),
        }
        result["eval_results"] = {"before": before, "after": after, "prompts": eval_prompts}
        if cfg.save:
            _save_report(run_dir, result, cfg)
    if cfg.save and history:
        _save_curves(history, run_dir / "curves.png")
    env.close()
    return result


ALGORITHM_NAMES = {
    "refl": "ReFL",
    "draft": "DRaFT",
    "draft-lv": "DRaFT-LV",
    "alignprop": "AlignProp",
}


def _save_report(run_dir: Path, result: dict[str, Any], cfg: DirectConfig) -> None:
    from agents.ppo.evaluate import save_before_after
    from diffenvs.io import write_json

    write_json(run_dir / "eval.json", result["eval"])
    before, after = result["eval_results"]["before"], result["eval_results"]["after"]
    np.savez(run_dir / "eval_before.npz", **before)
    np.savez(run_dir / "eval_after.npz", **after)
    n = min(cfg.grid_images, len(before["images"]))
    if n:
        save_before_after(
            before["images"][:n],
            after["images"][:n],
            run_dir / "before_after.png",
            agent=ALGORITHM_NAMES[cfg.algorithm],
        )


def _save_curves(history: list[dict[str, float]], path: Path) -> None:
    """Training reward (of the scored images) and KL per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [h["update"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, key, title in zip(
        axes,
        ("reward_mean", "kl"),
        ("reward of the scored images", "KL to base (per image)"),
        strict=True,
    ):
        ax.plot(x, [h[key] for h in history])
        ax.set_title(title)
        ax.set_xlabel("update")
    fig.tight_layout()
    import io

    from diffenvs.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(cfg: DirectConfig) -> dict[str, Any]:
    """Train and print the before/after evaluation: ``diffenvs train refl|draft|alignprop|direct``
    and ``python -m agents.direct.train``."""
    result = train(cfg)
    if "eval" in result:
        print(json.dumps(result["eval"], indent=2))
    print(f"run folder: {result['run_dir']}")
    return result


if __name__ == "__main__":
    import sys

    cli_cfg = tyro.cli(DirectConfig)
    main(replace(cli_cfg, explicit=options_in_argv(sys.argv[1:], DirectConfig)))
