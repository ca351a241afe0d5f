"""The GRPO agent (:mod:`agents.grpo`) as a leaderboard entrant.

The recipe of its ``target-image`` preset (Liu et al., "Flow-GRPO"; Shao et al., "DeepSeekMath"):
groups of 8 images per prompt, advantages centred within the group (no std scaling, as Liu et al.,
"Understanding R1-Zero-Like Training", Dr. GRPO, argue), the first half of the steps stochastic and
the rest deterministic (DanceGRPO's window, Xue et al.), full fine-tuning at lr 1e-4 with a
10-update warm-up, the summed log-prob with clip 1e-3. On a KL-regularised task the task's β is the
per-step KL coefficient and every step is stochastic (the KL is the whole path's). A task's
``recipe`` overrides the batch, group and learning rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.bench.entrants import Budget, Trained, trained_from_run
from agents.bench.tasks import Task

_RECIPE: dict[str, Any] = {
    "num_envs": 16,
    "group_size": 8,
    "finetune": "full",
    "learning_rate": 1e-4,
    "warmup_steps": 10,
    "adv_std": "none",
    "logprob_reduction": "sum",
    "clip_range": 1e-3,
    "eval_episodes": 16,
    "eval_oracle": False,
    "tensorboard": False,
    "progress": False,
    "save_every": 1_000_000,
}
# Recipe keys of a task that mean the same for GRPO (the rest are PPO's own).
_SHARED = (
    "learning_rate",
    "num_epochs",
    "clip_range",
    "logprob_reduction",
    "adv_clip",
    "reward_norm",
)


class GRPOEntrant:
    name = "grpo"
    summary = "GRPO / Flow-GRPO: groups of 8 per prompt, group-centred advantages, SDE window"

    def config(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Any:
        from agents.grpo.config import GRPOConfig

        opts = dict(_RECIPE)
        opts |= {k: v for k, v in task.recipe.items() if k in _SHARED}
        if "images_per_update" in task.recipe:
            opts["num_envs"] = task.recipe["images_per_update"]
        if "samples_per_prompt" in task.recipe:
            opts["group_size"] = task.recipe["samples_per_prompt"]
        if task.kl_coef is not None:
            opts |= {"kl_coef": task.kl_coef, "adv_std": "none", "warmup_steps": 0}
        else:
            opts |= {"sde_window": max(1, task.num_steps // 2), "window_start": 0}
        if budget.images < opts["num_envs"]:
            raise ValueError(
                f"A budget of {budget.images} images is less than one GRPO update "
                f"({opts['num_envs']} images); raise --images."
            )
        return GRPOConfig(
            env=task.env_id,
            model=task.model,
            prompts=task.prompts,
            eval_prompts=task.eval_prompts,
            reward=task.reward,
            num_steps=task.num_steps,
            guidance_scale=task.guidance_scale,
            eta=task.eta,
            num_updates=budget.images // opts["num_envs"],
            seed=seed,
            output_dir=str(run_dir.parent),
            run_name=run_dir.name,
            **opts,
        )

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained:
        from agents.grpo.train import train

        cfg = self.config(task, budget, seed, run_dir)
        return trained_from_run(train(cfg), cfg, cfg.num_envs * cfg.episodes_per_update)
