"""Diffusion-policy PPO on the world's UNet (Kristiansen & Vågen 2023 §5.3, Exp. 1 in miniature):
fine-tune the sampler so its images move towards a fixed world render (reward ``target_rmse``,
Algorithm 1).

Runs the ``quick`` preset (a few minutes on 2 CPU cores) and writes, to the run folder, the
before/after sample grids, the reward histograms, the reward/KL curves, progress.csv, TensorBoard
logs and checkpoints.

python examples/ppo_target_image.py                        # the quick preset
python examples/ppo_target_image.py --num-updates 10       # any option of PPOConfig
python examples/ppo_target_image.py --preset target-image  # Kristiansen & Vågen Exp. 1 (~6 min)
"""

import sys
from dataclasses import replace

import tyro

from agents.common.cli_args import options_in_argv
from agents.ppo.config import PPOConfig
from agents.ppo.train import main

if __name__ == "__main__":
    cfg = tyro.cli(PPOConfig, default=PPOConfig(preset="quick"))
    result = main(replace(cfg, explicit=options_in_argv(sys.argv[1:], PPOConfig)))
    print("figures, logs and checkpoints in", result["run_dir"])
