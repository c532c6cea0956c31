"""Measures each Meta-World task's contact pose from recorded episodes: where the tool centre (the hand plus
``TCP_OFFSET``) sits relative to the object ``observation.state[4:7]`` at the first frame where the object has moved
by more than 5 mm. Over the successful episodes of the task's own expert (every corruption setting, not the
wrong-task episodes) it prints the median offset and the spread between quartiles, in metres: the figures behind
``worldsim.embodiments.metaworld.CONTACT_OFFSETS``, which the plug-in's ``state_progress`` steers the hand to.

    python tools/measure_contact_offsets.py                       # data/metaworld-<task> of the four object tasks
    python tools/measure_contact_offsets.py --dataset data/metaworld-push-v3-heldout

The datasets come from tools/collect_metaworld_data.sh.
"""

from __future__ import annotations

import argparse

import numpy as np

from worldsim.constants import OBS_STATE
from worldsim.data.lerobot import LeRobotDataset
from worldsim.embodiments.metaworld import CONTACT_OFFSETS, OBJECT_MOVED, task_of, tool_centre


def contact_offsets(dataset: LeRobotDataset) -> np.ndarray:
    """`(M, 3)` float32: tool centre minus object position, in metres, at the first moved frame of each of the M
    successful own-task expert episodes of ``dataset`` in which the object moves. Raises ValueError when none do, and
    KeyError when the dataset has no ``observation.state`` or ``next.success`` column."""
    states = dataset.columns[OBS_STATE]
    success = dataset.columns["next.success"]
    offsets = []
    for episode, policy in enumerate(dataset.episode_policies):
        if "wrong_task=" in policy and "wrong_task=None" not in policy:  # another task's expert: not this contact
            continue
        frames = slice(dataset.episode_from[episode], dataset.episode_to[episode])
        state = states[frames]
        moved = np.linalg.norm(state[:, 4:7] - state[0, 4:7], axis=1) > OBJECT_MOVED
        if not success[frames].any() or not moved.any():
            continue
        first = int(np.argmax(moved))
        offsets.append(tool_centre(state[first]) - state[first, 4:7])
    if not offsets:
        raise ValueError(f"{dataset.root}: no successful own-task expert episode moves the object by {OBJECT_MOVED} m")
    return np.asarray(offsets, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append",
                        help="a Meta-World LeRobot dataset (repeatable; default: data/metaworld-<task> of "
                             + ", ".join(CONTACT_OFFSETS) + ")")
    args = parser.parse_args()
    roots = args.dataset or [f"data/metaworld-{task}" for task in CONTACT_OFFSETS]
    print("| dataset | episodes | median offset x, y, z (m) | quartile spread x, y, z (m) | CONTACT_OFFSETS |")
    print("|---|---|---|---|---|")
    for root in roots:
        dataset = LeRobotDataset(root)
        if dataset.env_id is None:
            raise SystemExit(f"{root}: meta/info.json names no env_id, so its task is unknown")
        task = task_of(dataset.env_id)
        offsets = contact_offsets(dataset)
        spread = np.percentile(offsets, 75, axis=0) - np.percentile(offsets, 25, axis=0)
        shipped = CONTACT_OFFSETS.get(task)
        print(f"| {root} | {len(offsets)} | {_vector(np.median(offsets, axis=0))} | {_vector(spread)} | "
              f"{'-' if shipped is None else _vector(shipped)} |")


def _vector(values: np.ndarray) -> str:
    return ", ".join(f"{value:+.3f}" for value in values)


if __name__ == "__main__":
    main()
