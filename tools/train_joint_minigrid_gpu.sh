#!/usr/bin/env bash
# The joint model's MiniGrid fine-tune (configs/joint-minigrid.yaml) on one GPU, for when one is lent: the CPU run
# (35 minutes, 1,841 steps of batch 32) places the MiniGrid agent but never learns which way it faces, which caps the
# MiniGrid ranking (docs/results.md). This runs the same mixture with a 256-clip batch for a step budget that fits
# about 8 minutes of an H100/H200 (about 20x the CPU run's samples), from checkpoints/joint, then trains the MiniGrid
# and Breakout heads into the result. Data: tools/collect_joint_data.sh (copy data/ to the GPU machine, or run it
# there first).
#
#   tools/train_joint_minigrid_gpu.sh [OUT_DIR]        # env: WS (the worldsim command), STEPS, MINUTES
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/joint-minigrid-gpu}
WS=${WS:-worldsim}
$WS train --config configs/joint-minigrid.yaml train.output_dir="$OUT" train.batch_size=256 \
    train.max_steps="${STEPS:-6000}" train.max_minutes="${MINUTES:-8}" train.checkpointing_steps=1000000 \
    train.learning_rate=3e-4
$WS train-heads --model "$OUT/final" --embodiment minigrid --dataset data/minigrid-zoo --dataset data/minigrid \
    --val-dataset data/minigrid-zoo-heldout --steps 3000 --value-discount 0.9
$WS train-heads --model "$OUT/final" --embodiment breakout --dataset data/breakout \
    --val-dataset data/breakout-heldout --steps 3000
echo "world model: $OUT/final (then: MODEL=$OUT/final SKIP_TRAINING=1 tools/train_joint_stage3.sh for the figures)"
