"""Tianshou 2 on the diffenvs environments.

* :mod:`agents.adapters.tianshou.denoise` — a Tianshou vector env over the batched
  ``DiffusionDenoise-v0``, a Gaussian actor and a critic; PPO in noise mode.
* :mod:`agents.adapters.tianshou.grammar` — DQN on ``GrammarGrid-v0``.
* :mod:`agents.adapters.tianshou.prompt` — DQN or PPO on ``PromptAppend-v0``.

Configs live in :mod:`agents.adapters.tianshou.config`.
"""

from agents.adapters.tianshou.config import (
    TianshouDenoiseConfig,
    TianshouGrammarConfig,
    TianshouPromptConfig,
)
from agents.common.contract import AgentSpec

AGENTS = (
    AgentSpec(
        name="tianshou-denoise",
        config=TianshouDenoiseConfig,
        train="agents.adapters.tianshou.denoise:train",
        summary="Tianshou 2 PPO in noise mode on DiffusionDenoise-v0",
    ),
    AgentSpec(
        name="tianshou-grammar",
        config=TianshouGrammarConfig,
        train="agents.adapters.tianshou.grammar:train",
        summary="Tianshou 2 DQN on GrammarGrid-v0",
    ),
    AgentSpec(
        name="tianshou-prompt",
        config=TianshouPromptConfig,
        train="agents.adapters.tianshou.prompt:train",
        summary="Tianshou 2 DQN or PPO on PromptAppend-v0",
    ),
)
