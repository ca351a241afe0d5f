"""Tianshou 2 on PromptAppend-v0: DQN (default) or PPO over the flat observation.

python examples/prompt_append_tianshou_dqn.py                 # world model, ~30 s
python examples/prompt_append_tianshou_dqn.py --algo ppo

Expected result with the defaults (DQN, measured, seed 0, 48 reward evaluations): with this
budget DQN does not beat the seed prompt. On task 0 the appended words ("pixelated, blurred") score a similarity of
0.435 to the target image, below the seed prompt's 0.615; the example shows the wiring, not
learning. About 34 s on a busy 2-core CPU.
"""

import tyro

from agents.adapters.tianshou.config import TianshouPromptConfig
from agents.adapters.tianshou.prompt import train

cfg = tyro.cli(TianshouPromptConfig, default=TianshouPromptConfig(budget=48, save=False))
report = train(cfg)["report"]
for row in report["tasks"]:
    print(f"seed prompt {row['seed_prompt']!r}: similarity {row['seed_similarity']:.3f}")
    print(f"learned    +{row['appended']!r}: similarity {row['similarity']:.3f}")
