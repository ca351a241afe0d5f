"""Stable-Baselines3 on the diffenvs environments.

* :mod:`agents.adapters.sb3.denoise` — an SB3 ``VecEnv`` over the batched ``DiffusionDenoise-v0``
  and a latent CNN features extractor; PPO/A2C in noise mode.
* :mod:`agents.adapters.sb3.grammar` — DQN/PPO/A2C on ``GrammarGrid-v0``.
* :mod:`agents.adapters.sb3.prompt` — MaskablePPO/PPO/DQN on ``PromptAppend-v0``.

Configs live in :mod:`agents.adapters.sb3.config`.
"""

from agents.adapters.sb3.config import SB3DenoiseConfig, SB3GrammarConfig, SB3PromptConfig
from agents.common.contract import AgentSpec

AGENTS = (
    AgentSpec(
        name="sb3-denoise",
        config=SB3DenoiseConfig,
        train="agents.adapters.sb3.denoise:train",
        summary="SB3 PPO or A2C in noise mode on DiffusionDenoise-v0",
    ),
    AgentSpec(
        name="sb3-grammar",
        config=SB3GrammarConfig,
        train="agents.adapters.sb3.grammar:train",
        summary="SB3 DQN, PPO or A2C on GrammarGrid-v0",
    ),
    AgentSpec(
        name="sb3-prompt",
        config=SB3PromptConfig,
        train="agents.adapters.sb3.prompt:train",
        summary="SB3 MaskablePPO, PPO or DQN on PromptAppend-v0",
    ),
)
