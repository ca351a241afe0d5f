"""Direct reward fine-tuning: back-propagate a differentiable reward through the sampler.

ReFL (Xu et al., ImageReward; the method of Võ Mạnh Quyền, "Improving Text-to-Image Models with
Artificial Intelligence Feedback"), DRaFT-K and DRaFT-LV (Clark et al., "Directly Fine-Tuning
Diffusion Models on Differentiable Rewards") and AlignProp (Prabhudesai et al., "Aligning
Text-to-Image Diffusion Models with Reward Backpropagation"), on the differentiable rollout of
``DiffusionDenoise-v0`` (:mod:`diffenvs.differentiable`).

Modules in the order the data flows: ``config`` (options, presets) → ``objectives`` (one
algorithm's loss on one batch) → ``train`` (the loop, ``python -m agents.direct.train``) →
``evaluate``. Only the light config is imported here, so listing agents loads no model.
"""

from agents.common.contract import AgentSpec
from agents.direct.config import AlignPropConfig, DirectConfig, DRaFTConfig, ReFLConfig

AGENTS = (
    AgentSpec(
        name="direct",
        config=DirectConfig,
        train="agents.direct.train:main",
        summary="Direct reward fine-tuning (ReFL, DRaFT-K/LV, AlignProp) through the sampler",
    ),
    AgentSpec(
        name="refl",
        config=ReFLConfig,
        train="agents.direct.train:main",
        summary="ReFL: reward on a random late step's x_0 prediction (LoRA, KL to the base model)",
    ),
    AgentSpec(
        name="draft",
        config=DRaFTConfig,
        train="agents.direct.train:main",
        summary="DRaFT-K / DRaFT-LV: backprop the reward through the last K sampler steps",
    ),
    AgentSpec(
        name="alignprop",
        config=AlignPropConfig,
        train="agents.direct.train:main",
        summary="AlignProp: randomised truncated backprop with gradient checkpointing",
    ),
)

__all__ = ["AGENTS", "AlignPropConfig", "DRaFTConfig", "DirectConfig", "ReFLConfig"]
