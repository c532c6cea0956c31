"""Two-step samplers with the second step's noise level moved: is 0.5 (``trailing``) the right place?

A 2-step Euler sampler of flow matching evaluates the model at sigma 1 and at one more sigma ``s``, then steps to 0.
``trailing`` spacing puts ``s`` at 0.5. This script runs the open-loop fidelity evaluation of ``worldsim evaluate``
(same held-out windows, same seed, the light decoder) once per ``s`` and prints agent error, block error and PSNR,
so a 2-step sampler can be tuned without a new sampler option. It sets the sigmas by replacing the pipeline's
``set_timesteps`` on this one instance (an experiment tool; the library's samplers are ``linspace`` and
``trailing``).

    python tools/second_sigma_sweep.py --model checkpoints/pusht --dataset data/pusht-heldout \\
        --sigmas 0.5 0.3 0.7 0.2 --json docs/media/second-sigma-sweep.json
"""

from __future__ import annotations

import argparse
import time

from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.fidelity import evaluate_fidelity
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.utils.files import write_json


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--dataset", default="data/pusht-heldout")
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--starts-per-episode", type=int, default=2)
    parser.add_argument("--decoder", choices=["full", "light"], default="light")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 0.3, 0.7],
                        help="second-step noise levels, each in (0, 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    bad = [sigma for sigma in args.sigmas if not 0.0 < sigma < 1.0]
    if bad:
        parser.error(f"--sigmas must lie in (0, 1), got {bad}")

    pipeline = WorldModelPipeline.from_pretrained(args.model)
    pipeline.set_decoder(args.decoder)
    dataset = LeRobotDataset(args.dataset)
    rows = []
    for sigma in args.sigmas:
        def two_steps(num_inference_steps=None, timestep_spacing=None, second=sigma):
            pipeline.scheduler.set_timesteps(sigmas=[1.0, second], device=pipeline.device)
            return pipeline.scheduler.timesteps

        pipeline.set_timesteps = two_steps
        started = time.perf_counter()
        report, _, _ = evaluate_fidelity(pipeline, dataset, args.horizon, args.context, args.starts_per_episode,
                                         num_inference_steps=2, seed=args.seed, progress=False)
        summary = report["summary"]
        rows.append({"second_sigma": sigma, "agent_error": summary["agent_error/model"],
                     "block_error": summary["block_error/model"], "psnr": summary["psnr/model"],
                     "ssim": summary["ssim/model"], "num_windows": report["num_windows"],
                     "wall_seconds": time.perf_counter() - started})
        print(f"sigmas [1.0, {sigma}]: agent error {rows[-1]['agent_error']:.1f} px, block error "
              f"{rows[-1]['block_error']:.1f} px, PSNR {rows[-1]['psnr']:.2f} dB", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "dataset": args.dataset,
              "horizon": args.horizon, "context": args.context, "decoder": args.decoder, "seed": args.seed,
              "rows": rows}
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
