#!/usr/bin/env bash
# Trains the joint PushT + Breakout + MiniGrid world model (configs/joint.yaml) on a 2-core CPU machine (about
# 90 minutes: 10 for the autoencoder, 50 for the transformer, 15 for the router fine-tune (configs/joint-router.yaml),
# the rest for data and latents), then measures it:
# PushT fidelity next to the PushT-only model, the action-sensitivity check in all three environments, and the
# router's expert load per embodiment. Needs checkpoints/pusht (the starting point) and data/pusht-wander (made by
# tools/train_pusht_checkpoint.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
WS=.venv/bin/worldsim
MODEL=${MODEL:-runs/joint-router/world_model/final}

tools/collect_joint_data.sh

if [ "${SKIP_TRAINING:-0}" != 1 ]; then
    $WS train-autoencoder --config configs/joint.yaml
    $WS train --config configs/joint.yaml
    $WS train --config configs/joint-router.yaml
fi

$WS evaluate --model "$MODEL" --embodiment pusht --dataset data/pusht-heldout --horizon 32 \
    --json docs/media/joint-pusht-h32.json
$WS sensitivity --model "$MODEL" --embodiment pusht --embodiment breakout --embodiment minigrid \
    --json docs/media/sensitivity-joint.json --video docs/media/sensitivity-joint.mp4 || true
$WS router-stats --model "$MODEL" --dataset pusht=data/pusht-heldout --dataset breakout=data/breakout-heldout \
    --dataset minigrid=data/minigrid-heldout --json docs/media/router-joint.json
$WS sensitivity --model checkpoints/pusht --json docs/media/sensitivity-pusht.json
