"""The presets of :mod:`agents.ppo_diffusion`: each is the configuration of a run measured on
the embedded world (docs/agents/ppo.md has the results and the commands)."""

from __future__ import annotations

from typing import Any

# The CPU recipe of the 10-step presets (~9 min for 100 updates on one thread): 16 images x 10
# DDIM steps per update, one optimiser step per rollout, full fine-tuning with the KL loss.
_TEN_STEP_CPU: dict[str, Any] = {
    "num_steps": 10,
    "num_envs": 16,
    "samples_per_prompt": 4,
    "num_updates": 100,
    "minibatch_size": 80,
    "grad_accum_steps": 2,
    "finetune": "full",
    "learning_rate": 1e-4,
    "kl_coef": 1e-5,
    "kl_loss_coef": 1e-3,
    "eval_episodes": 64,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Seed 004 Exp. 1 on one CPU thread (~6 min): every sample of one prompt moves onto a fixed
    # target image (the default world render: a yellow star on a night sky) that the base model
    # never draws for this prompt. The KL loss keeps the images drawable (plain PPO reaches the
    # reward with textures); dropping the two low-noise steps from the policy gradient cuts the
    # drift after convergence (docs/agents/ppo.md has the ablation).
    "target-image": {
        "reward": "target_rmse",
        "prompts": "prompt:one large yellow star in the middle of an ocean",
        "eval_prompts": "prompt:one large yellow star in the middle of an ocean",
        "num_steps": 4,
        "num_envs": 16,
        "samples_per_prompt": 4,
        "num_updates": 150,
        "minibatch_size": 32,
        "grad_accum_steps": 2,
        "finetune": "full",
        "learning_rate": 1e-4,
        "kl_loss_coef": 1e-3,
        "pg_min_std": 0.1,
        "group_std": False,
        "eval_episodes": 64,
    },
    # Seed 004 Exp. 2 with the fix its §7.1 asks for, an adaptive (target-KL) coefficient, plus
    # the KL loss. The best measured CPU run: 1.18x colourfulness at -7.1 points of prompt
    # following, short of the 1.5x bar (docs/agents/ppo.md says why). In 100 updates the
    # controller barely moves β; --kl-horizon 200 lets it act.
    "colourfulness-kl": {
        **_TEN_STEP_CPU,
        "reward": "colourfulness",
        "kl": "adaptive",
        "kl_target": 20000.0,
    },
    # Prompt alignment (DDPO's analogue): the oracle's reading of the prompt's count is the
    # reward. Measured: count accuracy 62.5 -> 60.9 % (the bar is +15 points), prompt following
    # kept (+2.6 points).
    "prompt-alignment": {
        **_TEN_STEP_CPU,
        "reward": "oracle:prompt:count",
        "prompts": "counts",
        "eval_prompts": "counts:heldout",
        "kl": "fixed",
        "pg_min_std": 0.1,
        "group_std": False,
    },
    # RLHF against a learned reward (pass --reward learned:PATH): the recipe of docs/preference.md
    # that met the bars on the world on average over seven PPO seeds, narrowly. The direct KL
    # loss, not the reward's KL penalty, is what keeps prompt following.
    "rlhf": {
        **_TEN_STEP_CPU,
        "prompts": "counts",
        "eval_prompts": "counts:heldout",
        "kl": "fixed",
    },
    # The demo: a few minutes on 2 CPU cores. Full fine-tuning of the small world UNet learns
    # fastest in this budget; one optimiser step per rollout keeps PPO's ratio meaningful.
    "quick": {
        "reward": "target_rmse",
        "num_steps": 4,
        "num_envs": 8,
        "samples_per_prompt": 4,
        "num_updates": 40,
        "minibatch_size": 16,
        "grad_accum_steps": 2,
        "finetune": "full",
        "learning_rate": 1e-4,
        "eval_episodes": 32,
        "save_every": 10,
    },
}
