#!/usr/bin/env bash
# A fair comparison of the two world-model architectures on PushT: worldsim's own transformer and the Wan architecture
# (diffusers WanTransformer3DModel, adapted by worldsim.models.backbones), both from scratch, at the same parameter
# count (2.09 M: 6 layers, width 128 = 4 heads x 32, MLP/FFN 4x width), the same data, autoencoder, batch, learning
# rate and wall-clock budget, trained at the same time on one CPU thread each. Then open-loop fidelity of each on the
# held-out episodes (worldsim evaluate: PSNR / SSIM per horizon against copy-last-frame). Results go to OUT and
# docs/backbones.md records them.
#
#   tools/compare_backbones.sh            # env: MINUTES (training budget per model, default 25), OUT, WS
#
# Data: data/pusht and data/pusht-heldout (the collect commands of tools/train_pusht_checkpoint.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-.venv/bin/worldsim}
OUT=${OUT:-runs/backbone-compare}
MINUTES=${MINUTES:-25}
COMMON=(dataset.root=data/pusht train.autoencoder=checkpoints/pusht/autoencoder train.batch_size=32
        train.learning_rate=5e-4 train.warmup_steps=100 train.max_steps=100000 "train.max_minutes=$MINUTES"
        train.checkpointing_steps=100000 train.mixed_precision=no rollout.num_inference_steps=10
        "train.validation_frames=8")
declare -A ARCH
ARCH[worldsim]="transformer.num_layers=6 transformer.num_attention_heads=4 transformer.attention_head_dim=32 \
transformer.rope_axes_dim=[16,8,8]"
ARCH[wan]="transformer.backbone=wan"
WAN_CONFIG="transformer.backbone_config={patch_size: [1, 2, 2], num_attention_heads: 4, attention_head_dim: 32, \
in_channels: 8, out_channels: 8, text_dim: 32, freq_dim: 256, ffn_dim: 512, num_layers: 6}"
mkdir -p "$OUT"
# one step first writes the frame and latent caches that both runs then read (two writers would race)
# shellcheck disable=SC2086
[ -d "$OUT/worldsim/final" ] || $WS train --config configs/pusht.yaml "${COMMON[@]}" ${ARCH[worldsim]} \
    train.max_steps=1 "train.output_dir=$OUT/cache-warmup" > "$OUT/cache-warmup.log" 2>&1
# both models train at once, one CPU thread each, so whatever else the machine does slows both alike
for name in worldsim wan; do
    [ -d "$OUT/$name/final" ] && continue
    extra=()
    [ "$name" = wan ] && extra=("$WAN_CONFIG")
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $WS train --config configs/pusht.yaml "${COMMON[@]}" ${ARCH[$name]} "${extra[@]}" \
        "train.output_dir=$OUT/$name" > "$OUT/$name-train.log" 2>&1 &
done
wait
for name in worldsim wan; do
    [ -e "$OUT/$name-fidelity.json" ] || $WS evaluate --model "$OUT/$name/final" --dataset data/pusht-heldout \
        --horizon 16 --context 4 --max-windows 64 --seed 0 --json "$OUT/$name-fidelity.json" > "$OUT/$name-eval.log" 2>&1
done
.venv/bin/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

from worldsim.pipelines.world_model import WorldModelPipeline

out = Path(sys.argv[1])
print("| architecture | parameters | steps | training minutes | final loss (mean of last 50 logged) | PSNR at 1 / 8 / 16 | SSIM at 1 / 8 / 16 | copy-last PSNR at 16 |")
print("|---|---|---|---|---|---|---|---|")
for name in ("worldsim", "wan"):
    log = [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()]
    pipeline = WorldModelPipeline.from_pretrained(out / name / "final")
    parameters = sum(p.numel() for p in pipeline.transformer.parameters())
    report = json.loads((out / f"{name}-fidelity.json").read_text())
    per = report["per_step"]
    pick = lambda key: " / ".join(f"{per[key]['model'][i]:.2f}" if key == "psnr" else f"{per[key]['model'][i]:.3f}"
                                  for i in (0, 7, 15))
    loss = sum(entry["loss"] for entry in log[-50:]) / len(log[-50:])
    print(f"| {name} | {parameters / 1e6:.2f} M | {log[-1]['step']} | {log[-1]['time_s'] / 60:.1f} | {loss:.4f} | "
          f"{pick('psnr')} | {pick('ssim')} | {per['psnr']['copy_last_frame'][15]:.2f} |")
EOF
