"""Tianshou 2 on PromptAppend-v0: DQN (default) or PPO over the flat observation.

python examples/prompt_append_tianshou_dqn.py                 # world model, ~30 s
python examples/prompt_append_tianshou_dqn.py --algo ppo
"""

import tyro

from agents.adapters.tianshou.config import TianshouPromptConfig
from agents.adapters.tianshou.prompt import train

cfg = tyro.cli(TianshouPromptConfig, default=TianshouPromptConfig(budget=48, save=False))
report = train(cfg)["report"]
for row in report["tasks"]:
    print(f"seed prompt {row['seed_prompt']!r}: similarity {row['seed_similarity']:.3f}")
    print(f"learned    +{row['appended']!r}: similarity {row['similarity']:.3f}")
