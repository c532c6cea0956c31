#!/usr/bin/env bash
# Ranks Meta-World arm policies in imagination against the real env, one task at a time, then pools the tasks:
# 10 scripted variants of each task's expert (the plug-in's zoo) and the behaviour-cloned checkpoints of
# `worldsim train-bc` (images + state + task), 50 initial states per task, 100 policy steps after 4 shared context
# frames. Each task writes its own JSON, and a task whose JSON exists is skipped, so the campaign resumes across
# sessions; `worldsim rank-report` pools whatever tasks are done (docs/results.md, "Ranking arm policies").
#
#   tools/rank_metaworld.sh                          # every task (about 30 min per task on 2 CPU cores)
#   TASKS="reach-v3 push-v3" tools/rank_metaworld.sh # some tasks
#
# Environment variables:
#   MODEL      the world model (default checkpoints/metaworld)
#   BC         folder of the BC checkpoints (default runs/metaworld-bc, from `worldsim train-bc`, see docs/results.md);
#              every step-* folder in it is ranked, named bc-<step>
#   OUT        where the JSONs go (default outputs/metaworld-rank)
#   STATES     initial states per task (default 50)
#   HORIZON    policy steps per episode (default 100: the clean expert succeeds within 40-92 steps)
#   STEPS, SPACING   the imagination's sampler (default 3 trailing Euler steps: 1.65x the default's speed)
#   VALUE      what values an imagined step (`worldsim rank --imagined-value`): success_probability (the plug-in's
#              default, the success head on imagined frames) or state_success (Meta-World's success rule on the
#              predicted observation.state); use another OUT for each
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-checkpoints/metaworld}
BC=${BC:-runs/metaworld-bc}
OUT=${OUT:-outputs/metaworld-rank}
TASKS=${TASKS:-reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3}
WS=${WS:-.venv/bin/worldsim}
export MUJOCO_GL=${MUJOCO_GL:-egl}

ZOO=(expert noise-0.3 delay-3 random-0.3 noise-0.6 open-gripper delay-6 random-0.5 noise-1.0 wrong-task)
POLICIES=()
for member in "${ZOO[@]}"; do POLICIES+=(--policy "zoo:$member"); done
for folder in "$BC"/step-*; do
    [ -d "$folder" ] || continue
    step=$(basename "$folder"); step=${step#step-}; step=$((10#$step))
    POLICIES+=(--policy "bc-$step=$folder")
done
mkdir -p "$OUT"
for task in $TASKS; do
    if [ -e "$OUT/$task.json" ]; then
        echo "skip   $task (exists; delete $OUT/$task.json to rank it again)"
        continue
    fi
    start=$SECONDS
    $WS rank --model "$MODEL" --env-id "$task" "${POLICIES[@]}" --num-states "${STATES:-50}" \
        --horizon "${HORIZON:-100}" --context 4 --num-inference-steps "${STEPS:-3}" \
        --timestep-spacing "${SPACING:-trailing}" --imagined-value "${VALUE:-success_probability}" \
        --json "$OUT/$task.json" > "$OUT/$task.log" 2>&1   # written at the end, atomically
    echo "ranked $task in $(( (SECONDS - start) / 60 )) min"
done
ranked=()
for task in reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3; do
    [ -e "$OUT/$task.json" ] && ranked+=("$OUT/$task.json")
done
$WS rank-report "${ranked[@]}" --json "$OUT/pooled.json" | tee "$OUT/table.txt"
