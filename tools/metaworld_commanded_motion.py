"""Does the imagined hand go where the actions send it? The Meta-World model's predicted hand against the real one,
under constant commands (open loop) and under the task's expert (closed loop).

1. **Open loop.** From ``--states`` real starts (4 context frames, as ``worldsim rank`` starts), the hand is commanded
   a constant action of each ``--magnitudes`` value along +x, -x, +y and -y for ``--steps`` steps (gripper 0), in
   the real env and in imagination (the rank's sampler: 3 trailing Euler steps). Per magnitude it prints the real and
   the imagined displacement along the commanded axis after the last step and the mean Euclidean error of the
   imagined hand, in mm. Meta-World moves the hand's target 1 cm per unit of action per step, so a faithful model
   moves its hand in proportion to the magnitude.
2. **Closed loop.** The task's noise-free expert (the plug-in's zoo) runs ``--horizon`` steps from the same starts,
   reading the real state in the real env and the predicted state in imagination. It prints, real and imagined, the
   smallest distance of the success rule's part to the goal over the episode (reach: the tool centre; the rule's
   radius beside it) and the success rate by that rule, so the margin by which the real expert succeeds can be read
   against the imagined error.

    python tools/metaworld_commanded_motion.py --env-id reach-v3 --states 4 --json outputs/commanded-motion.json

Positions are Meta-World's ``observation.state[0:3]`` (the hand), in mm; the imagined hand is the state predictor's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from worldsim.embodiments.metaworld import (HAND_STEP, STATE_SUCCESS_RULES, MetaWorldEmbodiment, env_id as task_env_id,
                                            goal_distance, task_of)
from worldsim.evaluation.rank import model_layout, real_start_clips, run_imagined, run_real, state_rule_for
from worldsim.pipelines import WorldModelPipeline

#: the commanded directions of the open-loop part: unit vectors of the hand's x and y (m per step per unit action)
DIRECTIONS = {"+x": (1.0, 0.0, 0.0), "-x": (-1.0, 0.0, 0.0), "+y": (0.0, 1.0, 0.0), "-y": (0.0, -1.0, 0.0)}


class _Recorder:
    """A batched policy that records the ``observation.state`` it is shown, then acts as ``act(states) -> (N, 4)``.
    It reads the state only, so the real env runs without rendering."""

    input_keys = ("observation.state",)

    def __init__(self, act):
        self._act, self.states = act, []

    def reset(self, num_envs: int = 1) -> None:
        self.states = []
        if hasattr(self._act, "reset"):
            self._act.reset(num_envs)

    def act(self, observation):
        self.states.append(np.array(observation["observation.state"], dtype=np.float32))
        return self._act.act(observation) if hasattr(self._act, "act") else self._act(observation)


def _run_both(pipeline, plugin, env_id, make_policy, seeds, clips, horizon, sampler):
    """``(real (S, horizon, 39), imagined (S, horizon, 39))``: the states each policy saw; ``make_policy(indices)``
    gives a batched policy for the starts ``indices``."""
    layout = model_layout(pipeline, plugin.name)
    rule = state_rule_for(pipeline, plugin, None, env_id, "state_success")
    recorder = _Recorder(make_policy(np.arange(len(seeds))))
    run_imagined(pipeline, recorder, clips["frames"], clips["actions"], horizon, seed=0, batch_size=len(seeds),
                 sampler=sampler, states=clips["states"], task=plugin.task_text(env_id),
                 value_key="state_success", state_value=rule)
    imagined = np.stack(recorder.states, axis=1)
    real = []
    for index, seed in enumerate(seeds):
        recorder = _Recorder(make_policy(np.array([index])))
        run_real(plugin, recorder, [seed], 4, horizon, layout, keep_frames=0, env_id=env_id)
        states = np.concatenate(recorder.states)
        real.append(np.concatenate([states, np.repeat(states[-1:], horizon - len(states), axis=0)]))
    return np.stack(real), imagined


def _constant(commands: np.ndarray):
    """A policy playing ``commands[i]`` (a `(4,)` action) in env ``i`` at every step."""
    return lambda observation: commands[: len(observation["observation.state"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/metaworld")
    parser.add_argument("--env-id", default="reach-v3")
    parser.add_argument("--states", type=int, default=4, help="real starts (seeds 0 ..)")
    parser.add_argument("--magnitudes", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=30, help="steps of each constant command")
    parser.add_argument("--horizon", type=int, default=100, help="steps of the expert")
    parser.add_argument("--action-guidance-scale", type=float, default=1.0)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    plugin = MetaWorldEmbodiment()
    env_id = task_env_id(task_of(args.env_id))
    pipeline = WorldModelPipeline.from_pretrained(args.model)
    sampler = pipeline.sampler_settings(num_inference_steps=3, timestep_spacing="trailing",
                                        action_guidance_scale=args.action_guidance_scale)
    layout = model_layout(pipeline, plugin.name)
    seeds = list(range(args.states))
    report = {"model": args.model, "env_id": env_id, "states": args.states, "steps": args.steps,
              "action_guidance_scale": args.action_guidance_scale, "open_loop": [], "closed_loop": None}

    # open loop: every (start, direction, magnitude) is one imagined env of one batch
    cases = [(seed, name, magnitude) for magnitude in args.magnitudes for name in DIRECTIONS for seed in seeds]
    case_seeds = [seed for seed, _, _ in cases]
    commands = np.zeros((len(cases), 4), dtype=np.float32)
    for row, (_, name, magnitude) in enumerate(cases):
        commands[row, :3] = magnitude * np.asarray(DIRECTIONS[name])
    clips = real_start_clips(plugin, case_seeds, 4, layout, env_id)
    real, imagined = _run_both(pipeline, plugin, env_id, lambda rows: _constant(commands[rows]), case_seeds, clips,
                               args.steps, sampler)
    # the state each policy saw at its last step is the state after steps - 1 commands
    along = lambda states: np.einsum("nc,nc->n", states[:, -1, 0:3] - states[:, 0, 0:3], commands[:, :3]) / (
        np.linalg.norm(commands[:, :3], axis=1))
    error = np.linalg.norm(imagined[:, -1, 0:3] - real[:, -1, 0:3], axis=1)
    print(f"{env_id}: a constant command for {args.steps} steps from {args.states} starts, 4 directions (mm; "
          f"commanded: {1000 * HAND_STEP:.0f} mm per unit per step)")
    names = np.array([name for _, name, _ in cases])
    print("| magnitude | commanded | real, along the command | imagined, along the command | imagined, by direction "
          f"({' / '.join(DIRECTIONS)}) | imagined hand error |")
    print("|---|---|---|---|---|---|")
    for magnitude in args.magnitudes:
        rows = np.abs(commands[:, :3]).max(axis=1) == np.float32(magnitude)
        entry = {"magnitude": magnitude, "commanded_mm": 1000 * HAND_STEP * magnitude * (args.steps - 1),
                 "real_mm": float(1000 * along(real)[rows].mean()),
                 "imagined_mm": float(1000 * along(imagined)[rows].mean()),
                 "imagined_by_direction_mm": {name: float(1000 * along(imagined)[rows & (names == name)].mean())
                                              for name in DIRECTIONS},
                 "imagined_error_mm": float(1000 * error[rows].mean())}
        report["open_loop"].append(entry)
        by_direction = " / ".join(f"{value:.1f}" for value in entry["imagined_by_direction_mm"].values())
        print(f"| {magnitude:g} | {entry['commanded_mm']:.1f} | {entry['real_mm']:.1f} | {entry['imagined_mm']:.1f} | "
              f"{by_direction} | {entry['imagined_error_mm']:.1f} |")

    # closed loop: the expert on the predicted state
    task = task_of(env_id)
    if task in STATE_SUCCESS_RULES:
        radius = STATE_SUCCESS_RULES[task][2]
        clips = real_start_clips(plugin, seeds, 4, layout, env_id)
        real, imagined = _run_both(pipeline, plugin, env_id, lambda rows: plugin.task_zoo(env_id)["expert"], seeds,
                                   clips, args.horizon, sampler)

        def distance(states):  # (S, T, 39) -> (S,): the closest approach over the episode
            return goal_distance(states.reshape(-1, 39), env_id)[1].reshape(states.shape[:2]).min(axis=1)

        real_d, imagined_d = 1000 * distance(real), 1000 * distance(imagined)
        end_error = 1000 * np.linalg.norm(imagined[:, -1, 0:3] - real[:, -1, 0:3], axis=1)
        report["closed_loop"] = {"radius_mm": 1000 * radius, "real_min_mm": real_d.tolist(),
                                 "imagined_min_mm": imagined_d.tolist(), "hand_end_error_mm": end_error.tolist(),
                                 "real_success": float(np.mean(real_d < 1000 * radius)),
                                 "imagined_success": float(np.mean(imagined_d < 1000 * radius))}
        print(f"\nthe noise-free expert, {args.horizon} steps: smallest distance of the success rule's part to the goal "
              f"(mm; success under {1000 * radius:.0f}), and the imagined hand's distance from the real one at the end")
        print("| start | real | imagined | hand end error |")
        print("|---|---|---|---|")
        for seed, a, b, c in zip(seeds, real_d, imagined_d, end_error):
            print(f"| {seed} | {a:.1f} | {b:.1f} | {c:.1f} |")
        print(f"| success rate, mean | {report['closed_loop']['real_success']:.2f} | "
              f"{report['closed_loop']['imagined_success']:.2f} | {end_error.mean():.1f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
