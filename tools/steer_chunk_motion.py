"""How far the predicted state moves over one steering chunk, against the real env: does the model's imagined
``observation.state`` carry contact (the object moving with the hand) at the scale a steering decision scores?

Along noise-free expert episodes of a Meta-World task, at every ``--chunk-length``-th step, the model imagines the
expert's next chunk of real actions from the last 4 real frames and states (the steering predictor's input: 3
trailing Euler steps, the state predictor seeded with the last real state). Over the chunks in which the real object
moves by more than 5 mm, it prints the mean real and predicted motion of the object and of the hand over the chunk,
and the error of their predicted end positions; dead reckoning of the hand (1 cm per unit action per step, the
control of ``tools/steer_kinematic_control.py``) is given beside the model.

    python tools/steer_chunk_motion.py --env-id drawer-open-v3 --episodes 5

Positions are Meta-World's ``observation.state[0:3]`` (hand) and ``[4:7]`` (object), in mm.
"""

from __future__ import annotations

import argparse

import numpy as np

from worldsim.embodiments.metaworld import (OBJECT_MOVED, MetaWorldEmbodiment, dead_reckon, env_id as task_env_id,
                                            task_of)
from worldsim.evaluation.rank import model_layout, state_rule_for
from worldsim.pipelines import WorldModelPipeline
from worldsim.steering import OutcomePredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/metaworld")
    parser.add_argument("--env-id", default="drawer-open-v3")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--chunk-length", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    plugin = MetaWorldEmbodiment()
    env_id = task_env_id(task_of(args.env_id))
    pipeline = WorldModelPipeline.from_pretrained(args.model)
    predictor = OutcomePredictor(pipeline, value_key="state_progress", num_inference_steps=3,
                                 timestep_spacing="trailing", seed=args.seed,
                                 state_value=state_rule_for(pipeline, plugin, None, env_id, "state_progress"))
    predictor.task = plugin.task_text(env_id)
    layout = model_layout(predictor.pipeline, predictor.embodiment)
    env = plugin.make_env(env_id)
    rows = []  # per contact chunk: real / predicted object motion, object end error, real / predicted / DR hand
    for episode in range(args.episodes):
        observation, _ = plugin.reset_start(env, args.seed + episode)
        expert = plugin.task_zoo(env_id)["expert"]
        expert.reset(1)
        frames, states, actions = [], [], []
        for _ in range(args.horizon):
            seen, frame, state = layout.from_real(observation, env)
            action = expert.act({key: np.asarray(value)[None] for key, value in seen.items()})[0]
            frames.append(frame), states.append(state), actions.append(np.asarray(action, np.float32))
            observation, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        _, frame, state = layout.from_real(observation, env)
        frames.append(frame), states.append(state)
        states, actions = np.stack(states), np.stack(actions)
        for start in range(4, len(actions) - args.chunk_length + 1, args.chunk_length):
            end = start + args.chunk_length
            real_move = states[end, 4:7] - states[start, 4:7]
            if np.linalg.norm(real_move) <= OBJECT_MOVED:
                continue
            chunk = actions[start:end][None]
            prediction = predictor.predict(np.stack(frames[start - 3:start + 1]), actions[start - 3:start], chunk,
                                           states=states[start - 3:start + 1])
            predicted = prediction.states[0, args.chunk_length - 1]
            dead_reckoned = dead_reckon(states[start], chunk)[0, 0:3]
            rows.append([np.linalg.norm(real_move), np.linalg.norm(predicted[4:7] - states[start, 4:7]),
                         np.linalg.norm(predicted[4:7] - states[end, 4:7]),
                         np.linalg.norm(states[end, 0:3] - states[start, 0:3]),
                         np.linalg.norm(predicted[0:3] - states[end, 0:3]),
                         np.linalg.norm(dead_reckoned - states[end, 0:3])])
    env.close()
    if not rows:
        raise SystemExit(f"no chunk of {args.episodes} expert episodes moved the object by {OBJECT_MOVED} m")
    mean = 1000 * np.mean(rows, axis=0)
    print(f"{args.env_id}: {len(rows)} contact chunks of {args.chunk_length} steps over {args.episodes} expert "
          f"episodes (mm, means)")
    print("| object moves, real | object moves, predicted | object end error | hand moves, real | hand end error, "
          "model | hand end error, dead reckoning |")
    print("|---|---|---|---|---|---|")
    print("| " + " | ".join(f"{value:.1f}" for value in mean) + " |")


if __name__ == "__main__":
    main()
