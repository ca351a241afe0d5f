"""GRPO (group-relative policy optimisation) of a diffusion or flow model on ``DiffusionDenoise-v0``.

Shao et al., "DeepSeekMath" (GRPO); Liu et al., "Flow-GRPO: Training Flow Matching Models via
Online RL"; Xue et al., "DanceGRPO" (the window of SDE steps). Modules in the order the data flows:
``config`` (options, presets, validation) → ``sampling`` (the deterministic step outside the SDE
window, the guidance-free sampler) → ``rollout`` (groups of images per prompt) → ``update`` (group
advantages, one GRPO update) → ``train`` (the training loop, ``python -m agents.grpo.train``). The
policy, checkpoints and evaluation are the PPO agent's (``agents.ppo``).

Only the light config is imported here, so listing agents loads no model.
"""

from agents.common.contract import AgentSpec
from agents.grpo.config import GRPOConfig

AGENTS = (
    AgentSpec(
        name="grpo",
        config=GRPOConfig,
        train="agents.grpo.train:main",
        summary="GRPO / Flow-GRPO (groups per prompt, SDE window; LoRA or full) on DiffusionDenoise-v0",
    ),
)

__all__ = ["AGENTS", "GRPOConfig"]
