"""Copies the datasets a GPU run trains on into one folder that fits a size budget, for sending to a GPU machine.

A call to a lent GPU machine sends at most 64 MiB, code included, so a training mix of 91 MiB (the Meta-World
training sets and the excursion sets, without their caches) has to travel in part. This keeps the first episodes
of each dataset (`worldsim.data.lerobot.copy_first_episodes`: data and video files byte for byte, no caches) with
one fraction for all of them, the largest whose copies fit ``--budget-mb``; datasets named with ``--whole`` are
copied whole and counted first. Datasets keep their folder names, so on the GPU machine ``mv .gpu/data data`` puts
them where the configs look.

    python tools/pack_gpu_data.py --out .gpu/data --budget-mb 46 \\
        --whole data/metaworld-{reach,push,pick-place,drawer-open,button-press}-v3-excursions \\
        --cut data/metaworld-{reach,push,pick-place,drawer-open,button-press}-v3

Prints each dataset's kept episodes and frames and the total size. Refuses an ``--out`` that exists, a missing
dataset, and a budget the ``--whole`` datasets (and one episode of each other dataset) already exceed. The copies are
made in a temporary folder beside ``--out`` and renamed to it at the end, so a failed run leaves nothing.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldsim.data.lerobot import DatasetError, LeRobotDataset, copy_first_episodes  # noqa: E402

MB = 1024 * 1024


def episode_bytes(dataset: LeRobotDataset) -> list[int]:
    """Bytes of the data and video files each episode adds, one int per episode in order (a file shared with an
    earlier episode counts once)."""
    seen: set[Path] = set()
    sizes = []
    for episode in range(dataset.num_episodes):
        files = dataset.episode_files(episode)
        sizes.append(sum(path.stat().st_size for path in files - seen))
        seen |= files
    return sizes


def meta_bytes(dataset: LeRobotDataset) -> int:
    """Bytes of a dataset's ``meta/`` files (each copy has about as many)."""
    return sum(path.stat().st_size for path in (dataset.root / "meta").rglob("*") if path.is_file())


def kept_episodes(num_episodes: int, fraction: float) -> int:
    """How many of ``num_episodes`` a ``fraction`` in [0, 1] keeps: rounded down, at least 1."""
    return max(1, min(num_episodes, math.floor(fraction * num_episodes + 1e-9)))


def main(argv: list[str] | None = None) -> None:
    """The command line (``argv``: its arguments; None: ``sys.argv``). Exits with a message on bad arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut", nargs="+", type=Path, default=[], help="datasets cut to their first episodes to fit")
    parser.add_argument("--whole", nargs="+", type=Path, default=[], help="datasets copied whole")
    parser.add_argument("--out", type=Path, required=True, help="the folder the copies go into (must not exist)")
    parser.add_argument("--budget-mb", type=float, required=True, help="the copies' total size, MiB")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists already; remove it or choose another")
    if not math.isfinite(args.budget_mb) or args.budget_mb <= 0:
        parser.error(f"--budget-mb must be a number > 0, got {args.budget_mb}")
    if not args.cut and not args.whole:
        parser.error("name datasets with --cut and/or --whole")
    names = [root.name for root in [*args.whole, *args.cut]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"two datasets have the same folder name, so their copies would collide: {repeated}")
    try:
        whole = [LeRobotDataset(root) for root in args.whole]
        cut = [LeRobotDataset(root) for root in args.cut]
    except DatasetError as error:
        parser.error(str(error))
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

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.partial-", dir=args.out.parent))
    try:
        print(f"{'dataset':48s} {'episodes':>12s} {'frames':>14s}")
        plan = [(dataset, dataset.num_episodes) for dataset in whole]
        plan += [(dataset, kept_episodes(len(size), low)) for dataset, size in zip(cut, sizes)]
        for dataset, keep in plan:
            copy = LeRobotDataset(copy_first_episodes(dataset.root, tmp / dataset.root.name, keep))
            print(f"{dataset.root.name:48s} {copy.num_episodes:5d} / {dataset.num_episodes:<5d} "
                  f"{copy.num_frames:6d} / {dataset.num_frames:<6d}")
        kept = sum(keep for _, keep in plan[len(whole):])
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    used = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    share = f"; the cut datasets keep {kept / sum(map(len, sizes)):.0%} of their episodes" if cut else ""
    print(f"{used / MB:.1f} MiB in {args.out} (budget {args.budget_mb} MiB{share})")


if __name__ == "__main__":
    main()
