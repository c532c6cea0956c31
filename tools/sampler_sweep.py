"""Fidelity of few-step samplers next to the many-step one: the speed/quality trade-off of ``num_inference_steps``.

For each sampler (``<steps>:<spacing>[:<decoder>[:int8]][@<model>]``, e.g. ``10:linspace``, ``3:trailing``,
``2:trailing:light`` for the model's light decoder instead of the autoencoder's, ``2:trailing:light:int8`` with the
transformer's block linear layers in dynamic int8, ``1:trailing:light@runs/pusht-1step`` for another model folder
than ``--model``, such as a distilled student) runs the open-loop fidelity evaluation
of ``worldsim evaluate`` on the same held-out windows with the same seed, and reports agent-position error, PSNR,
SSIM, block error and missing-agent rate, the denoising passes per frame and the evaluation's wall time; the agent
error is also given relative to the best sampler's.

    python tools/sampler_sweep.py --model checkpoints/pusht --dataset data/pusht-heldout --horizon 32 \\
        --samplers 10:linspace 4:linspace 1:trailing 2:trailing 3:trailing 4:trailing \\
        --json docs/media/sampler-sweep.json

The figures in docs/benchmarks.md ("Few-step sampling") come from this command.
"""

from __future__ import annotations

import argparse
import time

from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.fidelity import evaluate_fidelity
from worldsim.utils.files import write_json
from worldsim.models.quantization import QUANTIZATION_MODES
from worldsim.pipelines.world_model import WorldModelPipeline


def parse_sampler(text: str) -> tuple[int, str, str, str | None, str | None]:
    """``"3:trailing"`` -> ``(3, "trailing", "full", None, None)``; ``"2:trailing:light:int8@runs/x"`` ->
    ``(2, "trailing", "light", "runs/x", "int8")`` (model None: the ``--model``; quantization None: bf16).

    Raises:
        ValueError: not ``<positive int>:<linspace|trailing>[:<full|light>[:int8|int8+decoder]][@<model folder>]``.
    """
    sampler, _, model = text.partition("@")
    steps, _, rest = sampler.partition(":")
    spacing, _, rest = rest.partition(":")
    decoder, _, quantize = rest.partition(":")
    decoder = decoder or "full"
    if not steps.isdigit() or int(steps) < 1 or spacing not in ("linspace", "trailing") \
            or decoder not in ("full", "light") or quantize not in ("", *QUANTIZATION_MODES):
        raise ValueError(f"sampler must look like 3:trailing, 10:linspace, 2:trailing:light, 2:trailing:light:int8, "
                         f"2:trailing:light:int8+decoder or 1:trailing:light@<model folder>, got {text!r}")
    return int(steps), spacing, decoder, model or None, quantize or None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/pusht")
    parser.add_argument("--dataset", default="data/pusht-heldout")
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--starts-per-episode", type=int, default=2)
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--samplers", nargs="+", default=["10:linspace", "4:linspace", "1:trailing", "2:trailing",
                                                          "3:trailing", "4:trailing"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    samplers = [parse_sampler(text) for text in args.samplers]

    pipelines = {}
    dataset = LeRobotDataset(args.dataset)
    rows = []
    for steps, spacing, decoder, model, quantize in samplers:
        model = model or args.model
        if (model, quantize) not in pipelines:
            pipelines[model, quantize] = WorldModelPipeline.from_pretrained(model)
            if quantize:
                pipelines[model, quantize].set_decoder(decoder)  # int8+decoder quantizes the decoder in use
                pipelines[model, quantize].quantize(quantize)
        pipeline = pipelines[model, quantize]
        name = f"{steps}:{spacing}:{decoder}" + (f":{quantize}" if quantize else "")
        pipeline.set_decoder(decoder)  # refuses "light" for a model without a light decoder
        started = time.perf_counter()
        report, _, _ = evaluate_fidelity(pipeline, dataset, args.horizon, args.context, args.starts_per_episode,
                                         args.max_windows, num_inference_steps=steps, seed=args.seed,
                                         progress=False, timestep_spacing=spacing)
        summary = report["summary"]
        rows.append({"sampler": name, "model": model, "num_inference_steps": steps,
                     "timestep_spacing": spacing, "decoder": decoder, "quantize": quantize,
                     "passes_per_frame": steps + 1, "agent_error": summary["agent_error/model"],
                     "agent_error_at_horizon": summary["agent_error_at_horizon/model"],
                     "psnr": summary["psnr/model"], "ssim": summary["ssim/model"],
                     "block_error": summary["block_error/model"], "agent_missing": summary["agent_missing/model"],
                     "num_windows": report["num_windows"], "wall_seconds": time.perf_counter() - started})
        print(f"{name} ({model}): agent error {summary['agent_error/model']:.1f} px, PSNR {summary['psnr/model']:.2f} dB",
              flush=True)
    best = min(row["agent_error"] for row in rows)
    for row in rows:
        row["agent_error_vs_best"] = row["agent_error"] / best
    print("| model | sampler | decoder | transformer | passes / frame | agent error (px) | vs best | PSNR (dB) | SSIM | block error (px) "
          "| agent missing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['num_inference_steps']} Euler, {row['timestep_spacing']} | {row['decoder']} | "
              f"{row['quantize'] or 'bf16'} | {row['passes_per_frame']} | "
              f"{row['agent_error']:.1f} | {row['agent_error_vs_best']:.2f}x | {row['psnr']:.2f} | {row['ssim']:.3f} | "
              f"{row['block_error']:.1f} | {row['agent_missing']:.3f} |")
    result = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "dataset": args.dataset,
              "horizon": args.horizon, "context": args.context, "seed": args.seed, "samplers": rows}
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
