#!/usr/bin/env bash
# Reproduces checkpoints/pusht from scratch on a 2-core CPU machine (about 75 minutes):
# real PushT data -> autoencoder -> world model -> shipped folder -> held-out evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
WS=.venv/bin/worldsim

[ -d data/pusht ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 200 --out data/pusht \
    --seed 0 --policy-kwargs "noise_std=[0,5,15,30]" "wander_prob=[0.0,0.02,0.05]"
[ -d data/pusht-heldout ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 50 \
    --out data/pusht-heldout --seed 100000 --policy-kwargs noise_std=10 wander_prob=0.03 reaction_delay=2

$WS train-autoencoder --config configs/pusht.yaml
$WS train --config configs/pusht.yaml

rm -rf checkpoints/pusht.new
cp -r runs/pusht/world_model/final checkpoints/pusht.new
cp checkpoints/pusht/README.md checkpoints/pusht.new/ 2>/dev/null || true
rm -rf checkpoints/pusht && mv checkpoints/pusht.new checkpoints/pusht

$WS evaluate --model checkpoints/pusht --dataset data/pusht-heldout --horizon 32 --json docs/media/results-h32.json \
    --plot docs/media/results-h32.png
$WS evaluate --model checkpoints/pusht --dataset data/pusht-heldout --horizon 64 --json docs/media/results-h64.json \
    --plot docs/media/results-h64.png --video docs/media/rollout-h64.mp4
