#!/usr/bin/env bash
# The datasets of the joint PushT + Breakout + MiniGrid model (each recorded once; an existing folder is kept).
# Used by tools/train_joint_checkpoint.sh (stages 1-2) and tools/train_joint_stage3.sh (stage 3).
set -euo pipefail
cd "$(dirname "$0")/.."
WS=.venv/bin/worldsim

[ -d data/pusht-wander ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 200 \
    --out data/pusht-wander --seed 200000 --policy-kwargs "noise_std=[5,20,40]" "wander_prob=[0.1,0.3]"
[ -d data/pusht-heldout ] || $WS collect --env gym_pusht/PushT-v0 --policy pusht-scripted --episodes 50 \
    --out data/pusht-heldout --seed 100000 --policy-kwargs noise_std=10 wander_prob=0.03 reaction_delay=2
[ -d data/breakout ] || $WS collect --env ALE/Breakout-v5 --policy random --episodes 150 --max-steps 300 --seed 0 \
    --out data/breakout
[ -d data/breakout-heldout ] || $WS collect --env ALE/Breakout-v5 --policy random --episodes 20 --max-steps 300 \
    --seed 100000 --out data/breakout-heldout
[ -d data/minigrid ] || $WS collect --env MiniGrid-Empty-8x8-v0 --policy random --episodes 300 --max-steps 128 \
    --seed 0 --out data/minigrid
[ -d data/minigrid-heldout ] || $WS collect --env MiniGrid-Empty-8x8-v0 --policy random --episodes 30 \
    --max-steps 128 --seed 100000 --out data/minigrid-heldout
# stage 3: the MiniGrid plug-in's zoo from random starts (the goal frame recorded), and a held-out setting no
# training episode used (the planner with 75% random actions, more idle actions, new seeds)
[ -d data/minigrid-zoo ] || $WS collect --env MiniGrid-Empty-8x8-v0 --policy minigrid-zoo --episodes 800 \
    --max-steps 48 --start minigrid-random-start --seed 0 --out data/minigrid-zoo
[ -d data/minigrid-zoo-heldout ] || $WS collect --env MiniGrid-Empty-8x8-v0 --policy minigrid-zoo \
    --policy-kwargs member=planner-eps0.75 idle_prob=0.1 --episodes 40 --max-steps 48 \
    --start minigrid-random-start --seed 100000 --out data/minigrid-zoo-heldout
