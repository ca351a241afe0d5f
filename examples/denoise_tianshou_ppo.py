"""Tianshou 2 PPO on DiffusionDenoise-v0 in noise mode, on the native batched vector env.

python examples/denoise_tianshou_ppo.py                              # ~2 min on 2 CPU cores
python examples/denoise_tianshou_ppo.py --reward jpeg_compressibility --epochs 4
"""

import json

import tyro

from agents.adapters.tianshou.config import TianshouDenoiseConfig
from agents.adapters.tianshou.denoise import train

cfg = tyro.cli(TianshouDenoiseConfig)
result = train(cfg)
print(json.dumps({k: round(v, 4) for k, v in result["eval"].items()}, indent=2))
print("actor/critic weights:", result["run_dir"])
