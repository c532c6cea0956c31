"""Policy-ranking verbs: ``rank`` (policies ranked in imagination and in the real env or logged episodes)
and ``rank-report`` (pool runs on disjoint initial states).
"""

from __future__ import annotations


from worldsim.cli.common import embodiment_arg, inference_args, inference_pipeline, process_state
from worldsim.utils.files import write_json


def _zoo_and_policies(specs: list[str] | None, plugin, seed: int, env_id: str | None = None) -> dict:
    """``--policy`` values, in order: ``zoo`` (the plug-in's whole zoo for ``env_id``), ``zoo:<member>`` (one member),
    ``[name=]<folder>`` (a policy saved by ``worldsim train-bc``) or ``[name=]module:callable``.

    Raises:
        ValueError: an empty zoo, or a member the zoo does not have (the message lists the zoo).
    """
    from pathlib import Path

    from worldsim.data.policies import _load_callable

    policies = {}
    for spec in specs or ["zoo"]:
        if spec == "zoo" or spec.startswith("zoo:"):
            zoo = plugin.task_zoo(env_id, seed=seed)
            if not zoo:
                raise ValueError(f"embodiment {plugin.name!r} has no policy zoo; pass --policy name=module:callable")
            if spec == "zoo":
                policies.update(zoo)
                continue
            member = spec[len("zoo:"):]
            if member not in zoo:
                raise ValueError(f"embodiment {plugin.name!r} has no zoo policy {member!r}; its zoo: {list(zoo)}")
            policies[member] = zoo[member]
            continue
        name, sep, target = spec.partition("=")
        if not sep:
            name, target = spec, spec
        if Path(target).is_dir():
            from worldsim.policies.bc import BCPolicy

            policies[name if sep else Path(target).name] = BCPolicy.from_pretrained(target)
            continue
        obj = _load_callable(target)
        # a class or factory with no arguments builds the policy; any other callable is the policy itself
        policies[name] = obj() if isinstance(obj, type) else obj
    return policies


def _env_ids(values: list[str] | None, plugin) -> list[str | None]:
    """The ``--env-id`` values as the plug-in's env ids (a value may be an id or its last part, e.g. a Meta-World task
    name ``push-v3``); ``[None]`` (the default env) without any.

    Raises:
        ValueError: a value that matches none or several of the plug-in's ids (the message lists them).
    """
    if not values:
        return [None]
    chosen = []
    for value in values:
        matches = [i for i in plugin.env_ids if i == value or i.endswith("-" + value) or i.endswith("/" + value)]
        if len(matches) != 1:
            raise ValueError(f"--env-id {value!r} matches {len(matches)} of embodiment {plugin.name!r}'s env ids; "
                             f"give one of {list(plugin.env_ids)}")
        chosen.append(matches[0])
    return chosen


def cmd_rank(args) -> None:
    from worldsim.embodiments import resolve_embodiment
    from worldsim.evaluation.rank import (DEFAULT_REWARD_MEDIAN, rank_from_dataset, rank_policies, rank_table,
                                          rank_tasks, write_rank_report)

    # Under `accelerate launch` each process runs a share of the state batches and every process gets all
    # results; only the main process prints and writes. A plain run is one process.
    from accelerate.utils import gather_object

    state = process_state()
    device = str(state.device) if args.device == "auto" else args.device
    pipeline = inference_pipeline(args, device)
    name, plugin = resolve_embodiment(pipeline, args.embodiment)
    env_ids = _env_ids(args.env_id, plugin)
    median = DEFAULT_REWARD_MEDIAN if args.reward_median is None else args.reward_median
    sampler = pipeline.sampler_settings(num_inference_steps=args.num_inference_steps,
                                        timestep_spacing=args.timestep_spacing, context_noise=args.context_noise,
                                        action_guidance_scale=args.action_guidance_scale)
    tasks = None
    if args.dataset:
        if state.num_processes > 1 or args.env_id:
            raise ValueError("ranking from a dataset runs in one process, on the datasets' own tasks (no --env-id)")
        if args.imagined_value is not None:
            raise ValueError("--imagined-value applies to ranking against the real env, not to --dataset")
        policies = _zoo_and_policies(args.policy, plugin, args.seed)
        report = rank_from_dataset(pipeline, policies, args.dataset, num_states=args.num_states, horizon=args.horizon,
                                   num_context=args.context, samples=args.samples, seed=args.seed,
                                   batch_size=args.batch_size, sampler=sampler, reward_median=median,
                                   embodiment=args.embodiment)
    else:
        sharding = {"process_index": state.process_index, "num_processes": state.num_processes,
                    "gather": gather_object} if state.num_processes > 1 else {}
        settings = dict(num_states=args.num_states or 50, horizon=args.horizon, num_context=args.context,
                        samples=args.samples, seed=args.seed, real=not args.no_real, batch_size=args.batch_size,
                        progress=state.is_main_process, sampler=sampler, reward_median=median, embodiment=args.embodiment,
                        imagined_value=args.imagined_value, **sharding)
        if len(env_ids) == 1:
            report = rank_policies(pipeline, _zoo_and_policies(args.policy, plugin, args.seed, env_ids[0]),
                                   env_id=env_ids[0], **settings)
        else:
            tasks = rank_tasks(pipeline, lambda env_id: _zoo_and_policies(args.policy, plugin, args.seed, env_id),
                               env_ids, **settings)
            report = tasks["pooled"]
    if not state.is_main_process:
        return
    if tasks is not None:
        for env_id, task_report in tasks["tasks"].items():
            print(f"\n## {env_id}\n\n{rank_table(task_report)}")
        if report is not None:
            print(f"\n## pooled over {len(env_ids)} tasks\n\n{rank_table(report)}")
    else:
        print(rank_table(report))
    if args.json:
        serialisable = ({key: value for key, value in report.items() if key != "videos"} if tasks is None else
                        {"tasks": {env_id: {key: value for key, value in task_report.items() if key != "videos"}
                                   for env_id, task_report in tasks["tasks"].items()}, "pooled": report})
        print(f"wrote {write_json(args.json, serialisable)}")
    if args.report:
        from pathlib import Path

        for env_id, task_report in (tasks["tasks"].items() if tasks else [(None, report)]):
            folder = Path(args.report) / env_id.replace("/", "_") if env_id else args.report
            written = write_rank_report(task_report, folder, fps=pipeline.embodiment(name).fps)
            print(f"wrote {written['html']} ({len(written['videos'])} videos)")


