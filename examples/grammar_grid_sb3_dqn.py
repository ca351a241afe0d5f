"""Stable-Baselines3 DQN on GrammarGrid-v0 (one-hot coordinates in, 8 Q-values out).

python examples/grammar_grid_sb3_dqn.py --model renderer --detector exact   # ~2 min on a CPU
python examples/grammar_grid_sb3_dqn.py                                     # world model + oracle
"""

import json

import tyro

from agents.adapters.sb3.config import SB3GrammarConfig
from agents.adapters.sb3.grammar import train

cfg = tyro.cli(SB3GrammarConfig, default=SB3GrammarConfig(algo="dqn", total_timesteps=60_000))
result = train(cfg)
print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
print("policy weights:", result["run_dir"])
