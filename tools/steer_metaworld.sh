#!/usr/bin/env bash
# Steers a noisy Meta-World expert by best-of-K imagination in the real env, one task at a time: the base policy
# (K = 1) and best-of-8 on the same 30 initial states (seeds 1000-1029), 100 steps in chunks of 5. Each candidate
# chunk is imagined from the last 4 real frames and states with 3 trailing Euler steps and scored by VALUE.
# A task whose report exists is skipped; an interrupted task resumes (`steer-eval --resume`, which refuses other
# settings: use another OUT for them), so the campaign carries across sessions (docs/results.md, "Steering by the
# predicted state").
#
#   tools/steer_metaworld.sh                                # reach, button-press, push, drawer-open (15-25 min each)
#   TASKS="reach-v3" tools/steer_metaworld.sh               # some tasks (short names, as here)
#   SEED=1030 OUT=outputs/steer-1030 TASKS=push-v3 tools/steer_metaworld.sh   # 30 more starts, merged by
#                                                            # `worldsim steer-report a/report.json b/report.json`
#
# Environment variables:
#   MODEL    the world model (default checkpoints/metaworld)
#   VALUE    what scores an imagined chunk (`steer-eval --value-key`): state_progress (the default: the plug-in's
#            progress measure of the predicted observation.state, the last frame's) or success_probability / reward
#            (the heads on the imagined frames)
#   OUT      where the reports go (default outputs/metaworld-steer-<VALUE>[-oracle]); one folder per task
#   STATES   initial states per task (default 30)
#   SEED     the first initial state (default 1000)
#   K        candidates of the steered policy (default 8)
#   AGGREGATE  how a future's frames are combined (default last: where the chunk leaves the task)
#   FOLLOW   imagined follow-up steps after each candidate chunk (`steer-eval --follow-steps`, default 0): the
#            plug-in's noise-free expert continues the candidate on the predicted state, and the score is taken where
#            the follow-up leaves the task, a longer look-ahead than the chunk's own 5 steps. Each decision imagines
#            5 + FOLLOW steps per candidate, so it costs about (5 + FOLLOW) / 5 times as much
#   ORACLE   1: also execute every candidate in the real env (`--oracle-follow 1`): with VALUE=state_progress the
#            report's Spearman column then says how well the scores rank the candidates by the real states' progress
#            (with the heads' values, by the real success of the chunk and one follow-up step, which rarely differs
#            between candidates). K real 5-step rollouts per decision: 2.1-2.4x the time. Reports go to OUT's
#            default with -oracle appended.
#   NOISE_<task, - replaced by _>   the base policy's noise, e.g. NOISE_reach_v3=1.5 (defaults: reach 2.0,
#            button-press 0.8, push 0.6, drawer-open 0.55, others 1.0; the base then succeeds on 13-30% of the starts)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-checkpoints/metaworld}
VALUE=${VALUE:-state_progress}
SUFFIX=""
[ "${ORACLE:-0}" = 1 ] && SUFFIX=-oracle
OUT=${OUT:-outputs/metaworld-steer-$VALUE$SUFFIX}
TASKS=${TASKS:-reach-v3 button-press-v3 push-v3 drawer-open-v3}
WS=${WS:-.venv/bin/worldsim}
export MUJOCO_GL=${MUJOCO_GL:-egl}

noise_for() {
    local name="NOISE_${1//-/_}"
    case "$1" in
        reach-v3) echo "${!name:-2.0}" ;;
        button-press-v3) echo "${!name:-0.8}" ;;
        push-v3) echo "${!name:-0.6}" ;;
        drawer-open-v3) echo "${!name:-0.55}" ;;
        *) echo "${!name:-1.0}" ;;
    esac
}

mkdir -p "$OUT"
for task in $TASKS; do
    case "$task" in
        */*) echo "TASKS takes short task names such as push-v3, got $task" >&2; exit 2 ;;
    esac
    folder="$OUT/$task"
    if [ -e "$folder/report.json" ]; then
        echo "skip    $task (exists; delete $folder to steer it again)"
        continue
    fi
    extra=()
    [ -e "$folder/steer-progress.json" ] && extra=(--resume)
    [ "${ORACLE:-0}" = 1 ] && extra+=(--oracle-follow 1)
    [ "${FOLLOW:-0}" != 0 ] && extra+=(--follow-steps "$FOLLOW")
    start=$SECONDS
    if ! $WS steer-eval --model "$MODEL" --env-id "$task" --candidates 1 "${K:-8}" --num-states "${STATES:-30}" \
        --horizon 100 --chunk-length 5 --base-noise "$(noise_for "$task")" --value-key "$VALUE" \
        --aggregate "${AGGREGATE:-last}" --num-inference-steps 3 --timestep-spacing trailing --seed "${SEED:-1000}" \
        --out "$folder" ${extra[@]+"${extra[@]}"} >> "$OUT/$task.log" 2>&1; then
        echo "failed  $task; the end of $OUT/$task.log:" >&2
        tail -5 "$OUT/$task.log" >&2
        exit 1
    fi
    echo "steered $task in $(( (SECONDS - start) / 60 )) min"
    grep '^|' "$OUT/$task.log" || true
done
