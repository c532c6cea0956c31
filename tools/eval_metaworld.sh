#!/usr/bin/env bash
# Open-loop fidelity of a Meta-World model on the five held-out sets of tools/collect_metaworld_data.sh (a corruption
# setting no training episode used: expert noise 0.2 with a 2-step delay), two windows per episode (its first
# and its last 28 frames, which hold the success): PSNR / SSIM per horizon against
# copy-last-frame, the state predictor's hand and object positions on imagined frames against the real ones, the
# state error, and the success head's calibration on imagined frames. Writes one JSON per task and prints the table
# docs/results.md shows.
#
#   tools/eval_metaworld.sh [MODEL] [OUT_DIR]        # env: WS, HORIZON (24), CONTEXT (4), TASKS (default: all five)
#   TASKS="push-v3 pick-place-v3" tools/eval_metaworld.sh runs/metaworld-play/world_model/final outputs/eval-play
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-checkpoints/metaworld}
OUT=${2:-outputs/metaworld-eval}
WS=${WS:-.venv/bin/worldsim}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
TASKS=${TASKS:-reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3}
for task in $TASKS; do
    $WS evaluate --model "$MODEL" --dataset "data/metaworld-$task-heldout" --horizon "${HORIZON:-24}" \
        --context "${CONTEXT:-4}" --starts-per-episode 2 --json "$OUT/$task.json" > "$OUT/$task.log" 2>&1
    echo "evaluated $task"
done
$PY - "$OUT" $TASKS <<'PYTHON'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
tasks = sys.argv[2:]
reports = {task: json.loads((out / f"{task}.json").read_text()) for task in tasks}
rows = [("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.3f}"), ("hand position error (mm)", "hand_position_mm", "{:.1f}"),
        ("object position error (mm)", "object_position_mm", "{:.1f}"), ("state error (std units)", "state_error", "{:.3f}")]
print("| task | windows | " + " | ".join(f"{name}, model / copy-last" for name, _, _ in rows) + " | success Brier, imagined / copy-last / real | success ECE, imagined |")
print("|---" * (len(rows) + 4) + "|")
for task, report in reports.items():
    summary = report["summary"]
    cells = []
    for _, key, fmt in rows:
        model, copy = summary.get(f"{key}/model"), summary.get(f"{key}/copy_last_frame")
        cells.append("n/a" if model is None else f"{fmt.format(model)} / {fmt.format(copy)}")
    brier = [summary.get(f"success_brier/{label}") for label in ("model", "copy_last_frame", "real_frames")]
    brier = "n/a" if None in brier else " / ".join(f"{value:.3f}" for value in brier)
    ece = summary.get("success_ece/model")
    print(f"| {task} | {report['num_windows']} | " + " | ".join(cells) + f" | {brier} | "
          + ("n/a" if ece is None else f"{ece:.3f}") + " |")
horizon = reports[tasks[0]]["horizon"]
steps = [s for s in (1, 4, 8, 16, 24, horizon) if s <= horizon]
steps = sorted(set(steps))
print()
print("| step | " + " | ".join(f"{task} PSNR model / copy-last" for task in tasks) + " |")
print("|---" * (len(tasks) + 1) + "|")
for step in steps:
    cells = []
    for task in tasks:
        psnr = reports[task]["per_step"]["psnr"]
        cells.append(f"{psnr['model'][step - 1]:.1f} / {psnr['copy_last_frame'][step - 1]:.1f}")
    print(f"| {step} | " + " | ".join(cells) + " |")
PYTHON
