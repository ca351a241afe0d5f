"""REINFORCE (ImagePrompt, seed 001) on PromptAppend-v0 with seed 001's caption-derived prompt space.

python examples/prompt_append_reinforce.py                               # world model, ~30 s
python examples/prompt_append_reinforce.py --env.reward-mode per_step    # seed 001's per-step reward
"""

import tyro

from agents.prompt_baselines import PromptEnvArgs
from agents.reinforce import ReinforceConfig, main

default = ReinforceConfig(env=PromptEnvArgs(vocabulary="captions"), budget=48, save=False)
report = main(tyro.cli(ReinforceConfig, default=default))["report"]
for row in report["tasks"]:
    print(f"seed prompt {row['seed_prompt']!r}: similarity {row['seed_similarity']:.3f}")
    print(f"REINFORCE  +{row['appended']!r}: similarity {row['similarity']:.3f}")
    print(f"ground truth {row['ground_truth']!r}: similarity {row['ground_truth_similarity']:.3f}")
