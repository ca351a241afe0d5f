"""Diffusion-policy PPO (DDPO / DPOK, Kristiansen & Vågen 2023 §5.3) on ``DiffusionDenoise-v0``.

Modules in the order the data flows: ``config`` (options, presets, validation) → ``policy`` (the
trainable UNet as a Gaussian policy) → ``rollout`` (episodes, the buffer) → ``losses``
(advantages, KL coefficient) → ``update`` (one PPO update) → ``train`` (the training loop,
``python -m agents.ppo.train``) → ``evaluate`` / ``checkpoint``.

Only the light config is imported here, so listing agents loads no model.
"""

from agents.common.contract import AgentSpec
from agents.ppo.config import PPOConfig

AGENTS = (
    AgentSpec(
        name="ppo",
        config=PPOConfig,
        train="agents.ppo.train:main",
        summary="Diffusion-policy PPO (DDPO/DPOK; LoRA or full) on DiffusionDenoise-v0",
    ),
)

__all__ = ["AGENTS", "PPOConfig"]
