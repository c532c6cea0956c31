"""Where the hand goes in Meta-World recordings: how often it moves back toward the arm's base or sideways.

For each dataset folder (a LeRobot layout written by ``worldsim collect``), reads every frame's ``observation.state``
(the hand at ``[0:3]``, metres) and ``action`` and prints one table row:

- the mean y command (``action[:, 1]``; +y points away from the base, toward the objects);
- the share of steps that move the hand back (its y falls by more than 2 mm within an episode);
- the share of steps that move it sideways (its x changes by more than 2 mm);
- the share of frames with the hand more than 10 cm to either side (``|x| > 0.1`` m).

A world model learns an action's effect only in the directions its data shows, so these shares say which commands
it has seen (docs/results.md, "Fine-tuning on excursions").

    python tools/metaworld_data_coverage.py data/metaworld-reach-v3 data/metaworld-reach-v3-excursions
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from worldsim.data.lerobot import LeRobotDataset


def main() -> None:
    """Prints the table of the module docstring for the datasets named on the command line.

    Raises:
        DatasetError: a missing or inconsistent dataset folder (:class:`~worldsim.data.lerobot.LeRobotDataset`).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    args = parser.parse_args()
    print("| dataset | frames | mean y command | steps back | steps sideways | hand more than 10 cm sideways |")
    print("|---|---|---|---|---|---|")
    for root in args.datasets:
        dataset = LeRobotDataset(root)  # raises DatasetError on a missing or inconsistent folder
        state, action, episode = dataset.columns["observation.state"], dataset.action, dataset.episode_index
        within = episode[1:] == episode[:-1]  # steps inside one episode
        dy, dx = np.diff(state[:, 1])[within], np.diff(state[:, 0])[within]
        print(f"| {root.name} | {len(state):,} | {action[:, 1].mean():+.2f} | {np.mean(dy < -0.002):.1%} | "
              f"{np.mean(np.abs(dx) > 0.002):.1%} | {np.mean(np.abs(state[:, 0]) > 0.1):.1%} |")


if __name__ == "__main__":
    main()
