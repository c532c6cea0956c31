#!/usr/bin/env bash
# The two stages of tools/train_pusht_checkpoint.sh on one GPU, from the shipped autoencoder: stage 1 on purposeful
# pushing (configs/pusht.yaml), stage 2 on wandering, action-noisy data (configs/pusht-wander.yaml), each with a
# 256-clip batch and a step budget that fits about 3.5 minutes of an H100 (about 8x the samples per minute of
# 2 CPU cores would see in a day). No validation episodes (the held-out set is data/pusht-heldout).
#
#   tools/train_pusht_gpu.sh [DATA_DIR] [OUT_DIR]        # env: WS (the worldsim command), S1, M1, S2, M2
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
OUT=${2:-runs/pusht-gpu}
WS=${WS:-worldsim}
AE=checkpoints/pusht/autoencoder
$WS train --config configs/pusht.yaml dataset.root="$DATA/pusht" dataset.val_episodes=0 \
    dataset.cache_dir="$OUT/cache-pusht" train.autoencoder=$AE train.output_dir="$OUT/stage1" train.batch_size=256 \
    train.max_steps="${S1:-4500}" train.max_minutes="${M1:-3.6}" train.checkpointing_steps=1000000
$WS train --config configs/pusht-wander.yaml dataset.root="$DATA/pusht-wander" dataset.val_episodes=0 \
    dataset.cache_dir="$OUT/cache-wander" train.autoencoder=$AE train.init_from="$OUT/stage1/final" \
    train.output_dir="$OUT/stage2" train.batch_size=256 train.max_steps="${S2:-3000}" train.max_minutes="${M2:-2.6}" \
    train.checkpointing_steps=1000000
echo "world model: $OUT/stage2/final"
