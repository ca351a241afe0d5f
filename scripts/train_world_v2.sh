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

# Leg UNet 1 — UNet + text encoder from scratch on the v2 VAE's latents (95 min on a busy machine).
$PY -m diffenvs.world.training.train_unet --vae $W/v2/vae --arch v2 --steps 5500 \
    --out runs/world_v2/t2i --save-every 500
diffenvs world evaluate --pipeline runs/world_v2/t2i --skip oracle judge vae clip \
    --steps 20 10 --compare-speed-with world --out-dir out/world_v2_t2i_leg1

# Leg UNet 2 — from leg 1's EMA weights (each leg restarts its own cosine schedule).
$PY -m diffenvs.world.training.train_unet --vae $W/v2/vae --init-from runs/world_v2/t2i \
    --lr 5e-4 --warmup 100 --steps 3000 --out runs/world_v2/t2i_leg2 --save-every 250
rm -rf $W/v2/t2i && cp -r runs/world_v2/t2i_leg2 $W/v2/t2i
# Leg UNet 3 — the same UNet moved to zero terminal SNR + v-prediction + trailing timesteps
# (position followed x_T, not the prompt, under SD's schedule: docs/world.md, "Why position was
# at chance"). Probe: python benchmarks/world_position_probe.py --pipeline runs/world_v2/t2i_zsnr_leg1
$PY -m diffenvs.world.training.train_unet --vae $W/v2/vae --init-from $W/v2/t2i --schedule zero-snr \
    --lr 5e-4 --warmup 100 --steps 4500 --save-every 250 --out runs/world_v2/t2i_zsnr_leg1
rm -rf $W/v2/t2i && cp -r runs/world_v2/t2i_zsnr_leg1 $W/v2/t2i
# Leg UNet 4 (30 min): better on every attribute (shape 37.9 -> 41.0 %), staged.
$PY -m diffenvs.world.training.train_unet --vae $W/v2/vae --init-from $W/v2/t2i --schedule zero-snr \
    --lr 3e-4 --warmup 100 --steps 2000 --save-every 250 --out runs/world_v2/t2i_zsnr_leg2
rm -rf $W/v2/t2i && cp -r runs/world_v2/t2i_zsnr_leg2 $W/v2/t2i
# Next UNet legs: --init-from $W/v2/t2i --schedule zero-snr --lr 3e-4 --warmup 100 (shape is the last T2I bar).

# Flow world (issue 21): an SD3-layout model (SD3Transformer2DModel + one small CLIP text encoder
# saved as both CLIP slots, no T5) trained by rectified flow on the v2 VAE's latents; see
# docs/world.md, "Flow world: legs". Leg 1 (run in the background next to the UNet leg):
#   $PY -m diffenvs.world.training.train_flow --steps 2000 --batch-size 32 --lr 1e-3 \
#       --warmup 200 --save-every 250 --out runs/world_flow/t2i
# Leg 2 (started 19:46 UTC, not yet evaluated):
#   $PY -m diffenvs.world.training.train_flow --init-from runs/world_flow/t2i --steps 1000 \
#       --batch-size 32 --lr 5e-4 --warmup 100 --save-every 250 --out runs/world_flow/t2i_leg2
# Evaluate:
#   diffenvs world evaluate --pipeline runs/world_flow/t2i --skip oracle judge vae clip diversity \
#       --steps 20 10 --n-prompts 256 --compare-speed-with world --out-dir out/world_flow_evaluate