def cmd_rank_report(args) -> None:
    from worldsim.evaluation.rank import combine_rank_reports, rank_table

    from worldsim.utils.files import read_json_object

    reports = [read_json_object(path) for path in args.reports]
    for path, report in zip(args.reports, reports):
        if not ("policies" in report and "settings" in report) and "tasks" not in report:
            raise ValueError(f"{path} is not a rank report (the JSON `worldsim rank --json` writes): it has neither "
                             f"'policies' and 'settings' nor 'tasks'")
    combined = combine_rank_reports(reports)
    tasks, pooled = combined["tasks"], combined["pooled"]
    for env_id, report in tasks.items():
        print((f"\n## {env_id}\n\n" if len(tasks) > 1 else "") + rank_table(report))
    if pooled is not None:
        print(f"\n## pooled over {len(tasks)} tasks\n\n{rank_table(pooled)}")
    if args.json:
        result = next(iter(tasks.values())) if pooled is None else {"tasks": tasks, "pooled": pooled}
        print(f"wrote {write_json(args.json, result)}")


def _add_rank(sub) -> None:
    p = sub.add_parser("rank", help="rank policies in imagination and in the real env (or against logged episodes); "
                       "report the agreement")
    p.add_argument("--model", required=True, help="model folder with outcome heads for the embodiment")
    embodiment_arg(p)
    p.add_argument("--policy", action="append",
                   help="'zoo' (the embodiment plug-in's zoo, default), 'zoo:<member>' or [name=]module:callable "
                        "(repeat), or [name=]<folder> saved by `worldsim train-bc`; a callable "
                        "maps observation -> action or action chunk, or is a LeRobot-style object")
    p.add_argument("--env-id", action="append", help="the plug-in's env to rank on (repeat for several, e.g. the "
                   "tasks of Meta-World: push-v3 or worldsim/MetaWorld-push-v3); several are ranked one by one and "
                   "pooled; default: the plug-in's default env")
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
    p.add_argument("--context-noise", type=float, default=None, help="history noise level sigma in [0, 1) "
                   "(default: the model's)")
    p.add_argument("--action-guidance-scale", type=float, default=None, help="classifier-free guidance on the "
                   "action (1.0: off; default: the model's); above 1 each frame costs two transformer passes")
    p.add_argument("--reward-median", type=int, default=None, help="width of a running median over each imagined "
                   "episode's predicted rewards before its largest is taken (odd; 1: the raw largest reward; "
                   "default: worldsim.evaluation.rank.DEFAULT_REWARD_MEDIAN, 3)")
    p.add_argument("--imagined-value", choices=["reward", "success_probability", "state_success"], default=None,
                   help="what values an imagined step: the outcome heads' reward or success probability, or the "
                        "plug-in's success rule on the predicted observation.state (default: the plug-in's)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--report", help="write report.html, scatter.png and per-policy videos into this folder")
    p.set_defaults(func=cmd_rank)


def _add_rank_report(sub) -> None:
    p = sub.add_parser("rank-report", help="combine `worldsim rank` runs into one ranking: runs of other policies on "
                       "the same states, of the same policies on disjoint states, and of other tasks (pooled)")
    p.add_argument("reports", nargs="+", help="JSON files of `worldsim rank --json` (the same settings but the "
                                              "policies, state ranges or env ids)")
    p.add_argument("--json", help="write the pooled report here")
    p.set_defaults(func=cmd_rank_report)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "rank": _add_rank,
    "rank-report": _add_rank_report,
}
