"""Tianshou 2 PPO on DiffusionDenoise-v0 in noise mode, on the native batched vector env.

python examples/denoise_tianshou_ppo.py                              # ~3 min on 2 CPU cores
python examples/denoise_tianshou_ppo.py --reward jpeg_compressibility --epochs 4

Expected result with the defaults (measured, seed 0, every world prompt, 5 epochs = 4,000 env
steps): the mean colourfulness of 16 fixed-seed evaluation episodes goes from 1.218 before to
1.281 after (std 0.40 after), a change within the noise of 16 episodes: this run shows the wiring,
not learning (examples/denoise_sb3_ppo.py is the one-prompt setting that learns). Weights go to
runs/tianshou_denoise/ppo_colourfulness_seed0. About 3 min 10 s on a busy 2-core CPU (115 s of
training).
"""

import json

import tyro

from agents.adapters.tianshou.config import TianshouDenoiseConfig
from agents.adapters.tianshou.denoise import train

cfg = tyro.cli(TianshouDenoiseConfig)
result = train(cfg)
print(json.dumps({k: round(v, 4) for k, v in result["eval"].items()}, indent=2))
print("actor/critic weights:", result["run_dir"])
