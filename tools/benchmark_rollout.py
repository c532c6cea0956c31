"""Benchmark: KV-cached streaming rollout against full history recomputation, and rollout memory vs length.

Measures, on a saved pipeline:

1. speed: seconds per generated frame with the cache and with full recomputation, both attending to the same
   ``--window`` frames (history + the new frame), after a warm-up (one step of B rollouts makes B frames); and the largest pixel difference between the two
   paths' frames while the history still fits the window (the paths are equal there by construction);
2. memory: peak resident memory of a ``--short``-step and a ``--long``-step cached rollout, each in a fresh process
   (``VmHWM``, see ``worldsim.utils.measure.peak_resident_mib``; on CUDA ``torch.cuda.max_memory_allocated``), and their ratio;
3. optionally (``--very-long``) that a rollout of that many steps runs, with its time per frame.

    python tools/benchmark_rollout.py --model checkpoints/pusht --window 32 --json docs/media/benchmark-rollout.json

The figures recorded in docs/benchmarks.md come from this command.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from worldsim.utils.files import write_json
from worldsim.utils.measure import peak_resident_mib


def load(model: str, window: int, device: str):
    from worldsim.pipelines.world_model import WorldModelPipeline

    pipeline = WorldModelPipeline.from_pretrained(model, device=device)
    pipeline.metadata.update(window_size=window, local_attn_size=window, sink_size=0)
    return pipeline


def inputs(pipeline, batch: int, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = pipeline.image_size
    frames = rng.integers(0, 255, (batch, 4, size, size, 3), dtype=np.uint8)
    if pipeline.start_frames is not None:  # real start frames look like the data
        start = pipeline.start_frames["frames"].numpy()
        frames = np.repeat(start[:1, -1:], 4, axis=1).repeat(batch, axis=0)
    low, high = pipeline.normalizer.minimum, pipeline.normalizer.maximum
    context_action = rng.uniform(low, high, (batch, 3, pipeline.action_dim)).astype(np.float32)
    action = rng.uniform(low, high, (batch, steps, pipeline.action_dim)).astype(np.float32)
    return frames, context_action, action


def time_per_frame(pipeline, use_cache: bool, batch: int, steps: int, warmup: int) -> float:
    """Seconds per generated frame (one step of ``batch`` rollouts makes ``batch`` frames)."""
    frames, context_action, action = inputs(pipeline, batch, warmup + steps)
    generator = torch.Generator().manual_seed(0)
    state = pipeline.encode_context(frames, context_action, generator=generator, use_cache=use_cache)
    for s in range(warmup):
        state = pipeline.step(state, action[:, s], generator=generator)
    start = time.perf_counter()
    for s in range(warmup, warmup + steps):
        state = pipeline.step(state, action[:, s], generator=generator)
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (steps * batch)  # seconds per generated frame


def memory_child(args) -> None:
    """Runs one cached rollout of ``args.steps`` steps keeping no frames; prints JSON with its peak memory."""
    pipeline = load(args.model, args.window, args.device)
    frames, context_action, action = inputs(pipeline, args.batch_size, 1)
    generator = torch.Generator().manual_seed(0)
    state = pipeline.encode_context(frames, context_action, generator=generator)
    if pipeline.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_resident_mib()
    start = time.perf_counter()
    for _ in range(args.steps):
        state = pipeline.step(state, action[:, 0], generator=generator,
                              num_inference_steps=args.num_inference_steps)
    elapsed = time.perf_counter() - start
    result = {"steps": args.steps, "peak_rss_mib": peak_resident_mib(),
              "rss_after_load_mib": baseline, "seconds_per_frame": elapsed / args.steps,
              "cache_mib": state.cache.nbytes() / 2**20, "frames_seen": state.cache.frames_seen}
    if pipeline.device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def run_child(args, steps: int, num_inference_steps: int | None) -> dict:
    command = [sys.executable, __file__, "--child-steps", str(steps), "--model", args.model, "--window",
               str(args.window), "--batch-size", str(args.batch_size), "--device", args.device]
    if num_inference_steps:
        command += ["--num-inference-steps", str(num_inference_steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--window", type=int, default=32, help="frames attended to, the new one included")
    parser.add_argument("--batch-size", type=int, default=1, help="rollouts stepped together")
    parser.add_argument("--steps", type=int, default=20, help="timed frames per path")
    parser.add_argument("--warmup", type=int, default=None, help="frames before timing (default: window - 1, so "
                        "both paths attend to a full window)")
    parser.add_argument("--short", type=int, default=200, help="steps of the short memory rollout")
    parser.add_argument("--long", type=int, default=2000, help="steps of the long memory rollout")
    parser.add_argument("--memory-inference-steps", type=int, default=2,
                        help="denoising steps per frame in the memory rollouts (memory does not depend on it)")
    parser.add_argument("--very-long", type=int, default=0, help="also run a rollout of this many steps")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory rollouts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--num-inference-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_steps:
        args.steps = args.child_steps
        memory_child(args)
        return {}

    pipeline = load(args.model, args.window, args.device)
    warmup = args.window - 1 if args.warmup is None else args.warmup
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {torch.get_num_threads()} threads "
              f"{args.device}", "torch": torch.__version__, "model": args.model, "window": args.window,
              "batch_size": args.batch_size, "num_inference_steps": pipeline.metadata.get("num_inference_steps")}

    # 1. equality while the history fits the window (4 context frames + window - 5 new ones)
    frames, context_action, action = inputs(pipeline, args.batch_size, args.window - 5)
    outputs = [pipeline.rollout(frames, context_action, action, use_cache=use_cache,
                                generator=torch.Generator().manual_seed(0)) for use_cache in (True, False)]
    difference = np.abs(outputs[0].astype(int) - outputs[1].astype(int))
    report["equal_frames"] = {"frames_compared": int(action.shape[1]), "max_abs_pixel_difference": int(difference.max()),
                              "mean_abs_pixel_difference": float(difference.mean())}
    print(f"cached vs full, first {action.shape[1]} frames: max |diff| {difference.max()} grey levels, "
          f"mean {difference.mean():.4f}")

    # 2. speed at a full window
    cached = time_per_frame(pipeline, True, args.batch_size, args.steps, warmup)
    full = time_per_frame(pipeline, False, args.batch_size, args.steps, warmup)
    report["speed"] = {"cached_s_per_frame": cached, "full_s_per_frame": full, "speedup": full / cached}
    print(f"window {args.window}, batch {args.batch_size}: cached {cached * 1000:.1f} ms/frame, "
          f"full recomputation {full * 1000:.1f} ms/frame, speed-up {full / cached:.2f}x")

    # 3. memory vs rollout length, each in a fresh process
    if args.no_memory:
        return _write(report, args.json)
    short = run_child(args, args.short, args.memory_inference_steps)
    long = run_child(args, args.long, args.memory_inference_steps)
    key = "cuda_peak_mib" if "cuda_peak_mib" in short else "peak_rss_mib"
    report["memory"] = {"short": short, "long": long, "measure": key, "ratio": long[key] / short[key]}
    print(f"peak memory ({key}): {args.short} steps {short[key]:.1f} MiB, {args.long} steps {long[key]:.1f} MiB, "
          f"ratio {long[key] / short[key]:.3f}; cache {long['cache_mib']:.2f} MiB")
    if args.very_long:
        very_long = run_child(args, args.very_long, args.memory_inference_steps)
        report["memory"]["very_long"] = very_long
        print(f"{args.very_long} steps ran: {very_long['seconds_per_frame'] * 1000:.1f} ms/frame, "
              f"peak {very_long[key]:.1f} MiB")
    return _write(report, args.json)


def _write(report: dict, path: str | None) -> dict:
    if path:
        print(f"wrote {write_json(path, report)}")
    return report


if __name__ == "__main__":
    main()
