"""Stable-Baselines3 PPO on DiffusionDenoise-v0 in noise mode: the policy chooses each sampler
step's noise to make the world's images more colourful (the colourfulness experiment of
Kristiansen & Vågen 2023).

python examples/denoise_sb3_ppo.py                                   # ~2 min on 2 CPU cores
python examples/denoise_sb3_ppo.py --reward oracle --total-timesteps 4000
"""

import json

import tyro

from agents.adapters.sb3.config import SB3DenoiseConfig
from agents.adapters.sb3.denoise import train

cfg = tyro.cli(SB3DenoiseConfig)
result = train(cfg)
print(json.dumps({k: round(v, 4) for k, v in result["eval"].items()}, indent=2))
print("policy weights and progress.csv:", result["run_dir"])
