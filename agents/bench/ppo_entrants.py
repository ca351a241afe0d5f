"""The PPO agent (:mod:`agents.ppo`) as three leaderboard entrants: DDPO-style, DPOK-style, GAE.

Each is one recipe of the same agent (the CPU recipe of its 10-step presets: 16 images per update,
4 per prompt, one optimiser step per rollout, full fine-tuning at lr 1e-4, the summed log-prob with clip 1e-3), differing only in
what the method names:

* ``ppo``: DDPO (Black et al., "Training Diffusion Models with Reinforcement Learning"): per-prompt
  advantages, no KL term.
* ``ppo-kl``: DPOK (Fan et al., "DPOK: Reinforcement Learning for Fine-tuning Text-to-Image
  Diffusion Models"): the per-step KL to the base model as a penalty and as a loss (with the
  task's β on a KL-regularised task).
* ``ppo-gae``: a value network and GAE over the denoising steps instead of per-prompt baselines.

A task's ``recipe`` (batch size, learning rate, PPO options suited to its scale) overrides the
CPU recipe. The budget's images set the number of updates; PPO's own before/after evaluation is kept small
(16 images: it fits the reward's standardisation), the leaderboard's evaluation is separate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from agents.bench.entrants import Budget, Trained, trained_from_run
from agents.bench.tasks import Task

_RECIPE: dict[str, Any] = {
    "num_envs": 16,
    "samples_per_prompt": 4,
    "grad_accum_steps": 2,
    "finetune": "full",
    "learning_rate": 1e-4,
    "logprob_reduction": "sum",
    "clip_range": 1e-3,
    "pg_min_std": 0.1,
    "eval_episodes": 16,
    "eval_oracle": False,
    "tensorboard": False,
    "progress": False,
    "save_every": 1_000_000,
}


class _PPOEntrant:
    name = "ppo"
    summary = ""
    uses_kl = False
    options: ClassVar[dict[str, Any]] = {}

    def config(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Any:
        from agents.ppo.config import PPOConfig

        recipe = dict(task.recipe)
        if "images_per_update" in recipe:
            recipe["num_envs"] = recipe.pop("images_per_update")
        opts = {**_RECIPE, **recipe, **self.options}
        if self.uses_kl and task.kl_coef is not None:
            # A KL-regularised task: its β weighs the KL penalty and the direct KL loss alike.
            opts |= {"kl": "fixed", "kl_coef": task.kl_coef, "kl_loss_coef": task.kl_coef}
        per_update = opts["num_envs"]
        if budget.images < per_update:
            raise ValueError(
                f"A budget of {budget.images} images is less than one {self.name} update "
                f"({per_update} images); raise --images."
            )
        return PPOConfig(
            env=task.env_id,
            model=task.model,
            prompts=task.prompts,
            eval_prompts=task.eval_prompts,
            reward=task.reward,
            num_steps=task.num_steps,
            guidance_scale=task.guidance_scale,
            eta=task.eta,
            num_updates=budget.images // per_update,
            # One optimiser step per epoch (two accumulated halves), whatever the step count.
            minibatch_size=per_update * task.num_steps // 2,
            seed=seed,
            output_dir=str(run_dir.parent),
            run_name=run_dir.name,
            **opts,
        )

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained:
        from agents.ppo.train import train

        cfg = self.config(task, budget, seed, run_dir)
        return trained_from_run(train(cfg), cfg, cfg.num_envs * cfg.episodes_per_update)


class DDPOEntrant(_PPOEntrant):
    name = "ppo"
    summary = "PPO, DDPO-style: per-prompt advantages, clipped ratio, no KL"
    options: ClassVar[dict[str, Any]] = {"kl": "none", "kl_loss_coef": 0.0}


class DPOKEntrant(_PPOEntrant):
    name = "ppo-kl"
    summary = "PPO, DPOK-style: per-step KL to the base model as penalty and loss"
    uses_kl = True
    options: ClassVar[dict[str, Any]] = {"kl": "fixed", "kl_coef": 1e-5, "kl_loss_coef": 1e-3}


class GAEEntrant(_PPOEntrant):
    name = "ppo-gae"
    summary = "PPO with a value network and GAE over the denoising steps"
    options: ClassVar[dict[str, Any]] = {"kl": "none", "kl_loss_coef": 0.0, "advantage": "gae"}
