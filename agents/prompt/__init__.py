"""Agents that append words to a prompt on ``PromptAppend-v0``.

* :mod:`agents.prompt.sql` — Soft Q-Learning (RLPrompt, as Gudibande & Zhu apply it to images).
* :mod:`agents.prompt.reinforce` — REINFORCE (Naik, Bharadwaj & Bharadwaj, ImagePrompt).
* :mod:`agents.prompt.baselines` — random search and the CLIP-ranked greedy prompt.

Configs live in :mod:`agents.prompt.config`; the env settings they share, the greedy decoding and
the final report in :mod:`agents.common.prompt_env`.
"""

from agents.common.contract import AgentSpec
from agents.prompt.config import BaselineConfig, ReinforceConfig, SQLConfig

AGENTS = (
    AgentSpec(
        name="sql",
        config=SQLConfig,
        train="agents.prompt.sql:train",
        summary="Soft Q-Learning (RLPrompt) on PromptAppend-v0",
    ),
    AgentSpec(
        name="reinforce",
        config=ReinforceConfig,
        train="agents.prompt.reinforce:train",
        summary="REINFORCE (ImagePrompt) on PromptAppend-v0",
    ),
    AgentSpec(
        name="prompt-baselines",
        config=BaselineConfig,
        train="agents.prompt.baselines:train",
        summary="Random search or the CLIP-ranked greedy prompt on PromptAppend-v0 (no learning)",
    ),
)
