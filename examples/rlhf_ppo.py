"""RLHF in miniature: PPO against a reward model learned from comparisons (Kristiansen & Vågen
2023, Exp. 4 and 6).

Runs the ``rlhf`` preset: full fine-tuning of the world's UNet on modifier-free count prompts, a
small KL penalty in the reward and the directly differentiated KL loss that keeps prompt following
(docs/preference.md). First train a reward model, e.g. with the preference example:

python examples/preference_reward_model.py --out runs/pref_example
python examples/rlhf_ppo.py --reward learned:runs/pref_example/reward_model --num-updates 20
python examples/rlhf_ppo.py --reward learned:runs/preference_rollout_1200/blurred-clip-mlp  # ~9 min

The run folder holds before/after grids (with the oracle's prompt-following accuracy in
eval.json), reward and KL curves, logs and checkpoints.

Expected result of the short run (measured, seed 0, after the preference example above with its
defaults; ``--num-updates 20``): "held-out reward 0.024 -> 0.954; prompt following (oracle)
0.602 -> 0.581", i.e. the learned (standardised) reward rises by about 0.9 while prompt
following drops by about 2 points; the run folder is runs/rlhf_example/rlhf_seed0. About 2 min
40 s on a busy 2-core CPU. The 100-update preset run (the ~9 min line) was not timed here.
"""

import sys
from dataclasses import replace

import tyro

from agents.common.cli_args import options_in_argv
from agents.ppo.config import PPOConfig
from agents.ppo.train import main

if __name__ == "__main__":
    cfg = tyro.cli(
        PPOConfig,
        default=PPOConfig(
            preset="rlhf",
            reward="learned:runs/pref_example/reward_model",
            output_dir="runs/rlhf_example",
        ),
    )
    result = main(replace(cfg, explicit=options_in_argv(sys.argv[1:], PPOConfig)))
    before, after = result["eval"]["before"], result["eval"]["after"]
    print(
        f"held-out reward {before['reward_mean']:.3f} -> {after['reward_mean']:.3f}; "
        f"prompt following (oracle) {before['oracle_accuracy']:.3f} -> "
        f"{after['oracle_accuracy']:.3f}"
    )
    print("figures, logs and checkpoints in", result["run_dir"])
