"""The direct reward-backprop agents (:mod:`agents.direct`) as leaderboard entrants.

* ``draft``: DRaFT-1 (Clark et al., "Directly Fine-Tuning Diffusion Models on Differentiable
  Rewards"), the recipe of the agent's ``demo`` preset: LoRA rank 4 at lr 1e-2, 8 images per
  update, no KL term. (World v1's cells used the ``target-image`` preset's KL at β = 1e-4, Võ Mạnh
  Quyền's β/α; on the zero-terminal-SNR world v2.x the last step's σ is 0.03, its closed-form KL
  per unit of mean change about 1,000× v1's, and β = 1e-4 held the model still: target-image
  seed 0 gained +0.66 base std with it and +17.5 without.)
* ``refl``: ReFL (Xu et al., "ImageReward"), the same recipe with a random late step's one-step
  x_0 prediction scored.

Both need a differentiable reward (the JPEG task refuses them with the reward's own error) and the
denoising env's pipeline, so they run on the world tasks, not on the reference tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.bench.entrants import Budget, Trained, trained_from_run
from agents.bench.tasks import Task

_RECIPE: dict[str, Any] = {
    "batch_size": 8,
    "finetune": "lora",
    "learning_rate": 1e-2,
    "kl_coef": 0.0,
    "eval_episodes": 16,
    "eval_oracle": False,
    "eval_judge": False,
    "progress": False,
    "save_every": 1_000_000,
}


class _DirectEntrant:
    name = "draft"
    summary = ""
    algorithm = "draft"

    def cannot_run(self, task: Task) -> str | None:
        """Why this entrant does not apply to ``task`` (None: it does)."""
        if task.env_id != "DiffusionDenoise-v0":
            return (
                "it back-propagates through a text-to-image pipeline's decoder, which "
                f"{task.env_id} does not have"
            )
        from diffenvs import make_reward

        if not make_reward(task.reward).supports_gradients:
            return f"it needs a differentiable reward and {task.reward} has no gradients"
        return None

    def config(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Any:
        from agents.direct.config import DirectConfig

        reason = self.cannot_run(task)
        if reason is not None:
            raise ValueError(f"{self.name} cannot run task {task.name!r}: {reason}.")
        per_update = _RECIPE["batch_size"]
        if budget.images < per_update:
            raise ValueError(
                f"A budget of {budget.images} images is less than one {self.name} update "
                f"({per_update} images); raise --images."
            )
        return DirectConfig(
            algorithm=self.algorithm,
            model=task.model,
            prompts=task.prompts,
            eval_prompts=task.eval_prompts,
            reward=task.reward,
            num_steps=task.num_steps,
            guidance_scale=task.guidance_scale,
            eta=task.eta,
            num_updates=budget.images // per_update,
            seed=seed,
            output_dir=str(run_dir.parent),
            run_name=run_dir.name,
            **_RECIPE,
        )

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained:
        from agents.direct.train import train

        cfg = self.config(task, budget, seed, run_dir)
        return trained_from_run(train(cfg), cfg, cfg.batch_size * cfg.grad_accum_steps)


class DRaFTEntrant(_DirectEntrant):
    name = "draft"
    summary = "DRaFT-1: reward gradient through the last sampler step (LoRA)"
    algorithm = "draft"


class ReFLEntrant(_DirectEntrant):
    name = "refl"
    summary = "ReFL: reward gradient of a random late step's x_0 prediction (LoRA)"
    algorithm = "refl"
