#!/usr/bin/env bash
# Retrain every model of the embedded world from scratch, then measure it.
# Seeded and deterministic on CPU; writes into diffenvs/world/weights/ and docs/.
# The shipped weights were made with exactly these commands (oracle and VAE ran side by side with
# one thread each, then the UNet with two threads while the CLIP trained with one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m diffenvs.world.training.train_oracle --steps 2000
$PY -m diffenvs.world.training.train_vae --steps 1200
$PY -m diffenvs.world.training.train_clip --steps 1500
$PY -m diffenvs.world.training.train_unet --steps 8000 --threads 2
.venv/bin/diffenvs world evaluate
