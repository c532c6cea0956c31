"""Drift vs horizon for several history noise levels (``context_noise``): PSNR and agent-position error per step.

Noise-augmented history (Astra; diffusion forcing) trades a little sharpness of the history for robustness to the
model's own errors, which otherwise compound over a long rollout. This script imagines the same held-out windows
open-loop for each ``context_noise`` and plots the per-step metrics, so the default can be chosen from the curves.

    python tools/drift_curves.py --model checkpoints/pusht --dataset data/pusht-heldout --horizon 256 \
        --context-noise 0 0.05 0.1 0.2 --json docs/media/drift.json --plot docs/media/drift.png

Windows need ``context + horizon`` frames; episodes shorter than that are skipped.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from worldsim.utils.files import write_json


def main(argv=None) -> dict:
    from worldsim.data.frame_cache import load_frame_cache
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.embodiments.pusht import PushTEmbodiment
    from worldsim.evaluation.fidelity import evaluation_windows, fidelity_report, imagine_windows
    from worldsim.pipelines.world_model import WorldModelPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--dataset", default="data/pusht-heldout")
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--max-windows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-noise", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)

    pipeline = WorldModelPipeline.from_pretrained(args.model)
    dataset = LeRobotDataset(args.dataset)
    frames = load_frame_cache(dataset, pipeline.image_size)
    windows = evaluation_windows(dataset, frames, args.context, args.horizon, 1, args.max_windows)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
              "model": args.model, "dataset": args.dataset, "horizon": args.horizon, "num_windows": len(windows.frames),
              "settings": {}}
    print(f"{len(windows.frames)} windows of {args.context} + {args.horizon} frames")
    for noise in args.context_noise:
        started = time.perf_counter()
        imagined = imagine_windows(pipeline, windows, args.context, args.batch_size, context_noise=noise,
                                   seed=args.seed)
        result = fidelity_report(imagined, windows, args.context, PushTEmbodiment())
        summary = result["summary"]
        report["settings"][str(noise)] = {"per_step": result["per_step"], "summary": summary,
                                          "seconds": time.perf_counter() - started}
        print(f"context_noise {noise}: PSNR {summary['psnr/model']:.2f} dB, agent error {summary['agent_error/model']:.1f}"
              f" px (copy-last {summary['agent_error/copy_last_frame']:.1f}), at step {args.horizon}: "
              f"{summary['agent_error_at_horizon/model']:.1f} px")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 3, figsize=(15, 3.6))
        for (noise, result), color in zip(report["settings"].items(), plt.cm.viridis(np.linspace(0, 0.9, len(args.context_noise)))):
            for axis, metric in zip(axes, ("psnr", "agent_error", "block_area_ratio")):
                values = np.asarray(result["per_step"][metric]["model"])
                axis.plot(np.arange(1, len(values) + 1), values, color=color, label=f"context_noise {noise}")
        baseline = next(iter(report["settings"].values()))["per_step"]
        for axis, metric in zip(axes, ("psnr", "agent_error", "block_area_ratio")):
            values = np.asarray(baseline[metric]["copy_last_frame"])
            axis.plot(np.arange(1, len(values) + 1), values, "k--", label="copy last frame")
            axis.set_xlabel("imagined step")
            axis.grid(alpha=0.3)
        axes[0].set_title("PSNR (dB)")
        axes[1].set_title("agent error (px, 0-512)")
        axes[2].set_title("block area imagined / real")
        axes[1].legend(fontsize=8)
        figure.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=100)
        print(f"wrote {args.plot}")
    return report


if __name__ == "__main__":
    main()
