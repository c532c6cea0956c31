#!/usr/bin/env bash
# Records Meta-World episodes with excursions: the scripted expert of each task, where with probability
# EXCURSION_PROB per step one uniform random action is held for 6, 10 or 14 steps (cycled per episode), so the hand
# travels a sustained distance in a random direction (down, back toward the base, sideways) before the expert
# recovers. The training mix of tools/collect_metaworld_data.sh moves the hand mostly toward the objects: its random
# actions are drawn anew every step and average out. These episodes show a world model what every direction of the
# action space does (configs/metaworld-excursions.yaml fine-tunes on them).
#
#   tools/collect_metaworld_excursions.sh              # 40 episodes per task into data/metaworld-<task>-excursions
#   EPISODES=2 OUT=/tmp/data tools/collect_metaworld_excursions.sh    # a quick check
#
# env: EPISODES (per task, default 40), EXCURSION_PROB (default 0.06), SEED (first episode seed, default 300000:
# apart from the training and held-out seeds), JOBS (parallel recordings, default 2), MAX_STEPS (default 150),
# SIZE (pixels per camera, default 64), OUT (default data), WORLDSIM (the worldsim command).
# A dataset folder that exists already is skipped, so a stopped run resumes when run again (delete an interrupted
# dataset first). Duration: 40 episodes per task (about 27,000 frames) take about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${EPISODES:-40}
EXCURSION_PROB=${EXCURSION_PROB:-0.06}
SEED=${SEED:-300000}
JOBS=${JOBS:-2}
MAX_STEPS=${MAX_STEPS:-150}
SIZE=${SIZE:-64}
OUT=${OUT:-data}
WORLDSIM=${WORLDSIM:-.venv/bin/worldsim}
TASKS=(reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3)
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$OUT/logs"

record() {  # record <task>
    local task=$1 name="metaworld-$1-excursions"
    if [ -e "$OUT/$name" ]; then echo "skip   $name (exists; delete it to re-record)"; return 0; fi
    if "$WORLDSIM" collect --env "worldsim/MetaWorld-$task" --policy metaworld-expert --episodes "$EPISODES" \
            --seed "$SEED" --max-steps "$MAX_STEPS" --out "$OUT/$name" \
            --env-kwargs image_size="$SIZE" steps_after_success=20 \
            --policy-kwargs "noise_std=[0,0.1,0.3]" "excursion_prob=$EXCURSION_PROB" "excursion_steps=[6,10,14]" \
            > "$OUT/logs/$name.log" 2>&1; then
        echo "done   $name: $(grep -a '^wrote' "$OUT/logs/$name.log" | tail -1)"
    else
        echo "FAILED $name (see $OUT/logs/$name.log)"; return 1
    fi
}

begin=$SECONDS
failed=0
for task in "${TASKS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=$(( failed + 1 )); done
    record "$task" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=$(( failed + 1 )); done
echo "all recordings finished in $(( SECONDS - begin )) s; $failed failed"
[ "$failed" -eq 0 ]
