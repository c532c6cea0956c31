#!/usr/bin/env bash
# Fine-tunes the shipped Meta-World world model on its training mix plus policy logs (configs/metaworld-play.yaml):
# the episodes of behaviour-cloned checkpoints that tools/collect_metaworld_play.sh records. CPU or GPU; running it
# again resumes from the latest checkpoint (every 250 steps). The outcome heads and the state predictor of the
# starting model are carried over (they read the unchanged autoencoder's latents), so the result ranks and steers
# as it is.
#
#   tools/finetune_metaworld_play.sh                   # runs/metaworld-play/world_model/final
#   tools/finetune_metaworld_play.sh train.max_minutes=30 train.batch_size=256    # any override of the config
# env: WS (the worldsim command)
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-.venv/bin/worldsim}
for task in reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3; do
    for dataset in "data/metaworld-$task" "data/metaworld-$task-play"; do
        [ -d "$dataset" ] || { echo "missing $dataset: run tools/collect_metaworld_data.sh and tools/collect_metaworld_play.sh"; exit 1; }
    done
done
$WS train --config configs/metaworld-play.yaml "$@"
echo "fine-tuned world model: runs/metaworld-play/world_model/final"
