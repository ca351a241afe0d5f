#!/usr/bin/env bash
# Retrain every model of the embedded world from scratch, then measure it.
# Seeded and deterministic on CPU; writes into diffenvs/world/weights/ and docs/.
# These are exactly the commands that made the shipped weights, in this order (times on 2 shared
# CPU cores are in docs/world.md). The oracle had two more legs and CLIP and UNet a second one,
# each continuing from the previous leg's saved weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
W=diffenvs/world/weights
$PY -m diffenvs.world.training.train_oracle --steps 2000
$PY -m diffenvs.world.training.train_oracle --init-from $W/oracle.safetensors --steps 2000 --lr 1e-3
$PY -m diffenvs.world.training.train_oracle --init-from $W/oracle.safetensors --steps 2000 --lr 5e-4
$PY -m diffenvs.world.training.train_vae --steps 1500
$PY -m diffenvs.world.training.train_clip --steps 1500
$PY -m diffenvs.world.training.train_clip --init-from $W/clip --steps 600 --lr 5e-4 \
    --focus shape position pattern
$PY -m diffenvs.world.training.train_unet --steps 3500
# The decoder fine-tune keeps the encoder (and so the UNet's latents) unchanged.
$PY -m diffenvs.world.training.finetune_decoder --steps 1500
$PY -m diffenvs.world.training.train_unet --init-from $W/t2i --steps 7000 --lr 5e-4 --warmup 100
.venv/bin/diffenvs world evaluate
