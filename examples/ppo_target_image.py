"""Diffusion-policy PPO on the world's UNet (seed 004 §5.3, Exp. 1 in miniature): fine-tune the
sampler so its images move towards a fixed world render (reward ``target_rmse``, Algorithm 1).

Runs the ``quick`` preset (a few minutes on 2 CPU cores) and writes, to the run folder, the
before/after sample grids, the reward histograms, the reward/KL curves, progress.csv, TensorBoard
logs and checkpoints.

python examples/ppo_target_image.py                        # the quick preset
python examples/ppo_target_image.py --num-updates 10       # any option of PPODiffusionConfig
python examples/ppo_target_image.py --preset target-image  # seed 004 Exp. 1 (~6 min, 1 thread)
"""

import tyro

from agents.ppo_diffusion import PPODiffusionConfig, main

if __name__ == "__main__":
    cfg = tyro.cli(PPODiffusionConfig, default=PPODiffusionConfig(preset="quick"))
    result = main(cfg)
    print("figures, logs and checkpoints in", result["run_dir"])
