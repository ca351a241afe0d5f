"""Agents on ``GrammarGrid-v0``: tabular Q-learning, SARSA and random (:mod:`agents.grid.tabular`).

The SB3 and Tianshou DQNs on the grid are in :mod:`agents.adapters`; the episode runner and the
statistics every grid agent reports are in :mod:`agents.common.grid`.
"""

from agents.common.contract import AgentSpec
from agents.grid.config import TabularConfig

AGENTS = (
    AgentSpec(
        name="tabular",
        config=TabularConfig,
        train="agents.grid.tabular:train",
        summary="Tabular Q-learning, SARSA or random on GrammarGrid-v0 (RLDF, Algorithm 1)",
    ),
)
