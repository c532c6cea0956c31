#!/usr/bin/env bash
# The GPU measurements of the pretrained-backbone issue, as one script for a lent GPU (about 6 minutes on an H100/H200):
#  1. the shipped PushT model as an env on the GPU, eager: single-env and 64 / 1,024-env steps/s, training samples/s;
#  2. the same with every steady-state step replayed as one captured CUDA graph (`--cuda-graphs`), after first
#     checking on the GPU that graph steps give the eager steps' frames (a short rollout both ways);
#  3. training speed of the three block-causal attention modes for worldsim's transformer and a Wan-sized frame.
# Results go to $OUT (JSON per measurement, log.txt); copy them into docs/benchmarks.md and docs/backbones.md with the
# date and the GPU's name. The real PushT env needs gym-pusht (pymunk) installed where this runs.
#
#   tools/gpu_backbones_check.sh            # env: WS (the worldsim command), PY (python), MODEL, OUT, BENCH_SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-worldsim}
PY=${PY:-python}
MODEL=${MODEL:-checkpoints/pusht}
OUT=${OUT:-outputs/gpu-backbones}
SECONDS_EACH=${BENCH_SECONDS:-10}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" - "$MODEL" <<'PY'
import sys, numpy as np, torch
from worldsim.pipelines import WorldModelPipeline
frames = []
for graphs in (False, True):
    pipe = WorldModelPipeline.from_pretrained(sys.argv[1], "cuda")
    pipe.metadata["bf16"] = False  # float32: graph and eager steps must give the same frames
    if graphs:
        pipe.enable_cuda_graphs()
    start = pipe.start_frames
    action = np.random.default_rng(0).uniform(0, 512, (2, 24, 2)).astype(np.float32)
    frames.append(pipe.rollout(start["frames"][:2].numpy(), start["action"][:2].numpy(), action,
                               generator=torch.Generator().manual_seed(0)))
    if graphs:
        captured = pipe._graph is not None and pipe._graph.graph is not None
        print("graph captured:", captured, "- steps replayed:", pipe.graph_steps)
difference = int(np.abs(frames[0].astype(int) - frames[1]).max())
print("largest pixel difference, graph vs eager steps:", difference)
assert captured and pipe.graph_steps > 0 and difference == 0, "the CUDA-graph step does not match the eager step"
PY
COMMON=(--model "$MODEL" --device cuda --num-envs 64 1024 --seconds "$SECONDS_EACH" --latency-steps 100 --memory-steps)
$WS bench "${COMMON[@]}" --train-steps 10 --json "$OUT/bench-eager.json"
$WS bench "${COMMON[@]}" --train-steps 0 --cuda-graphs --json "$OUT/bench-cuda-graphs.json"
"$PY" tools/attention_modes_bench.py --device cuda --arch worldsim --grid 8 8 --frames 8 --batch-size 256 \
    --flex-compile | tee "$OUT/attention-worldsim.jsonl"
"$PY" tools/attention_modes_bench.py --device cuda --arch wan --grid 30 52 --frames 8 --batch-size 4 \
    --width 1536 --layers 4 --flex-compile | tee "$OUT/attention-wan.jsonl"
