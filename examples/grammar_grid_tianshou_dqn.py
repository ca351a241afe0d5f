"""Tianshou 2 DQN on GrammarGrid-v0 (policy/algorithm split, collectors, off-policy trainer).

python examples/grammar_grid_tianshou_dqn.py --model renderer --detector exact
python examples/grammar_grid_tianshou_dqn.py                                  # world model + oracle

Expected result with ``--model renderer --detector exact`` (measured, seed 0, 6 epochs = 60,000
env steps): the greedy policy reaches the target from every evaluation start, "success_rate":
1.0, in "steps": 5.53 on average (shortest paths, as SB3 DQN); the weights go to
runs/tianshou_grammar/dqn_multi_semantic_seed0. About 5 min on a busy 2-core CPU (287 s of
training). The world-model run was not timed.
"""

import json

import tyro

from agents.adapters.tianshou.config import TianshouGrammarConfig
from agents.adapters.tianshou.grammar import train

result = train(tyro.cli(TianshouGrammarConfig))
print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
print("Q-network weights:", result["run_dir"])
