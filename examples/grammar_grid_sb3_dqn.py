"""Stable-Baselines3 DQN on GrammarGrid-v0 (one-hot coordinates in, 8 Q-values out).

python examples/grammar_grid_sb3_dqn.py --model renderer --detector exact   # ~2 min on a CPU
python examples/grammar_grid_sb3_dqn.py                                     # world model + oracle

Expected result with ``--model renderer --detector exact`` (measured, seed 0, 60,000 env steps):
the greedy policy reaches the target from every evaluation start, "success_rate": 1.0, in "steps":
5.53 on average (the mean start distance, so shortest paths); the weights go to
runs/sb3_grammar/dqn_multi_semantic_seed0. About 1 min 45 s on a busy 2-core CPU (97 s of
training). The world-model run was not timed.
"""

import json

import tyro

from agents.adapters.sb3.config import SB3GrammarConfig
from agents.adapters.sb3.grammar import train

cfg = tyro.cli(SB3GrammarConfig, default=SB3GrammarConfig(algo="dqn", total_timesteps=60_000))
result = train(cfg)
print(json.dumps({k: round(v, 3) for k, v in result["eval"].items()}, indent=2))
print("policy weights:", result["run_dir"])
