"""Benchmark: imagined env steps per second, one ``WorldModelEnv`` against the native vector env.

Steps the single env (``gym.make``) and ``gym.make_vec(..., vectorization_mode="vector_entry_point")`` with
``--num-envs`` sub-envs for ``--seconds`` each after a warm-up, with random actions, and reports env steps per
second (for the vector env: sub-env steps, i.e. ``num_envs`` per call) and their ratio.

    python tools/benchmark_vector_env.py --model checkpoints/pusht --num-envs 16 64 \
        --json docs/media/benchmark-vector-env.json

The figures recorded in docs/benchmarks.md come from this command.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from worldsim.utils.files import write_json
from worldsim.utils.measure import steps_per_second


def main(argv=None) -> dict:
    import gymnasium as gym

    import worldsim  # noqa: F401  (registers the env ids)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}", "model": args.model, "results": {}}
    env = gym.make("worldsim/WorldModel-v0", model=args.model)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high

    def single_step():
        env.step(rng.uniform(low, high).astype(np.float32))
        return 1

    single, count = steps_per_second(single_step, args.seconds)
    report["results"]["single"] = {"steps_per_second": single, "steps": count}
    print(f"single env: {single:.1f} steps/s ({count} steps)")
    for num_envs in args.num_envs:
        envs = gym.make_vec("worldsim/WorldModel-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                            model=env.unwrapped.pipeline)
        envs.reset(seed=0)

        def vector_step():
            envs.step(rng.uniform(low, high, (num_envs, *low.shape)).astype(np.float32))
            return num_envs

        rate, count = steps_per_second(vector_step, args.seconds)
        report["results"][f"vector_{num_envs}"] = {"steps_per_second": rate, "steps": count,
                                                   "speedup_over_single": rate / single}
        print(f"vector env, {num_envs} envs: {rate:.1f} steps/s ({count} steps), {rate / single:.2f}x the single env")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    return report


if __name__ == "__main__":
    main()
