#!/usr/bin/env bash
# The Meta-World world model (configs/metaworld.yaml) on CPU, in stages that survive a stopped session: the
# autoencoder, then the world model (`worldsim train` resumes from its latest checkpoint, so running this script
# again continues it), then the outcome heads (success) and the state predictor (each imagined frame's
# observation.state) on the five tasks' recordings. Data: tools/collect_metaworld_data.sh.
#
#   tools/train_metaworld.sh                          # everything, on CPU
#   HEADS_ONLY=1 MODEL=runs/metaworld-gpu/world_model/final tools/train_metaworld.sh   # heads + state predictor of a
#                                                     # model trained elsewhere (tools/train_metaworld_gpu.sh)
#   STATE_ONLY=1 MODEL=checkpoints/metaworld tools/train_metaworld.sh   # the state predictor alone (its default:
#                                                     # half of each batch from imagined frames, ~17 min of imagination)
# env: WS (the worldsim command), MODEL, HEADS_ONLY, STATE_ONLY, HEAD_STEPS, STATE_STEPS, STATE_IMAGINED
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-.venv/bin/worldsim}
TASKS=(reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3)
if [ -z "${HEADS_ONLY:-}" ] && [ -z "${STATE_ONLY:-}" ]; then
    [ -d runs/metaworld/autoencoder/final ] || $WS train-autoencoder --config configs/metaworld.yaml
    $WS train --config configs/metaworld.yaml
fi
MODEL=${MODEL:-runs/metaworld/world_model/final}
TRAIN=() HELDOUT=()
for task in "${TASKS[@]}"; do
    TRAIN+=(--dataset "data/metaworld-$task")
    HELDOUT+=(--val-dataset "data/metaworld-$task-heldout")
done
if [ -z "${STATE_ONLY:-}" ]; then
    $WS train-heads --model "$MODEL" --embodiment metaworld "${TRAIN[@]}" "${HELDOUT[@]}" --steps "${HEAD_STEPS:-3000}"
fi
$WS train-state --model "$MODEL" --embodiment metaworld "${TRAIN[@]}" "${HELDOUT[@]}" --steps "${STATE_STEPS:-12000}" \
    --imagined-fraction "${STATE_IMAGINED:-0.5}"
echo "model with heads and state predictor: $MODEL"
