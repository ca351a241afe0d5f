"""The leaderboard: every diffusion agent of the suite on the same tasks, seeds and budgets.

Modules in the order a cell runs: ``tasks`` (what is optimised, and how it is judged
independently) → ``entrants`` (the agents, behind one small interface that a researcher's own
algorithm implements too) → ``evaluate`` (one held-out evaluation for every agent: reward, KL to
the base model, diversity, the independent judge) → ``schema`` (the JSON of one cell) → ``run``
(the command, ``python -m agents.bench.run``) → ``page`` (the docs page, generated from the JSON).

Only light modules are imported here: listing tasks and entrants loads no model.
"""

from agents.bench.entrants import Budget, CurvePoint, Diverged, Entrant, Trained, entrant_names
from agents.bench.schema import SCHEMA, CellResult
from agents.bench.tasks import TASKS, Task

__all__ = [
    "SCHEMA",
    "TASKS",
    "Budget",
    "CellResult",
    "CurvePoint",
    "Diverged",
    "Entrant",
    "Task",
    "Trained",
    "entrant_names",
]
