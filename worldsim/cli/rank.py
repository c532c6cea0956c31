"""Policy-ranking verbs: ``rank`` (policies ranked in imagination and in the real env or logged episodes)
and ``rank-report`` (pool runs on disjoint initial states).
"""

from __future__ import annotations


from worldsim.cli.common import embodiment_arg, inference_args, inference_pipeline, process_state, read_reports
from worldsim.utils.files import write_json


def _zoo_and_policies(specs: list[str] | None, plugin, seed: int) -> dict:
    """``--policy`` values, in order: ``zoo`` (the plug-in's whole zoo), ``zoo:<member>`` (one member) or
    ``[name=]module:callable``.

    Raises:
        ValueError: an empty zoo, or a member the zoo does not have (the message lists the zoo).
    """
    from worldsim.data.policies import _load_callable

    policies = {}
    for spec in specs or ["zoo"]:
        if spec == "zoo":
            zoo = plugin.policy_zoo(seed=seed)
            if not zoo:
                raise ValueError(f"embodiment {plugin.name!r} has no policy zoo; pass --policy name=module:callable")
            policies.update(zoo)
            continue
        if spec.startswith("zoo:"):
            zoo, member = plugin.policy_zoo(seed=seed), spec[len("zoo:"):]
            if member not in zoo:
                raise ValueError(f"embodiment {plugin.name!r} has no zoo policy {member!r}; its zoo: {list(zoo)}")
            policies[member] = zoo[member]
            continue
        name, sep, target = spec.partition("=")
        if not sep:
            name, target = spec, spec
        obj = _load_callable(target)
        # a class or factory with no arguments builds the policy; any other callable is the policy itself
        policies[name] = obj() if isinstance(obj, type) else obj
    return policies


def cmd_rank(args) -> None:
    from worldsim.embodiments import resolve_embodiment
    from worldsim.evaluation.rank import (DEFAULT_REWARD_MEDIAN, rank_from_dataset, rank_policies, rank_table,
                                          write_rank_report)

    # Under `accelerate launch` each process runs a share of the state batches and every process gets all
    # results; only the main process prints and writes. A plain run is one process.
    from accelerate.utils import gather_object

    state = process_state()
    device = str(state.device) if args.device == "auto" else args.device
    pipeline = inference_pipeline(args, device)
    name, plugin = resolve_embodiment(pipeline, args.embodiment)
    policies = _zoo_and_policies(args.policy, plugin, args.seed)
    median = DEFAULT_REWARD_MEDIAN if args.reward_median is None else args.reward_median
    if args.dataset:
        if state.num_processes > 1:
            raise ValueError("ranking from a dataset runs in one process")
        report = rank_from_dataset(pipeline, policies, args.dataset, num_states=args.num_states, horizon=args.horizon,
                                   num_context=args.context, samples=args.samples, seed=args.seed,
                                   batch_size=args.batch_size, num_inference_steps=args.num_inference_steps,
                                   timestep_spacing=args.timestep_spacing, reward_median=median, embodiment=args.embodiment)
    else:
        sharding = {"process_index": state.process_index, "num_processes": state.num_processes,
                    "gather": gather_object} if state.num_processes > 1 else {}
        report = rank_policies(pipeline, policies, num_states=args.num_states or 50, horizon=args.horizon,
                               num_context=args.context, samples=args.samples, seed=args.seed, real=not args.no_real,
                               batch_size=args.batch_size, progress=state.is_main_process,
                               num_inference_steps=args.num_inference_steps, timestep_spacing=args.timestep_spacing,
                               reward_median=median, embodiment=args.embodiment, **sharding)
    if not state.is_main_process:
        return
    print(rank_table(report))
    if args.json:
        serialisable = {key: value for key, value in report.items() if key != "videos"}
        print(f"wrote {write_json(args.json, serialisable)}")
    if args.report:
        written = write_rank_report(report, args.report, fps=pipeline.embodiment(name).fps)
        print(f"wrote {written['html']} ({len(written['videos'])} videos)")


def cmd_rank_report(args) -> None:
    from worldsim.evaluation.rank import merge_rank_reports, rank_table

    reports = read_reports(args.reports, "policies", "a rank report (the JSON `worldsim rank --json` writes)")
    report = merge_rank_reports(reports)
    print(rank_table(report))
    if args.json:
        print(f"wrote {write_json(args.json, report)}")


def _add_rank(sub) -> None:
    p = sub.add_parser("rank", help="rank policies in imagination and in the real env (or against logged episodes); "
                       "report the agreement")
    p.add_argument("--model", required=True, help="model folder with outcome heads for the embodiment")
    embodiment_arg(p)
    p.add_argument("--policy", action="append",
                   help="'zoo' (the embodiment plug-in's zoo, default), 'zoo:<member>' or [name=]module:callable "
                        "(repeat); a callable "
                        "maps observation -> action or action chunk, or is a LeRobot-style object")
    p.add_argument("--dataset", action="append", help="rank against logged episodes instead of the real env (repeat "
                   "for several datasets): each policy's initial "
                   "states and real values are its own recorded episodes (episodes name their policy; record them "
                   "with `worldsim collect --policy zoo:<name>`)")
    p.add_argument("--num-states", type=int, default=None, help="initial states (the plug-in's starts; default 50; "
                   "with --dataset: episodes per policy, default all)")
    p.add_argument("--horizon", type=int, default=64, help="policy steps per episode")
    p.add_argument("--context", type=int, default=4, help="real frames shared by both worlds at the start")
    p.add_argument("--samples", type=int, default=1, help="imagined repetitions with different seeds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="initial states imagined together (the unit of "
                   "sharding under accelerate launch)")
    p.add_argument("--device", default="auto", help="'auto': this process's accelerate device (cpu here)")
    p.add_argument("--no-real", action="store_true", help="imagination only (no real env, no agreement)")
    inference_args(p)
    p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame (default: the "
                   "model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None,
                   help="sigma spacing of the denoising steps (trailing: equal steps, better with 1-4 steps)")
    p.add_argument("--reward-median", type=int, default=None, help="width of a running median over each imagined "
                   "episode's predicted rewards before its largest is taken (odd; 1: the raw largest reward; "
                   "default: worldsim.evaluation.rank.DEFAULT_REWARD_MEDIAN, 3)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--report", help="write report.html, scatter.png and per-policy videos into this folder")
    p.set_defaults(func=cmd_rank)


def _add_rank_report(sub) -> None:
    p = sub.add_parser("rank-report", help="pool `worldsim rank` runs on disjoint initial states into one ranking")
    p.add_argument("reports", nargs="+", help="JSON files of `worldsim rank --json` (same policies and settings; "
                                              "disjoint state ranges)")
    p.add_argument("--json", help="write the pooled report here")
    p.set_defaults(func=cmd_rank_report)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "rank": _add_rank,
    "rank-report": _add_rank_report,
}
