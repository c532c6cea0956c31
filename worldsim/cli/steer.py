"""Steering verbs: ``steer-eval`` (a chunk policy with and without steering by imagined outcomes, in the
real env) and ``steer-report`` (table and gain plot; merges runs).
"""

from __future__ import annotations

from pathlib import Path

from worldsim.cli.common import embodiment_arg, inference_args, inference_pipeline, read_reports
from worldsim.utils.files import write_json


def cmd_steer_eval(args) -> None:
    from worldsim.cli.rank import _env_ids
    from worldsim.embodiments import resolve_embodiment
    from worldsim.steering import OutcomePredictor
    from worldsim.evaluation.rank import state_rule_for
    from worldsim.steering.evaluate import follow_policy_for, steer_evaluate, steer_table, write_steer_report

    pipeline = inference_pipeline(args, args.device)
    name, plugin = resolve_embodiment(pipeline, args.embodiment)
    env_id = _env_ids([args.env_id] if args.env_id else None, plugin)[0]
    # the base policy's noise-free mode, acting on what the imagined env observes (frames, or views and the state)
    follow = follow_policy_for(plugin, env_id) if args.follow_steps else None
    value_key = args.value_key or getattr(plugin, "imagined_value", "reward")
    state_value = state_rule_for(pipeline, plugin, name, env_id, "state_progress") if value_key == "state_progress" \
        else None
    predictor = OutcomePredictor(pipeline, aggregate=args.aggregate, seed=args.seed, embodiment=name,
                                 follow_policy=follow, follow_steps=args.follow_steps,
                                 num_inference_steps=args.num_inference_steps or None,
                                 timestep_spacing=args.timestep_spacing, num_samples=args.samples,
                                 value_key=value_key, state_value=state_value)
    report = steer_evaluate(predictor, args.candidates, num_states=args.num_states, horizon=args.horizon,
                            num_context=args.context, seed=args.seed, base_noise=args.base_noise,
                            chunk_length=args.chunk_length, oracle_follow=args.oracle_follow, progress_dir=args.out,
                            resume=args.resume, embodiment_plugin=plugin, env_id=env_id)
    print(steer_table(report))
    out = Path(args.out)
    written = write_steer_report(report, out)
    serialisable = {"settings": report["settings"], "results": report["results"], "model": str(args.model)}
    write_json(out / "report.json", serialisable)
    print(f"wrote {out / 'report.json'}, {written['plot']}" + (f", {written['video']}" if written["video"] else ""))


def cmd_steer_report(args) -> None:
    from worldsim.steering.evaluate import merge_steer_reports, steer_table, write_steer_report

    reports = read_reports(args.reports, "results", "a steer-eval report (the report.json `worldsim steer-eval` "
                                                     "writes)")
    report = merge_steer_reports(reports) if len(reports) > 1 else reports[0]
    print(steer_table(report))
    out = Path(args.out)
    written = write_steer_report(report, out)
    write_json(out / "report.json", {key: report[key] for key in ("settings", "results", "model") if key in report})
    print(f"wrote {out / 'report.json'}, {written['plot']}")


def _add_steer_eval(sub) -> None:
    p = sub.add_parser("steer-eval", help="run the embodiment plug-in's stochastic chunk policy with and without steering in the real env")
    p.add_argument("--model", required=True, help="model folder with outcome heads for the embodiment (or a state "
                   "predictor, for --value-key state_progress)")
    embodiment_arg(p)
    p.add_argument("--env-id", default=None, help="the plug-in's env to steer in: an id or its last part (a "
                   "Meta-World task such as push-v3); a task-conditioned model imagines its task (default: the "
                   "plug-in's first env)")
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="K values (1 = base policy)")
    p.add_argument("--num-states", type=int, default=100, help="initial states (real env seeds)")
    p.add_argument("--horizon", type=int, default=64, help="real env steps per episode")
    p.add_argument("--context", type=int, default=4, help="real frames given to the predictor")
    p.add_argument("--base-noise", type=float, default=None, help="noise of the base policy's chunks, in the "
                   "plug-in's unit (default: the plug-in's steering_noise)")
    p.add_argument("--chunk-length", type=int, default=8, help="actions per chunk (H)")
    p.add_argument("--aggregate", choices=["value", "max", "last", "mean"],
                   help="how an imagined future is scored from its frames (default: value if the heads have one, "
                        "else max; last for --value-key state_progress)")
    p.add_argument("--value-key", choices=["reward", "success_probability", "state_progress"], default=None,
                   help="the per-frame value that max/last/mean aggregate: a head output, or state_progress, the "
                        "plug-in's progress measure of the predicted observation.state (Meta-World: minus the "
                        "distance of the success rule's part to its goal, and for tasks with an object minus the "
                        "tool centre's distance to it, in m; needs a state predictor, no heads; aggregate default "
                        "last) "
                        "(default: the plug-in's imagined value, as ranking uses it: success_probability for "
                        "Meta-World, reward otherwise)")
    p.add_argument("--oracle-follow", type=int, default=0,
                   help="> 0: also execute every candidate in the real env (then this many steps of the plug-in's "
                        "follow-up policy) to measure how much a perfect predictor would gain; with --value-key "
                        "state_progress the real outcome is the progress measure of the real states over the chunk "
                        "and --follow-steps (the number given here is then ignored), so the Spearman column says how "
                        "well the predicted state ranks the candidates")
    p.add_argument("--follow-steps", type=int, default=0,
                   help="> 0: continue each imagined candidate this many steps with the plug-in's noise-free "
                        "follow-up policy (acting on the imagined frames and predicted state) before scoring it")
    p.add_argument("--samples", type=int, default=1,
                   help="imagined futures per candidate (different noise, one batch); the score is their mean")
    p.add_argument("--num-inference-steps", type=int, default=0, help="denoising steps per frame (0: the model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None,
                   help="sigma spacing of the denoising steps (default: the model's)")
    inference_args(p)
    p.add_argument("--seed", type=int, default=0, help="first env seed (states seed .. seed + num-states - 1; runs of "
                   "other states merge with steer-report) and seed of the imagination noise")
    p.add_argument("--device", default="cpu", help="where the world model runs (the real envs run on the CPU)")
    p.add_argument("--out", default="outputs/steer-eval", help="folder for report.json, gain.png, steered.mp4; "
                   "progress is saved there after every episode until the run finishes")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run saved in --out (same command "
                   "otherwise); its report equals an uninterrupted run's")
    p.set_defaults(func=cmd_steer_eval)


def _add_steer_report(sub) -> None:
    p = sub.add_parser("steer-report", help="table and gain plot of steer-eval reports; merges runs of other K values "
                                            "or initial states")
    p.add_argument("reports", nargs="+", help="report.json files of `worldsim steer-eval` (same settings and model; "
                                              "the same or disjoint state ranges)")
    p.add_argument("--out", default="outputs/steer-eval-merged", help="folder for the merged report.json and gain.png")
    p.set_defaults(func=cmd_steer_report)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "steer-eval": _add_steer_eval,
    "steer-report": _add_steer_report,
}
