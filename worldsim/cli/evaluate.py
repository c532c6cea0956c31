"""Evaluation verbs: ``evaluate`` (open-loop fidelity against real episodes), ``sensitivity`` (does
imagination follow its actions?) and ``router-stats`` (expert load of the mixture of action experts).
"""

from __future__ import annotations

import time
from pathlib import Path

from worldsim.cli.common import device_arg, inference_pipeline, load_pipeline, model_embodiment, sampler_args
from worldsim.utils.files import write_json


def cmd_evaluate(args) -> None:
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.fidelity import evaluate_fidelity
    from worldsim.evaluation.report import markdown_table, plot_per_step, side_by_side
    from worldsim.utils.video import write_video

    pipeline = inference_pipeline(args, args.device)
    dataset = LeRobotDataset(args.dataset)
    started = time.perf_counter()
    report, imagined, windows = evaluate_fidelity(
        pipeline, dataset, args.horizon, args.context, args.starts_per_episode, args.max_windows, args.batch_size,
        args.num_inference_steps, args.context_noise, args.seed, action_guidance_scale=args.action_guidance_scale,
        embodiment=model_embodiment(pipeline, args.embodiment), timestep_spacing=args.timestep_spacing)
    report["model"] = args.model
    report["wall_seconds"] = time.perf_counter() - started
    table = markdown_table(report)
    print(table)
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.plot:
        print(f"wrote {plot_per_step(report, args.plot)}")
    if args.video:
        real = windows.frames[:, args.context:]
        write_video(args.video, side_by_side(real, imagined, max_rows=4), fps=pipeline.metadata.get("fps", 10))
        print(f"wrote {args.video} (rows: windows; left: real, right: imagined)")


def cmd_sensitivity(args) -> None:
    from worldsim.evaluation.sensitivity import action_sensitivity
    from worldsim.utils.video import write_video

    pipeline = load_pipeline(args.model, args.device)
    names = [model_embodiment(pipeline, value) for value in args.embodiment or [None]]
    results = {}
    for name in names:
        sampler = pipeline.sampler_settings(num_inference_steps=args.num_inference_steps,
                                            timestep_spacing=args.timestep_spacing, decoder=args.decoder)
        report, video = action_sensitivity(pipeline, name, args.contexts, args.branches, args.horizon, args.context,
                                           args.seed, args.policy, args.min_accuracy, sampler=sampler)
        results[name] = report.to_dict()
        verdict = "PASS" if report.passed else "FAIL"
        print(f"{name}: {verdict}  following accuracy {report.accuracy:.2f} (chance {report.chance:.2f}), "
              f"imagined spread {report.imagined_spread:.3f} vs real {report.real_spread:.3f}, "
              f"own-branch distance {report.mean_own_distance:.3f} (frame units)")
        if args.video:
            path = Path(args.video)
            path = path.with_name(f"{path.stem}-{name}{path.suffix}") if len(names) > 1 else path
            contexts, branches, steps, height, width, _ = video.shape
            grid = video[0].transpose(1, 0, 2, 3, 4).reshape(steps, branches * height, width, 3)
            write_video(path, grid, fps=pipeline.embodiment(name).fps)
            print(f"wrote {path} (rows: branches of the first context; left: real, right: imagined)")
    if args.json:
        print(f"wrote {write_json(args.json, results)}")
    if not all(result["passed"] for result in results.values()):
        raise SystemExit(1)


def cmd_router_stats(args) -> None:
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.router import router_statistics

    pipeline = load_pipeline(args.model)
    datasets = {}
    for item in args.dataset:
        name, sep, root = item.partition("=")
        if not sep:
            raise SystemExit(f"--dataset expects embodiment=path, got {item!r}")
        datasets[name] = LeRobotDataset(root)
    report = router_statistics(pipeline, datasets)
    experts = len(next(iter(report["expert_load"].values())))
    print("| embodiment | " + " | ".join(f"expert {e}" for e in range(experts)) + " |")
    print("|---" * (experts + 1) + "|")
    for name, load in report["expert_load"].items():
        if report["dispatches"][name]:
            print(f"| {name} | " + " | ".join(f"{f:.3f}" for f in load) + " |")
    print("| all (embodiments weighted equally) | " + " | ".join(f"{f:.3f}" for f in report["overall_load"]) + " |")
    print(f"dead experts (under {report['dead_share']:.0%} of all dispatches): {report['dead_experts'] or 'none'}")
    for pair, distance in report["total_variation"].items():
        print(f"total-variation distance {pair}: {distance:.3f}")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="open-loop fidelity vs real held-out episodes and copy-last-frame")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--horizon", type=int, default=32, help="imagined steps per window")
    p.add_argument("--context", type=int, default=4, help="real context frames per window")
    p.add_argument("--starts-per-episode", type=int, default=2,
                   help="evenly spaced windows per held-out episode")
    p.add_argument("--max-windows", type=int, default=None, help="stop after this many windows")
    p.add_argument("--batch-size", type=int, default=16, help="windows imagined together")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--plot", help="write per-step curves here (PNG)")
    p.add_argument("--video", help="write real | imagined for a few windows here")
    sampler_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="action-sensitivity check: branch action sequences from one real state "
                       "in the real env and in imagination; does each imagined branch follow its own actions?")
    p.add_argument("--model", required=True)
    p.add_argument("--embodiment", action="append", help="embodiment to check (repeat for several; default: the "
                   "model's default)")
    p.add_argument("--contexts", type=int, default=4, help="real starting states (env seeds)")
    p.add_argument("--branches", type=int, default=4, help="action sequences per starting state")
    p.add_argument("--horizon", type=int, default=16, help="imagined steps per branch")
    p.add_argument("--context", type=int, default=8, help="policy steps played before branching")
    p.add_argument("--policy", default=None, help="policy for the context steps (default: the plug-in's "
                   "data_policy, else random)")
    p.add_argument("--min-accuracy", type=float, default=0.6, help="following accuracy needed to pass")
    p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame (default: the "
                   "model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None, help="default: the model's")
    p.add_argument("--decoder", choices=["full", "light"], default=None, help="frame decoder (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="first env seed; also seeds the branch actions")
    p.add_argument("--json", help="write the reports here")
    p.add_argument("--video", help="write real | imagined branches of the first context here")
    device_arg(p)
    p.set_defaults(func=cmd_sensitivity)


def _add_router_stats(sub) -> None:
    p = sub.add_parser("router-stats", help="expert load of the mixture of action experts per embodiment")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", action="append", required=True, help="embodiment=path to a LeRobot dataset (repeat)")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_router_stats)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "evaluate": _add_evaluate,
    "sensitivity": _add_sensitivity,
    "router-stats": _add_router_stats,
}
