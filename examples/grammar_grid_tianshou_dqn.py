"""Tianshou 2 DQN on GrammarGrid-v0 (policy/algorithm split, collectors, off-policy trainer).

python examples/grammar_grid_tianshou_dqn.py --model renderer --detector exact
python examples/grammar_grid_tianshou_dqn.py                                  # world model + oracle
"""

import json

import tyro

from agents.adapters.tianshou.config import TianshouGrammarConfig
from agents.adapters.tianshou.grammar import train

result = train(tyro.cli(TianshouGrammarConfig))
print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
print("Q-network weights:", result["run_dir"])
