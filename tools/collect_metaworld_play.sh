#!/usr/bin/env bash
# Records "policy logs" for the Meta-World world model: episodes of behaviour-cloned checkpoints of graded skill, as a
# user has from the earlier versions of their own policy, with the failures such policies make (hovering beside the
# puck, closing the gripper on air, pushing past the goal). The scripted training mix (tools/collect_metaworld_data.sh)
# holds experts under corruption; these show the model what imperfect learned policies do, so that it sees the puck
# stay put when a gripper passes near it. The checkpoints here must not be the ones later ranked.
#
#   worldsim train-bc --output runs/metaworld-bc-play <datasets> steps=1500 "save_steps=[150,500,1500]" seed=1
#   tools/collect_metaworld_play.sh          # data/metaworld-<task>-play, EPISODES per checkpoint and task
#
# env: CHECKPOINTS (folders; default runs/metaworld-bc-play/step-*), EPISODES (per checkpoint and task, default 12),
#      NOISE (a list cycled over episodes, default [0,0.2]), SEED (default 200000), JOBS (default 2), MAX_STEPS (150),
#      SIZE (64), OUT (data), WORLDSIM
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-12}
NOISE=${NOISE:-[0,0.2]}
SEED=${SEED:-200000}
JOBS=${JOBS:-2}
MAX_STEPS=${MAX_STEPS:-150}
SIZE=${SIZE:-64}
OUT=${OUT:-data}
WORLDSIM=${WORLDSIM:-.venv/bin/worldsim}
read -r -a CHECKPOINTS <<< "${CHECKPOINTS:-$(echo runs/metaworld-bc-play/step-*)}"
TASKS=(reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3)
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
for checkpoint in "${CHECKPOINTS[@]}"; do
    [ -f "$checkpoint/config.json" ] || { echo "no policy checkpoint at $checkpoint (train one with worldsim train-bc)"; exit 1; }
done
mkdir -p "$OUT/logs"

record() {  # record <task> <checkpoint index>: one dataset per task and checkpoint, seeds apart per checkpoint
    local task=$1 index=$2 checkpoint=${CHECKPOINTS[$2]}
    local name="metaworld-$task-play/$(basename "$checkpoint")" log="$OUT/logs/metaworld-$task-play-$(basename "$checkpoint").log"
    if [ -e "$OUT/$name" ]; then echo "skip   $name (exists)"; return 0; fi
    mkdir -p "$OUT/metaworld-$task-play"
    if "$WORLDSIM" collect --env "worldsim/MetaWorld-$task" --policy "$checkpoint" --episodes "$EPISODES" \
            --seed $(( SEED + 1000 * index )) --max-steps "$MAX_STEPS" --out "$OUT/$name" \
            --env-kwargs image_size="$SIZE" steps_after_success=20 --policy-kwargs "noise_std=$NOISE" > "$log" 2>&1; then
        echo "done   $name: $(grep -a '^wrote' "$log" | tail -1)"
    else
        echo "FAILED $name (see $log)"; return 1
    fi
}

begin=$SECONDS
failed=0
for task in "${TASKS[@]}"; do
    for index in "${!CHECKPOINTS[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=$(( failed + 1 )); done
        record "$task" "$index" &
    done
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=$(( failed + 1 )); done
echo "all recordings finished in $(( SECONDS - begin )) s; $failed failed"
[ "$failed" -eq 0 ]
