"""Benchmark: wall time of one steering decision (K candidates of H actions) vs imagining a single candidate.

Runs :class:`worldsim.steering.OutcomePredictor` from real PushT context frames for each K in ``--candidates`` (the
context encoded once per decision, the K futures in one batch), ``--repeats`` times after a warm-up, and reports the
median seconds per decision and the ratio to K = 1.

    python tools/benchmark_steering.py --model checkpoints/pusht --candidates 1 2 4 8 16 --horizon 8 \
        --json docs/media/benchmark-steering.json

The figures recorded in docs/benchmarks.md come from this command.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from worldsim.utils.files import write_json


def main(argv=None) -> dict:
    from worldsim.embodiments.pusht import PushTEmbodiment
    from worldsim.evaluation.rank import real_starts
    from worldsim.steering import OutcomePredictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    predictor = OutcomePredictor(args.model)
    frames, actions = real_starts(PushTEmbodiment(), [0], args.context, predictor.pipeline.image_size)
    rng = np.random.default_rng(0)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}", "model": args.model,
              "horizon": args.horizon, "results": {}}
    for count in args.candidates:
        candidates = rng.uniform(0, 512, (count, args.horizon, 2)).astype(np.float32)
        predictor.predict(frames[0], actions[0], candidates)  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            predictor.predict(frames[0], actions[0], candidates)
            times.append(time.perf_counter() - started)
        report["results"][str(count)] = {"median_seconds": float(np.median(times)), "times": times}
    single = report["results"][str(args.candidates[0])]["median_seconds"]
    for count in args.candidates:
        entry = report["results"][str(count)]
        entry["ratio_to_first"] = entry["median_seconds"] / single
        print(f"K={count:3d}, H={args.horizon}: {entry['median_seconds'] * 1000:.0f} ms per decision, "
              f"{entry['ratio_to_first']:.2f}x K={args.candidates[0]}")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    return report


if __name__ == "__main__":
    main()
