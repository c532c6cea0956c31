"""``worldsim <verb>``: collect, train-autoencoder, train, rollout, evaluate, sensitivity, router-stats, demo.

One module per verb group, each with its ``cmd_*`` functions and a ``PARSERS`` table of the functions that register
them:

- ``worldsim.cli.data``: collect
- ``worldsim.cli.training``: train-autoencoder, train, train-heads, train-state, train-bc, train-decoder, distill,
  start-set
- ``worldsim.cli.imagine``: rollout, demo
- ``worldsim.cli.evaluate``: evaluate, sensitivity, router-stats
- ``worldsim.cli.rank``: rank, rank-report
- ``worldsim.cli.steer``: steer-eval, steer-report
- ``worldsim.cli.bench``: bench, soak

``worldsim.cli.common`` holds what several groups share (pipeline loading, the accelerate process state, the
sampler and inference arguments). The ``cmd_*`` functions import their heavy dependencies inside, so ``worldsim
--help`` starts fast.

Run configs are YAML presets under ``configs/`` plus dotted overrides (``worldsim train --config
configs/<run>.yaml train.max_steps=100``).
"""

from __future__ import annotations

import argparse
import sys

from worldsim.cli import bench, data, evaluate, imagine, rank, steer, training

# (group, verbs): the order `worldsim --help` lists the verbs in; a group may come back later in the list
_VERB_ORDER = (
    (data, ("collect",)),
    (training, ("train-autoencoder", "train")),
    (imagine, ("rollout",)),
    (evaluate, ("evaluate", "sensitivity")),
    (training, ("train-heads", "train-state", "train-bc", "train-decoder", "distill", "start-set")),
    (rank, ("rank",)),
    (steer, ("steer-eval", "steer-report")),
    (rank, ("rank-report",)),
    (evaluate, ("router-stats",)),
    (bench, ("bench", "soak")),
    (imagine, ("demo",)),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``worldsim`` parser: every verb group's subcommands, each setting ``func`` to its ``cmd_*`` function."""
    parser = argparse.ArgumentParser(prog="worldsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group, verbs in _VERB_ORDER:
        for verb in verbs:
            group.PARSERS[verb](sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"worldsim {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
