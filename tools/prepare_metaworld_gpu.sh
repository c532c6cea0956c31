#!/usr/bin/env bash
# Gets a lent GPU machine's Meta-World training call ready, so that it can be made at once: a new transformer on the
# shipped autoencoder, trained on the training mix and the excursion sets (configs/metaworld-excursions.yaml, from
# scratch). Puts the Python packages the machine lacks as wheels in .whl/, and the autoencoder and the data, cut to
# fit the upload, in .gpu/ (both ignored by git). Then prints the call (the command to run there and the folders to
# carry), what travels, and how to unpack and evaluate what comes back.
#
#   tools/prepare_metaworld_gpu.sh
#   BUDGET_MB=40 MINUTES=6 tools/prepare_metaworld_gpu.sh
#
# Needs `make install` and the datasets of `EXCURSIONS=40 tools/collect_metaworld_data.sh`. The GPU machine has
# PyTorch, accelerate, einops, safetensors, imageio, OpenCV (which decodes the videos there, without PyAV) and
# pyarrow, but not diffusers, omegaconf or gymnasium, and it cannot reach a package index.
#
# What a call sends (the files git tracks, untracked files it does not ignore, the carried folders) may be 64 MiB
# at most. The shipped checkpoints alone are more, so the printed call is preceded by commands that take
# checkpoints/ and docs/media/ out of git's index for the call (the files stay on disk) and put them back after it.
# Nothing of checkpoints/ is needed there but the autoencoder, which travels in .gpu/.
#
# Environment variables:
#   BUDGET_MB  the data's share of the upload, MiB (default 46: the excursion sets whole, about a third of each
#              training set's episodes; with the wheels, the autoencoder and the code about 60 MiB travel)
#   MINUTES    the transformer's training minutes on the GPU (default 6.5: with building the caches, about 25 s of
#              OpenCV decoding for the default data, and saving, one 10-minute call; the shipped transformer had 4.2)
#   OUT_NAME   the run's name, runs/<OUT_NAME> there and here (default metaworld-gpu-excursions)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUDGET_MB=${BUDGET_MB:-46}
MINUTES=${MINUTES:-6.5}
OUT_NAME=${OUT_NAME:-metaworld-gpu-excursions}
TASKS="reach-v3 push-v3 pick-place-v3 drawer-open-v3 button-press-v3"

whole=() cut=()
for task in $TASKS; do
    for root in "data/metaworld-$task-excursions" "data/metaworld-$task"; do
        if [ ! -f "$root/meta/info.json" ]; then
            echo "$root is missing: record it with EXCURSIONS=40 tools/collect_metaworld_data.sh" >&2
            exit 1
        fi
    done
    whole+=("data/metaworld-$task-excursions")
    cut+=("data/metaworld-$task")
done

# the packages the machine lacks, at the versions installed here (pure-Python wheels, so any Python 3 there)
mkdir -p .whl
rm -f .whl/*.whl
packages=()
for name in diffusers omegaconf gymnasium farama-notifications; do
    packages+=("$name==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${packages[@]}" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
if [ "$(ls .whl/*.whl | wc -l)" != "${#packages[@]}" ]; then
    echo "pip download did not fetch all of ${packages[*]}; got: $(ls .whl)" >&2
    exit 1
fi
echo "wheels: $(ls .whl | tr '\n' ' ')"

rm -rf .gpu
mkdir -p .gpu
cp -r checkpoints/metaworld/autoencoder .gpu/autoencoder
$PY tools/pack_gpu_data.py --out .gpu/data --budget-mb "$BUDGET_MB" --whole "${whole[@]}" --cut "${cut[@]}"

mib() { awk '{ printf "%.1f", $1 / 1048576 }'; }
code=$(git ls-files -z -- . ':!checkpoints' ':!docs/media' | du -cb --files0-from=- | tail -1 | cut -f1)
untracked=$( (git ls-files -z -o --exclude-standard; printf '/dev/null\0') | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu | tail -1 | cut -f1)
echo "travels: $(echo "$code" | mib) MiB of code and docs, $(echo "$untracked" | mib) MiB untracked," \
     "$(echo "$carried" | mib) MiB carried (.whl, .gpu): $(echo $((code + untracked + carried)) | mib) MiB of 64"

cat <<EOF

1. Here, take the checkpoints and media out of git's index for the call (their files stay):
    git rm -r -q --cached checkpoints docs/media && printf '/checkpoints/\n/docs/media/\n' >> .git/info/exclude

2. The call (device tool \`run\`, timeout_s 600, carry [".whl", ".gpu"]):

set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:\$PWD PYTHONUNBUFFERED=1 || exit 1; rm -rf data && mv .gpu/data data && nvidia-smi -L && WS="python3 -m worldsim.cli.main" CONFIG=configs/metaworld-excursions.yaml AUTOENCODER=.gpu/autoencoder MINUTES=$MINUTES RETURN_TO=\$OUT tools/train_metaworld_gpu.sh runs/$OUT_NAME 2>&1 | grep -v -E 'it/s]|s/it]'

3. Here, put the index back, unpack the model (files_at: the folder the reply names) and evaluate it:
    git reset -q -- checkpoints docs/media && sed -i '/^\/checkpoints\/$/d; /^\/docs\/media\/$/d' .git/info/exclude
    mkdir -p runs/$OUT_NAME/world_model && cat <files_at>/world_model.tar.part-* | tar -x -C runs/$OUT_NAME/world_model
    HEADS_ONLY=1 MODEL=runs/$OUT_NAME/world_model/final tools/train_metaworld.sh   # heads and state predictor, ~25 min
    python tools/metaworld_commanded_motion.py --model runs/$OUT_NAME/world_model/final --env-id reach-v3 --states 4
    MODEL=runs/$OUT_NAME/world_model/final OUT=outputs/metaworld-rank-gpu-exc TASKS=reach-v3 tools/rank_metaworld.sh
EOF
