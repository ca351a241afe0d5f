#!/usr/bin/env bash
# World v2, the shipped world since 2 December 2026, trained in legs on 2 CPU cores (see
# docs/world.md, "World v2: legs"). Run scripts/train_world.sh first: it makes the oracle and the
# CLIP that v2 keeps, and the v1 VAE that v2's VAE continues from.
# Each leg is one command; a later leg continues from the previous leg's weights with --init-from.
# Legs write into runs/world_v2/; the last step installs the final pipeline as the shipped world.
# These are exactly the commands that made the committed weights, in order. Run each leg with
# OMP_NUM_THREADS=1 (two jobs at once on 2 cores: one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
W=diffenvs/world/weights
R=runs/world_v2
export OMP_NUM_THREADS=1

# VAE 1 — continue the v1 VAE (same 0.25 M-parameter architecture) with the oracle-feature
# perceptual term; a new encoder means the UNet must be retrained on its latents.
$PY -m diffenvs.world.training.train_vae --init-from $W/t2i/vae --steps 10000 --lr 5e-4 \
    --warmup 200 --perceptual-weight 1.0 --out $R/vae --save-every 1000
# VAE 2 — a second leg from VAE 1 (shape and pattern were 95.6 / 95.5 %).
$PY -m diffenvs.world.training.train_vae --init-from $R/vae --steps 5500 --lr 3e-4 \
    --warmup 100 --perceptual-weight 1.0 --out $R/vae_leg2 --save-every 1000

# Judge 1 — the independent judge (different architecture, data seed 100; never in a loss).
$PY -m diffenvs.world.training.train_judge --steps 3500 --out $R/judge.safetensors
cp $R/judge.safetensors $W/judge.safetensors

# Not kept (mixed result): CLIP with the shared auxiliary attribute heads,
#   $PY -m diffenvs.world.training.train_clip --init-from $W/clip --steps 1000 --lr 5e-4 \
#       --aux-weight 1.0 --focus shape position pattern --out $R/clip

# UNet 1 — UNet + text encoder from scratch on the v2 VAE's latents (95 min on a busy machine).
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --arch v2 --steps 5500 \
    --out $R/t2i --save-every 500
# UNet 2 — from UNet 1's EMA weights (each leg restarts its own cosine schedule).
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --init-from $R/t2i \
    --lr 5e-4 --warmup 100 --steps 3000 --out $R/t2i_leg2 --save-every 250
# UNet 3 — the same UNet moved to zero terminal SNR + v-prediction + trailing timesteps
# (position followed x_T, not the prompt, under SD's schedule: docs/world.md, "Why position was
# at chance"). Probe: python benchmarks/world_position_probe.py --pipeline $R/t2i_zsnr_leg1
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --init-from $R/t2i_leg2 \
    --schedule zero-snr --lr 5e-4 --warmup 100 --steps 4500 --save-every 250 --out $R/t2i_zsnr_leg1
# UNet 4 (30 min): better on every attribute (shape 37.9 -> 41.0 %).
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --init-from $R/t2i_zsnr_leg1 \
    --schedule zero-snr --lr 3e-4 --warmup 100 --steps 2000 --save-every 250 --out $R/t2i_zsnr_leg2
# UNet 5 (86 min, not installed: shape 41.0 -> 59.8 % but count 93.8 -> 82.8 %): latent cells an
# object touches weigh 4x in the loss at every timestep.
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --init-from $R/t2i_zsnr_leg2 \
    --schedule zero-snr --lr 3e-4 --warmup 100 --steps 6000 --object-weight 4 --save-every 250 \
    --out $R/t2i_zsnr_leg3
# UNet 6 (51 min; world v2.1): the object weight only below t = 500 (shape 61.3, count 94.5 %).
$PY -m diffenvs.world.training.train_unet --vae $R/vae_leg2 --init-from $R/t2i_zsnr_leg3 \
    --schedule zero-snr --lr 3e-4 --warmup 100 --steps 3500 --object-weight 4 \
    --object-weight-below-t 500 --save-every 250 --out $R/t2i_zsnr_leg4
LAST=$R/t2i_zsnr_leg4
# UNet 7 (91 min; staged in $W/staged/t2i, shape 61.3 -> 69.9 %): UNet 6's recipe again, from v2.1.
# It becomes the default (world v2.2) with LAST=$R/t2i_zsnr_leg5 once the downstream results are
# re-measured on it.
$PY -m diffenvs.world.training.train_unet --vae $W/t2i/vae --init-from $LAST \
    --schedule zero-snr --lr 3e-4 --warmup 100 --steps 6000 --object-weight 4 \
    --object-weight-below-t 500 --save-every 250 --out $R/t2i_zsnr_leg5
mkdir -p $W/staged && rm -rf $W/staged/t2i && cp -r $R/t2i_zsnr_leg5 $W/staged/t2i

# Install the last leg as the shipped world and measure it.
rm -rf $W/t2i && cp -r $LAST $W/t2i
.venv/bin/diffenvs world evaluate

# Flow world (issue 21): an SD3-layout model (SD3Transformer2DModel + one small CLIP text encoder
# saved as both CLIP slots, no T5) trained by rectified flow on the v2 VAE's latents; see
# docs/world.md, "Flow world: legs". Not shipped yet.
#   $PY -m diffenvs.world.training.train_flow --steps 2000 --batch-size 32 --lr 1e-3 \
#       --warmup 200 --save-every 250 --out runs/world_flow/t2i
#   $PY -m diffenvs.world.training.train_flow --init-from runs/world_flow/t2i --steps 1000 \
#       --batch-size 32 --lr 5e-4 --warmup 100 --save-every 250 --out runs/world_flow/t2i_leg2
#   diffenvs world evaluate --pipeline runs/world_flow/t2i --skip oracle judge vae clip diversity \
#       --steps 20 10 --n-prompts 256 --out-dir out/world_flow_evaluate
