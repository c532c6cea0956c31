#!/usr/bin/env bash
# Reproduces checkpoints/pusht from scratch on a 2-core CPU machine (about 2 hours 10 minutes):
# real PushT data -> autoencoder -> world model (stage 1: purposeful pushing; stage 2: fine-tune on wandering,
# action-noisy data so the model must read its actions) -> heads and light decoder -> stage 3 (fine-tune on faster
# pushes) -> shipped folder -> held-out evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
WS=.venv/bin/worldsim

[ -d data/pusht ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 200 --out data/pusht \
    --seed 0 --policy-kwargs "noise_std=[0,5,15,30]" "wander_prob=[0.0,0.02,0.05]"
[ -d data/pusht-wander ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 200 \
    --out data/pusht-wander --seed 200000 --policy-kwargs "noise_std=[5,20,40]" "wander_prob=[0.1,0.3]"
[ -d data/pusht-heldout ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 50 \
    --out data/pusht-heldout --seed 100000 --policy-kwargs noise_std=10 wander_prob=0.03 reaction_delay=2

$WS train-autoencoder --config configs/pusht.yaml
# Stage 2 starts from checkpoint-3000 of stage 1. The shipped model's stage 1 ran the 5000-step cosine schedule of
# configs/pusht.yaml and was stopped after checkpoint-3000 (see checkpoints/pusht/README.md); here it ends at 3000.
$WS train --config configs/pusht.yaml train.max_steps=3000 train.checkpoints_total_limit=10
$WS train --config configs/pusht-wander.yaml

rm -rf checkpoints/pusht.new
cp -r runs/pusht/world_model_wander/final checkpoints/pusht.new
cp checkpoints/pusht/README.md checkpoints/pusht.new/ 2>/dev/null || true
rm -rf checkpoints/pusht && mv checkpoints/pusht.new checkpoints/pusht
[ -d data/pusht-near-goal ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 400 \
    --max-steps 40 --seed 300000 --start pusht-near-goal --out data/pusht-near-goal
[ -d data/pusht-near-goal-heldout ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 60 \
    --max-steps 40 --seed 400000 --start pusht-near-goal --out data/pusht-near-goal-heldout
$WS train-heads --model checkpoints/pusht --dataset data/pusht --dataset data/pusht-wander \
    --dataset data/pusht-near-goal --val-dataset data/pusht-heldout --val-dataset data/pusht-near-goal-heldout \
    --steps 4000
$WS train-decoder --model checkpoints/pusht --dataset data/pusht --dataset data/pusht-wander \
    --val-dataset data/pusht-heldout --steps 9000


# Stage 3: fine-tune on faster, noisier pushes (configs/pusht-fast.yaml starts from checkpoints/pusht, here the
# stage-2 pipeline with its heads and light decoder, which the fine-tune keeps); the shipped folder keeps its start
# frames and takes the new transformer.
[ -d data/pusht-mix ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 300 --out data/pusht-mix \
    --seed 500000 --policy-kwargs "max_step=[40,60,80,40,100]" "noise_std=[0,10,30,60]" "wander_prob=[0.0,0.05,0.2]"
[ -d data/pusht-mix-heldout ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 30 \
    --out data/pusht-mix-heldout --seed 600000 --policy-kwargs "max_step=[60,80,100]" "noise_std=[0,30,60,10]"
$WS train --config configs/pusht-fast.yaml
.venv/bin/python - <<'PY'
from worldsim.pipelines.world_model import WorldModelPipeline
pipeline = WorldModelPipeline.from_pretrained("checkpoints/pusht")
pipeline.transformer = WorldModelPipeline.from_pretrained("runs/pusht-fast/final").transformer
pipeline.metadata["outcome_heads"] = True
pipeline.save_pretrained("checkpoints/pusht.new")
PY
for f in README.md autoencoder_metrics.json heads/metrics.json decoder/metrics.json; do
    if [ -f checkpoints/pusht/$f ]; then cp checkpoints/pusht/$f checkpoints/pusht.new/$f; fi
done
cp runs/pusht-fast/train_log.jsonl checkpoints/pusht.new/train_log_stage3.jsonl
cp runs/pusht-fast/run_config.yaml checkpoints/pusht.new/run_config_stage3.yaml
rm -rf checkpoints/pusht && mv checkpoints/pusht.new checkpoints/pusht

$WS evaluate --model checkpoints/pusht --dataset data/pusht-heldout --horizon 32 --json docs/media/results-h32.json \
    --plot docs/media/results-h32.png
$WS evaluate --model checkpoints/pusht --dataset data/pusht-heldout --horizon 64 --json docs/media/results-h64.json \
    --plot docs/media/results-h64.png --video docs/media/rollout-h64.mp4
