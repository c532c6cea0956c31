#!/usr/bin/env bash
# Gets a lent GPU machine's Meta-World training call ready, so that the call can be made at once: the Python packages
# the machine lacks as wheels in .whl/, and the training data, cut to fit the upload, in .gpu/data/ (both ignored by
# git). Then prints the call: the command to run there and the folders to carry, and how to unpack what comes back.
#
#   tools/prepare_metaworld_gpu.sh            # the excursion fine-tune of checkpoints/metaworld (the default)
#   BUDGET_MB=40 tools/prepare_metaworld_gpu.sh
#
# Needs `make install` and the datasets of `EXCURSIONS=40 tools/collect_metaworld_data.sh`. The GPU machine has
# PyTorch, accelerate, einops, safetensors, imageio, OpenCV (which decodes the videos there, without PyAV) and
# pyarrow, but not diffusers, omegaconf or gymnasium, and it cannot reach a package index.
#
# Environment variables:
#   BUDGET_MB  the data's share of the upload, MiB (default 48, 55 with the wheels: the excursion sets whole,
#              a third of each training set's episodes; the GPU run of checkpoints/metaworld was sent 52 MB)
#   MINUTES    training minutes on the GPU (default 5, so that cache building, training and saving fit one
#              10-minute call)
#   OUT_NAME   the run's name, runs/<OUT_NAME> here and there (default metaworld-gpu-excursions)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUDGET_MB=${BUDGET_MB:-48}
MINUTES=${MINUTES:-5}
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

# the packages the machine lacks, at the versions installed here, for its Python 3.12 (pure-Python wheels)
mkdir -p .whl
rm -f .whl/*.whl
packages=()
for name in diffusers omegaconf gymnasium farama-notifications importlib-metadata; do
    version=$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    packages+=("$name==$version")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${packages[@]}"
echo "wheels: $(ls .whl | tr '\n' ' ')"

rm -rf .gpu
$PY tools/pack_gpu_data.py --out .gpu/data --budget-mb "$BUDGET_MB" --whole "${whole[@]}" --cut "${cut[@]}"

cat <<EOF

The call (device tool \`run\`, timeout_s 600, carry [".whl", ".gpu"]):

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:\$PWD PYTHONUNBUFFERED=1 || exit 1; rm -rf data && mv .gpu/data data && nvidia-smi -L && WS="python3 -m worldsim.cli.main" CONFIG=configs/metaworld-excursions.yaml INIT_FROM=checkpoints/metaworld MINUTES=$MINUTES RETURN_TO=\$OUT tools/train_metaworld_gpu.sh runs/$OUT_NAME 2>&1 | grep -v -E 'it/s]|s/it]'

Then, here (files_at: the folder the reply names):

mkdir -p runs/$OUT_NAME/world_model && cat <files_at>/world_model.tar.part-* | tar -x -C runs/$OUT_NAME/world_model
STATE_ONLY=1 MODEL=runs/$OUT_NAME/world_model/final tools/train_metaworld.sh     # the state predictor, 23 min
python tools/metaworld_commanded_motion.py --model runs/$OUT_NAME/world_model/final --env-id reach-v3 --states 4
MODEL=runs/$OUT_NAME/world_model/final OUT=outputs/metaworld-rank-gpu-exc TASKS=reach-v3 tools/rank_metaworld.sh

If the call is refused because the working tree is over 64 MiB, take the other models out of git's index for the
call (their files stay) and put them back after it:
    git rm -r -q --cached checkpoints/joint checkpoints/pusht && printf '/checkpoints/joint/\n/checkpoints/pusht/\n' >> .git/info/exclude
    ... the call ...
    git reset -q && sed -i '/^\/checkpoints\/\(joint\|pusht\)\/$/d' .git/info/exclude
EOF
