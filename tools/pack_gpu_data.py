"""Copies the datasets a GPU run trains on into one folder that fits a size budget, for sending to a GPU machine.

A lent GPU machine receives the working tree plus at most a few tens of MB of carried files, so a training mix of
~110 MB (the Meta-World training sets and the excursion sets) has to travel in part. This keeps the first episodes
of each dataset (`worldsim.data.lerobot.copy_first_episodes`: data and video files byte for byte, no caches) with
one fraction for all of them, the largest whose copies fit ``--budget-mb``; datasets named with ``--whole`` are
copied whole and counted first. Datasets keep their folder names, so on the GPU machine ``mv .gpu/data data`` puts
them where the configs look.

    python tools/pack_gpu_data.py --out .gpu/data --budget-mb 56 \\
        --whole data/metaworld-{reach,push,pick-place,drawer-open,button-press}-v3-excursions \\
        --cut data/metaworld-{reach,push,pick-place,drawer-open,button-press}-v3

Prints each dataset's kept episodes and frames and the total size. Refuses an ``--out`` that exists and a budget
the ``--whole`` datasets (or one episode of each other dataset) already exceed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldsim.data.lerobot import LeRobotDataset, copy_first_episodes  # noqa: E402

MB = 1024 * 1024


def episode_bytes(dataset: LeRobotDataset) -> list[int]:
    """Bytes of the data and video files each episode adds (a file shared with an earlier episode counts once)."""
    seen: set[Path] = set()
    sizes = []
    for row in dataset.episodes:
        files = {dataset.root / dataset.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                                 file_index=row["data/file_index"])}
        files.update(dataset.video_path(row["episode_index"], key) for key in dataset.video_keys)
        sizes.append(sum(path.stat().st_size for path in files - seen))
        seen |= files
    return sizes


def meta_bytes(dataset: LeRobotDataset) -> int:
    return sum(path.stat().st_size for path in (dataset.root / "meta").rglob("*") if path.is_file())


def kept_episodes(num_episodes: int, fraction: float) -> int:
    return max(1, min(num_episodes, math.floor(fraction * num_episodes + 1e-9)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut", nargs="+", type=Path, default=[], help="datasets cut to their first episodes to fit")
    parser.add_argument("--whole", nargs="+", type=Path, default=[], help="datasets copied whole")
    parser.add_argument("--out", type=Path, required=True, help="the folder the copies go into (must not exist)")
    parser.add_argument("--budget-mb", type=float, required=True, help="the copies' total size, MiB")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists already; remove it or choose another")
    if args.budget_mb <= 0:
        parser.error(f"--budget-mb must be > 0, got {args.budget_mb}")
    if not args.cut and not args.whole:
        parser.error("name datasets with --cut and/or --whole")
    names = [root.name for root in [*args.whole, *args.cut]]
    if len(set(names)) != len(names):
        parser.error(f"two datasets have the same folder name: {sorted(names)}")

    whole = [LeRobotDataset(root) for root in args.whole]
    cut = [LeRobotDataset(root) for root in args.cut]
    sizes = [episode_bytes(dataset) for dataset in cut]
    fixed = sum(sum(episode_bytes(dataset)) + meta_bytes(dataset) for dataset in whole)
    fixed += sum(meta_bytes(dataset) for dataset in cut)
    budget = args.budget_mb * MB

    def total(fraction: float) -> int:
        return fixed + sum(sum(size[:kept_episodes(len(size), fraction)]) for size in sizes)

    if total(0.0) > budget:
        parser.error(f"the --whole datasets and one episode of each other dataset take {total(0.0) / MB:.1f} MiB, "
                     f"over --budget-mb {args.budget_mb}")
    low, high = 0.0, 1.0  # the largest fraction that fits: total() grows with the fraction
    if total(high) <= budget:
        low = high
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) <= budget else (low, middle)

    args.out.mkdir(parents=True)
    print(f"{'dataset':48s} {'episodes':>12s} {'frames':>14s}")
    for dataset in whole:
        copy = LeRobotDataset(copy_first_episodes(dataset.root, args.out / dataset.root.name, dataset.num_episodes))
        print(f"{dataset.root.name:48s} {copy.num_episodes:5d} / {dataset.num_episodes:<5d} "
              f"{copy.num_frames:6d} / {dataset.num_frames:<6d}")
    kept = 0
    for dataset, size in zip(cut, sizes):
        keep = kept_episodes(len(size), low)
        kept += keep
        copy = LeRobotDataset(copy_first_episodes(dataset.root, args.out / dataset.root.name, keep))
        print(f"{dataset.root.name:48s} {copy.num_episodes:5d} / {dataset.num_episodes:<5d} "
              f"{copy.num_frames:6d} / {dataset.num_frames:<6d}")
    used = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    share = f"; the cut datasets keep {kept / sum(map(len, sizes)):.0%} of their episodes" if cut else ""
    print(f"{used / MB:.1f} MiB in {args.out} (budget {args.budget_mb} MiB{share})")


if __name__ == "__main__":
    main()
