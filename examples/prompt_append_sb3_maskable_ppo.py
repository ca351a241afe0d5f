"""SB3 on PromptAppend-v0: sb3-contrib MaskablePPO (reads env.action_masks()), or PPO / DQN.

python examples/prompt_append_sb3_maskable_ppo.py                 # world model, ~30 s
python examples/prompt_append_sb3_maskable_ppo.py --algo dqn

Expected result with the defaults (MaskablePPO, measured, seed 0, 48 reward evaluations): on task
0 the similarity to the target image rises from 0.615 for the seed prompt to 0.855 with the
learned words ("outlined, small"). About 37 s on a busy 2-core CPU.
"""

import tyro

from agents.adapters.sb3.config import SB3PromptConfig
from agents.adapters.sb3.prompt import train

report = train(tyro.cli(SB3PromptConfig, default=SB3PromptConfig(budget=48, save=False)))["report"]
for row in report["tasks"]:
    print(f"seed prompt {row['seed_prompt']!r}: similarity {row['seed_similarity']:.3f}")
    print(f"learned    +{row['appended']!r}: similarity {row['similarity']:.3f}")
