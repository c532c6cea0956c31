#!/usr/bin/env bash
# Records the Meta-World datasets: for each of 5 tasks, a training set of the scripted expert under graded
# corruption (plus a share of clearly failing episodes) and a held-out set with a corruption setting no training
# episode used. Two cameras (observation.images.scene, observation.images.wrist), the 39-D state, the environment
# state, next.success and the task text are recorded per frame / episode (docs/embodiments.md, "Meta-World").
#
#   tools/collect_metaworld_data.sh                      # 2 parallel recordings, EPISODES=140 per task: ~50 min
#   EPISODES=2 tools/collect_metaworld_data.sh           # a quick check
#   EPISODES=600 JOBS=10 OUT=data tools/collect_metaworld_data.sh     # a 16-core machine
#
# Writes, for task in reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3:
#   $OUT/metaworld-<task>           EPISODES episodes (seeds 0..), the training mix: every episode cycles through
#                                   noise_std 0 / 0.1 / 0.3 / 0.6, random_prob 0 / 0.1 / 0 / 0.3 / 0.5,
#                                   delay 0 / 0 / 3 / 0 / 6 / 0 and, one episode in 7, another task's expert
#                                   (wrong_task=auto: a clearly failing behaviour)
#   $OUT/metaworld-<task>-heldout   HELDOUT episodes (seeds 100000..), noise_std 0.2 with a 2-step delay: a noise
#                                   level between the training ones combined with a delay no training episode has
#   $OUT/metaworld-<task>-excursions   EXCURSIONS episodes (seeds 300000..), only when EXCURSIONS > 0: the expert
#                                   with excursions, a uniform random action held for 6 / 10 / 14 steps (cycled)
#                                   with probability 0.06 per step, noise_std 0 / 0.1 / 0.3, so the hand moves back
#                                   toward the base and sideways, which the training mix rarely shows
#                                   (configs/metaworld-excursions.yaml fine-tunes on them; 40 per task: 8.5 min)
#   $OUT/logs/<dataset>.log         each recording's output
#
# Environment variables:
#   EPISODES   training episodes per task (default 140)
#   HELDOUT    held-out episodes per task (default EPISODES / 5, at least 1)
#   EXCURSIONS episodes with excursions per task (default 0: none; EXCURSIONS=40 adds them to existing data)
#   JOBS       recordings run in parallel, one process each (default 2; 10 recordings in all, so more than 10 does
#              not help)
#   SIZE       image size of each camera, pixels (default 64, the shipped model's size; the frame cache resizes
#              to any model's size, so 96 serves a larger model too, recording 18% slower at twice the bytes)
#   MAX_STEPS  steps per episode at most (default 150); an episode also ends 20 steps after its first success
#   OUT        where the datasets go (default data)
# A dataset folder that exists already is skipped, so a stopped run resumes by running the script again (delete an
# interrupted dataset first to re-record it in full: each one holds every episode completed before the stop).
#
# Duration: a recording process steps about 17-20 times a second at 96 px on a 2-core machine with both cores busy
# (two cameras rendered in software; 23 alone) and 23-29 at 64 px. Training episodes average 121 steps (the training
# mix succeeds in 43-75% of episodes by task; failures run the full 150), held-out ones 91, so a run costs about
# 700 * EPISODES steps: with JOBS=2 the default (5 x (140 + 28) episodes, ~97,000 steps) took 32 minutes at 64 px
# (2026-11-29, AMD EPYC, 2 cores; 84,205 training and 12,769 held-out frames, 89 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

EPISODES=${EPISODES:-140}
HELDOUT=${HELDOUT:-$(( EPISODES / 5 > 0 ? EPISODES / 5 : 1 ))}
EXCURSIONS=${EXCURSIONS:-0}
JOBS=${JOBS:-2}
SIZE=${SIZE:-64}
MAX_STEPS=${MAX_STEPS:-150}
OUT=${OUT:-data}
TASKS=(reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3)
WORLDSIM=${WORLDSIM:-.venv/bin/worldsim}
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

mkdir -p "$OUT/logs"
ENV_KWARGS=(image_size="$SIZE" steps_after_success=20)

record() {  # record <dataset name> <task> <episodes> <seed> <policy kwargs...>
    local name=$1 task=$2 episodes=$3 seed=$4
    shift 4
    if [ -e "$OUT/$name" ]; then
        echo "skip   $name (exists; delete it to re-record)"
        return 0
    fi
    local start=$SECONDS
    echo "start  $name ($episodes episodes)"
    if "$WORLDSIM" collect --env "worldsim/MetaWorld-$task" --policy metaworld-expert --episodes "$episodes" \
            --seed "$seed" --max-steps "$MAX_STEPS" --out "$OUT/$name" --env-kwargs "${ENV_KWARGS[@]}" \
            --policy-kwargs "$@" > "$OUT/logs/$name.log" 2>&1; then
        echo "done   $name in $(( SECONDS - start )) s: $(grep -a '^wrote' "$OUT/logs/$name.log" | tail -1)"
    else
        echo "FAILED $name (see $OUT/logs/$name.log)"
        return 1
    fi
}

TRAIN_KWARGS=("noise_std=[0,0.1,0.3,0.6]" "random_prob=[0,0.1,0,0.3,0.5]" "delay=[0,0,3,0,6,0]"
              "wrong_task=[null,null,null,null,null,null,auto]")
HELDOUT_KWARGS=("noise_std=0.2" "delay=2")
EXCURSION_KWARGS=("noise_std=[0,0.1,0.3]" "excursion_prob=0.06" "excursion_steps=[6,10,14]")

# the long training recordings first, then the held-out ones
COMMANDS=()
for task in "${TASKS[@]}"; do
    COMMANDS+=("record metaworld-$task $task $EPISODES 0 ${TRAIN_KWARGS[*]}")
done
for task in "${TASKS[@]}"; do
    COMMANDS+=("record metaworld-$task-heldout $task $HELDOUT 100000 ${HELDOUT_KWARGS[*]}")
done
if [ "$EXCURSIONS" -gt 0 ]; then
    for task in "${TASKS[@]}"; do
        COMMANDS+=("record metaworld-$task-excursions $task $EXCURSIONS 300000 ${EXCURSION_KWARGS[*]}")
    done
fi

echo "recording ${#TASKS[@]} tasks x ($EPISODES training + $HELDOUT held-out + $EXCURSIONS excursion episodes)" \
     "at ${SIZE} px, $JOBS in parallel, into $OUT"
begin=$SECONDS
status=$(mktemp)
trap 'rm -f "$status"' EXIT
set -f  # the policy arguments hold [...] lists: no globbing when a command is split into words
for command in "${COMMANDS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n || true
    done
    ( $command || echo "$command" >> "$status" ) &
done
wait
set +f
failed=$(wc -l < "$status")
echo "all recordings finished in $(( SECONDS - begin )) s; $failed failed"
[ "$failed" -eq 0 ]
