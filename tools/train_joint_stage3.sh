#!/usr/bin/env bash
# Stage 3 of the joint model (checkpoints/joint), then its MiniGrid and Breakout outcome heads and the MiniGrid
# figures of docs/results.md. On a 2-core CPU: about 10 minutes of data and latents, 35 of training (its time
# limit), 10 of heads and 15 of measurements. Needs checkpoints/joint (the starting point).
#   tools/train_joint_stage3.sh                 # everything
#   SKIP_TRAINING=1 tools/train_joint_stage3.sh # heads and figures of an existing run
set -euo pipefail
cd "$(dirname "$0")/.."
WS=.venv/bin/worldsim
MODEL=${MODEL:-runs/joint-minigrid/world_model/final}

tools/collect_joint_data.sh   # stage 1's three datasets and the MiniGrid zoo's (configs/joint-minigrid.yaml)

if [ "${SKIP_TRAINING:-0}" != 1 ]; then
    $WS train --config configs/joint-minigrid.yaml
fi

# outcome heads per embodiment (the PushT heads carry over from stage 2): MiniGrid success = the agent on the goal,
# with a value head for steering; Breakout reward per brick
$WS train-heads --model "$MODEL" --embodiment minigrid --dataset data/minigrid-zoo --dataset data/minigrid \
    --val-dataset data/minigrid-zoo-heldout --steps 3000 --value-discount 0.9
$WS train-heads --model "$MODEL" --embodiment breakout --dataset data/breakout --val-dataset data/breakout-heldout \
    --steps 3000

mkdir -p docs/media outputs
# MiniGrid: open-loop fidelity on held-out episodes, ranking of the 12-policy zoo, steering of the noisy planner
$WS evaluate --model "$MODEL" --embodiment minigrid --dataset data/minigrid-zoo-heldout --horizon 12 --context 2 \
    --starts-per-episode 2 --json docs/media/joint-minigrid-h12.json
$WS rank --model "$MODEL" --embodiment minigrid --num-states 50 --horizon 16 --context 2 \
    --json docs/media/rank-minigrid.json --report outputs/rank-minigrid
$WS steer-eval --model "$MODEL" --embodiment minigrid --num-states 50 --candidates 1 4 8 --horizon 16 \
    --chunk-length 4 --context 2 --oracle-follow 8 --out outputs/steer-minigrid
cp outputs/steer-minigrid/report.json docs/media/steer-minigrid-stage3.json
# PushT after stage 3, next to stage 2's figures (10 linspace steps, the autoencoder's decoder)
$WS evaluate --model "$MODEL" --embodiment pusht --dataset data/pusht-heldout --horizon 32 \
    --num-inference-steps 10 --timestep-spacing linspace --decoder full --json docs/media/joint-pusht-h32-stage3.json
