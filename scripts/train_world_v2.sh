#!/usr/bin/env bash
# World v2, trained in legs on 2 CPU cores (see docs/world.md, "World v2: legs").
# Each leg is one command; a later leg continues from the previous leg's committed weights with
# --init-from. Finished parts are staged in diffenvs/world/weights/v2/ until the whole v2 world
# (with its new UNet) replaces the shipped v1 world; the judge reads images, so it ships at once.
# These are exactly the commands that made the committed weights, in order. Run each leg with
# OMP_NUM_THREADS=1 (two jobs at once on 2 cores: one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
W=diffenvs/world/weights
export OMP_NUM_THREADS=1

# Leg 1 — VAE: continue the v1 VAE (same 0.25 M-parameter architecture) with the oracle-feature
# perceptual term; a new encoder means the UNet must be retrained on its latents (leg 4).
$PY -m diffenvs.world.training.train_vae --init-from $W/t2i/vae --steps 10000 --lr 5e-4 \
    --warmup 200 --perceptual-weight 1.0 --out runs/world_v2/vae --save-every 1000
mkdir -p $W/v2 && rm -rf $W/v2/vae && cp -r runs/world_v2/vae $W/v2/vae

# Leg 1b — VAE, a second leg from leg 1's weights (shape and pattern were 95.6 / 95.5 %).
$PY -m diffenvs.world.training.train_vae --init-from $W/v2/vae --steps 5500 --lr 3e-4 \
    --warmup 100 --perceptual-weight 1.0 --out runs/world_v2/vae_leg2 --save-every 1000
rm -rf $W/v2/vae && cp -r runs/world_v2/vae_leg2 $W/v2/vae

# Leg 2 — the independent judge (different architecture, data seed 100; never in a loss).
$PY -m diffenvs.world.training.train_judge --steps 3500 --out runs/world_v2/judge.safetensors
cp runs/world_v2/judge.safetensors $W/judge.safetensors

# Next legs (not yet run):
# 3. CLIP with the shared auxiliary attribute heads (position and shape zero-shot):
#    $PY -m diffenvs.world.training.train_clip --init-from $W/clip --steps 1200 --lr 5e-4 \
#        --aux-weight 1.0 --focus shape position pattern --out runs/world_v2/clip
# 4. UNet + text encoder from scratch on the v2 VAE's latents, in legs of ~150 minutes:
#    $PY -m diffenvs.world.training.train_unet --vae $W/v2/vae --arch v2 --steps 9000 \
#        --out runs/world_v2/t2i
#    then legs of --init-from runs/world_v2/t2i --lr 5e-4 --warmup 100 (each restarts its own
#    cosine schedule from the saved EMA weights, as v1's second leg did).
# Then: diffenvs world evaluate --pipeline runs/world_v2/t2i --compare-speed-with world
