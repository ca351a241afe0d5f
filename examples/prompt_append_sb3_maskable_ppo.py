"""SB3 on PromptAppend-v0: sb3-contrib MaskablePPO (reads env.action_masks()), or PPO / DQN.

python examples/prompt_append_sb3_maskable_ppo.py                 # world model, ~30 s
python examples/prompt_append_sb3_maskable_ppo.py --algo dqn
"""

import tyro

from agents.adapters.sb3.config import SB3PromptConfig
from agents.adapters.sb3.prompt import train

report = train(tyro.cli(SB3PromptConfig, default=SB3PromptConfig(budget=48, save=False)))["report"]
for row in report["tasks"]:
    print(f"seed prompt {row['seed_prompt']!r}: similarity {row['seed_similarity']:.3f}")
    print(f"learned    +{row['appended']!r}: similarity {row['similarity']:.3f}")
