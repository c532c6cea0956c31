"""Performance verbs: ``bench`` (imagined vs real env speed, latency, FLOP/s, training speed, memory) and
``soak`` (a long rollout and many resets: resident memory and finite outputs).
"""

from __future__ import annotations

import os
import shlex
import time

from worldsim.cli.common import inference_args, load_pipeline
from worldsim.utils.files import write_json


def cmd_bench(args) -> None:
    from worldsim.benchmark import markdown_report, run_benchmark
    from worldsim.models.world_model import set_block_causal_attention
    from worldsim.utils.measure import write_markdown_section

    if args.block_causal_attention:
        set_block_causal_attention(args.block_causal_attention)
        os.environ["WORLDSIM_BLOCK_CAUSAL_ATTENTION"] = args.block_causal_attention  # and the measuring subprocesses
    report = run_benchmark(args.model, args.num_envs, args.seconds, args.num_inference_steps, args.timestep_spacing,
                           args.latency_steps, args.memory_steps, args.train_steps, args.train_batch_size,
                           device=args.device, progress=lambda line: print(line, flush=True), decoder=args.decoder,
                           quantize=args.quantize, cuda_graphs=args.cuda_graphs)
    command = "worldsim bench " + " ".join(shlex.quote(part) for part in args.argv)
    section = markdown_report(report, command)
    print(section)
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.markdown:
        print(f"wrote {write_markdown_section(args.markdown, section)}")


def cmd_soak(args) -> None:
    from worldsim.envs import WorldModelEnv
    from worldsim.evaluation.soak import soak_resets, soak_rollout

    pipeline = load_pipeline(args.model, args.device)
    sampler = {"num_inference_steps": args.num_inference_steps or None, "timestep_spacing": args.timestep_spacing}
    report = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "sampler": sampler,
              "command": "worldsim soak " + " ".join(shlex.quote(part) for part in args.argv)}
    if args.steps:
        report["rollout"] = soak_rollout(WorldModelEnv(pipeline, **sampler), args.steps, seed=args.seed)
        r = report["rollout"]
        print(f"rollout of {r['steps']} steps ({r['seconds']:.0f} s): resident memory {r['start_mib']:.1f} -> "
              f"{r['end_mib']:.1f} MiB ({r['growth_mib']:+.1f}); finite: {r['finite']}; pixels {r['observation_range']}")
    if args.resets:
        report["resets"] = soak_resets(WorldModelEnv(pipeline, **sampler), args.resets, seed=args.seed)
        r = report["resets"]
        print(f"{r['resets']} resets ({r['seconds']:.0f} s): resident memory {r['start_mib']:.1f} -> "
              f"{r['end_mib']:.1f} MiB ({r['growth_mib']:+.1f}); finite: {r['finite']}")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="imagined vs real env steps/s, latency, FLOP/s vs the matmul peak, training "
                                     "speed, rollout memory; JSON and a markdown table")
    p.add_argument("--model", required=True)
    p.add_argument("--num-envs", type=int, nargs="+", default=[16, 64], help="vector-env sizes (FLOP/s at the largest)")
    p.add_argument("--seconds", type=float, default=20.0, help="timing length of each env measurement")
    p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame (default: the "
                   "model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None, help="default: the model's")
    inference_args(p)
    p.add_argument("--latency-steps", type=int, default=200, help="single-env steps timed one by one")
    p.add_argument("--memory-steps", type=int, nargs="*", default=[200, 2000],
                   help="rollout lengths whose peak memory is measured, each in a fresh process")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps (0: skip)")
    p.add_argument("--train-batch-size", type=int, default=None, help="default: the model's run config")
    p.add_argument("--block-causal-attention", choices=["dense", "frame-chunked", "flex"], default=None,
                   help="how multi-frame block-causal attention is computed (training, multi-frame passes): one "
                        "masked SDPA call (default), one unmasked call per frame, or FlexAttention")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay each steady-state env step as one captured CUDA graph (CUDA only; "
                        "docs/backbones.md)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--markdown", help="write the table into this markdown file (between bench markers)")
    p.set_defaults(func=cmd_bench)


def _add_soak(sub) -> None:
    p = sub.add_parser("soak", help="a long imagined rollout and many resets: resident memory and finite outputs")
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=10_000, help="rollout length (0: skip)")
    p.add_argument("--resets", type=int, default=1_000, help="env resets (0: skip)")
    p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame (default: the "
                   "model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_soak)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "bench": _add_bench,
    "soak": _add_soak,
}
