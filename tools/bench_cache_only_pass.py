"""A/B benchmark of the cache-only pass (`forward_cached(..., return_output=False)`).

After a frame is generated, the cached path re-encodes it into the KV cache. That pass needs only each layer's keys
and values, so its last block skips the attention output, the adapter and the MLP. This script times
`WorldModelPipeline.step` on one batch of rollouts with the cache-only pass, then with every pass computing its full
output (the behaviour before it existed), alternating the two `--repeats` times in one process so the machine's
state is shared. It prints imagined frames per second, median over the repeats.

    python tools/bench_cache_only_pass.py --model checkpoints/pusht --num-envs 64 --quantize int8
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from worldsim.models.world_model import WorldModelTransformer
from worldsim.pipelines import WorldModelPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="imagined frames per rollout and timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-inference-steps", type=int, default=2)
    parser.add_argument("--timestep-spacing", default="trailing")
    parser.add_argument("--decoder", default="light")
    parser.add_argument("--quantize", default=None, help="int8 or int8+decoder (CPU)")
    args = parser.parse_args()

    pipeline = WorldModelPipeline.from_pretrained(args.model)
    pipeline.set_decoder(args.decoder)
    if args.quantize:
        pipeline.quantize(args.quantize)
    frames, actions = pipeline.start_set()
    rows = np.arange(args.num_envs) % len(frames)
    frames, actions = np.asarray(frames)[rows], np.asarray(actions)[rows]
    action = np.full((args.num_envs, pipeline.action_dim), 256.0, np.float32)
    cache_only = WorldModelTransformer.forward_cached

    def full_output(self, *inputs, return_output=True, **kwargs):
        return cache_only(self, *inputs, **kwargs)

    def frames_per_second(steps: int) -> float:
        generator = torch.Generator().manual_seed(0)
        state = pipeline.encode_context(frames, actions, generator=generator)
        started = time.perf_counter()
        for _ in range(steps):
            state = pipeline.step(state, action, args.num_inference_steps, generator=generator,
                                  timestep_spacing=args.timestep_spacing)
        return steps * args.num_envs / (time.perf_counter() - started)

    frames_per_second(5)  # warm-up
    results = {"cache_only_pass": [], "full_pass": []}
    try:
        for _ in range(args.repeats):
            for mode in results:
                WorldModelTransformer.forward_cached = cache_only if mode == "cache_only_pass" else full_output
                results[mode].append(frames_per_second(args.steps))
    finally:
        WorldModelTransformer.forward_cached = cache_only
    summary = {mode: float(np.median(values)) for mode, values in results.items()}
    print(json.dumps({"settings": vars(args), "frames_per_second": results, "median": summary,
                      "speedup": summary["cache_only_pass"] / summary["full_pass"]}, indent=1))


if __name__ == "__main__":
    main()
