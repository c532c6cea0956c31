#!/usr/bin/env bash
# The Meta-World world model (configs/metaworld.yaml) on one GPU: the autoencoder from scratch, then the transformer
# with a 256-clip batch, each within a minute budget that fits one 10-minute command on an H100/H200. The data comes
# from tools/collect_metaworld_data.sh (copy data/metaworld-* to the GPU machine). Outcome heads and the state
# predictor are trained afterwards on any machine (tools/train_metaworld.sh HEADS_ONLY=1 ...), since they need the
# Meta-World plug-in's labels and take minutes on a CPU.
#
#   tools/train_metaworld_gpu.sh [OUT_DIR]      # env: WS (the worldsim command), AE_MINUTES, MINUTES, STEPS, INIT_FROM,
#                                               #      AUTOENCODER (a trained one: only the transformer is trained),
#                                               #      CONFIG, RETURN_TO (a folder for the model as a split tar)
#   CONFIG=configs/metaworld-play.yaml INIT_FROM=checkpoints/metaworld tools/train_metaworld_gpu.sh   # + policy logs
#   CONFIG=configs/metaworld-excursions.yaml INIT_FROM=checkpoints/metaworld tools/train_metaworld_gpu.sh  # + excursions
# tools/prepare_metaworld_gpu.sh packs the data and the missing packages for a lent GPU machine and prints the call.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/metaworld-gpu}
WS=${WS:-worldsim}
CONFIG=${CONFIG:-configs/metaworld.yaml}
if [ -n "${AUTOENCODER:-}" ] && [ -z "${INIT_FROM:-}" ]; then  # a new transformer on a trained autoencoder
    AE="$AUTOENCODER"
    INIT=(train.init_from=null)
elif [ -z "${INIT_FROM:-}" ]; then
    $WS train-autoencoder --config "$CONFIG" autoencoder.output_dir="$OUT/autoencoder" \
        autoencoder.batch_size=128 autoencoder.steps="${AE_STEPS:-20000}" autoencoder.max_minutes="${AE_MINUTES:-2}"
    AE="$OUT/autoencoder/final"
    INIT=(train.init_from=null)
else  # a second GPU session continues a model (its autoencoder, its transformer)
    AE="$INIT_FROM/autoencoder"
    INIT=(train.init_from="$INIT_FROM")
fi
$WS train --config "$CONFIG" train.autoencoder="$AE" train.output_dir="$OUT/world_model" \
    train.batch_size=256 train.max_steps="${STEPS:-20000}" train.max_minutes="${MINUTES:-4.5}" \
    train.checkpointing_steps=1000000 train.learning_rate=5e-4 "${INIT[@]}"
echo "world model: $OUT/world_model/final"
if [ -n "${RETURN_TO:-}" ]; then  # a GPU call returns at most 8 files of 16 MiB, 2 folders deep: a split tar
    mkdir -p "$RETURN_TO"
    tar -C "$OUT/world_model" -cf - final | split -b 15m - "$RETURN_TO/world_model.tar.part-"
    cp "$OUT/world_model/train_log.jsonl" "$RETURN_TO/" 2>/dev/null || true
    ls -l "$RETURN_TO"
    parts=$(ls "$RETURN_TO"/world_model.tar.part-* | wc -l)
    [ "$parts" -le 7 ] || echo "warning: $parts parts of 15 MiB; a call returns at most 8 files, 64 MiB in all" >&2
fi
