"""``worldsim <verb>``: collect, train-autoencoder, train, rollout, evaluate, sensitivity, router-stats, demo.

Run configs are YAML presets under ``configs/`` plus dotted overrides (``worldsim train --config
configs/<run>.yaml train.max_steps=100``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from worldsim.utils.files import write_json


def _key_values(items: list[str] | None, flag: str) -> dict:
    """``["noise_std=[0,5]", "wander_prob=0.1"]`` -> dict (values parsed as YAML)."""
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        result[key] = yaml.safe_load(value)
    return result


def cmd_collect(args) -> None:
    from worldsim.data.collect import collect

    out = collect(args.env, args.policy, args.episodes, args.out, seed=args.seed, max_steps=args.max_steps,
                  policy_kwargs=_key_values(args.policy_kwargs, "--policy-kwargs"),
                  env_kwargs=_key_values(args.env_kwargs, "--env-kwargs"), start=args.start)
    from worldsim.data.lerobot import LeRobotDataset

    dataset = LeRobotDataset(out)
    print(f"wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames to {out}")


def cmd_train_autoencoder(args) -> None:
    from worldsim.training.config import load_config
    from worldsim.training.train_autoencoder import train_autoencoder

    out = train_autoencoder(load_config(args.config, args.overrides))
    print(f"autoencoder written to {out}")
    print((out / "metrics.json").read_text())


def cmd_train(args) -> None:
    from worldsim.training.config import load_config
    from worldsim.training.train_world_model import train_world_model

    out = train_world_model(load_config(args.config, args.overrides))
    if _process_state().is_main_process:  # under `accelerate launch`, one line, not one per process
        print(f"world model written to {out}")


def _process_state():
    """accelerate's ``PartialState`` of this process: one process for a plain run, several under
    ``accelerate launch`` (on CPU machines with ``ACCELERATE_USE_CPU=1``, which selects gloo; see docs/scaling.md)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _load_pipeline(path: str, device: str = "cpu"):
    from worldsim.pipelines.world_model import WorldModelPipeline

    return WorldModelPipeline.from_pretrained(path, device)


def _inference_pipeline(args, device: str = "cpu"):
    """The model of ``args.model`` with the frame decoder (``--decoder``) and quantization (``--quantize``) asked for."""
    pipeline = _load_pipeline(args.model, device)
    pipeline.set_decoder(args.decoder)
    if args.quantize:
        pipeline.quantize(args.quantize)
    return pipeline


def cmd_rollout(args) -> None:
    import torch

    from worldsim.data.frame_cache import load_frame_cache
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.report import side_by_side
    from worldsim.utils.video import write_video

    pipeline = _inference_pipeline(args)
    generator = torch.Generator().manual_seed(args.seed)
    real = None
    if args.dataset:
        dataset = LeRobotDataset(args.dataset)
        if not 0 <= args.episode < dataset.num_episodes:
            raise SystemExit(f"--episode {args.episode} out of range: {args.dataset} has {dataset.num_episodes} episodes")
        frames = load_frame_cache(dataset, pipeline.image_size)
        segment = dataset.episode_slice(args.episode)
        start = segment.start + args.start
        available = segment.stop - start - args.context
        if available < 1:
            raise SystemExit(f"episode {args.episode} is too short for --start {args.start} and --context {args.context}")
        steps = args.steps
        episode_action = dataset.action[start:segment.stop]
        context_frames = np.asarray(frames[start:start + args.context])
        context_action = episode_action[:args.context - 1]
        if args.actions:
            action = np.load(args.actions).astype(np.float32)[:steps]
        else:
            action = episode_action[args.context - 1:args.context - 1 + steps]
            if len(action) < steps:
                print(f"episode has {len(action)} actions after the context; rolling out {len(action)} steps")
            real = np.asarray(frames[start + args.context:start + args.context + len(action)])
    else:
        if not args.actions:
            raise SystemExit("give --dataset (real context and actions) or --actions with the model's start set")
        start_set = pipeline.start_set(args.embodiment)
        if start_set is None:
            raise SystemExit("this model has no bundled start set; give --dataset")
        context_frames = start_set[0][args.episode % len(start_set[0])].numpy()
        context_action = start_set[1][args.episode % len(start_set[0])].numpy()
        action = np.load(args.actions).astype(np.float32)[:args.steps]
    started = time.perf_counter()
    imagined = pipeline.rollout(context_frames[None], context_action[None], action[None], args.num_inference_steps,
                                args.context_noise, generator, progress=True,
                                action_guidance_scale=args.action_guidance_scale, embodiment=args.embodiment,
                                timestep_spacing=args.timestep_spacing)
    elapsed = time.perf_counter() - started
    if real is not None and len(real) < imagined.shape[1]:
        real = np.concatenate([real, np.zeros((imagined.shape[1] - len(real), *real.shape[1:]), np.uint8)])
    video = side_by_side(None if real is None else real[None], imagined)
    write_video(args.out, video, fps=pipeline.metadata.get("fps", 10))
    print(f"imagined {imagined.shape[1]} frames in {elapsed:.1f} s ({imagined.shape[1] / elapsed:.1f} frames/s); "
          f"wrote {args.out}" + (" (left: real, right: imagined)" if real is not None else ""))


def cmd_evaluate(args) -> None:
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.fidelity import evaluate_fidelity
    from worldsim.evaluation.report import markdown_table, plot_per_step, side_by_side
    from worldsim.utils.video import write_video

    pipeline = _inference_pipeline(args)
    dataset = LeRobotDataset(args.dataset)
    started = time.perf_counter()
    report, imagined, windows = evaluate_fidelity(
        pipeline, dataset, args.horizon, args.context, args.starts_per_episode, args.max_windows, args.batch_size,
        args.num_inference_steps, args.context_noise, args.seed, action_guidance_scale=args.action_guidance_scale,
        embodiment=args.embodiment, timestep_spacing=args.timestep_spacing)
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

    pipeline = _load_pipeline(args.model)
    names = args.embodiment or [pipeline.default_embodiment]
    results = {}
    for name in names:
        report, video = action_sensitivity(pipeline, name, args.contexts, args.branches, args.horizon, args.context,
                                           args.seed, args.policy, args.min_accuracy)
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


def cmd_train_heads(args) -> None:
    from worldsim.training.train_heads import train_heads

    report = train_heads(args.model, args.dataset, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, val_episodes=args.val_episodes, seed=args.seed,
                         output=args.output, val_datasets=args.val_dataset, embodiment=args.embodiment,
                         value_discount=args.value_discount)
    print(f"held-out frames: {report['val_frames']}; reward MAE {report['reward_mae']:.4f} (predicting the mean: "
          f"{report['reward_mae_predict_mean']:.4f}), Pearson r {report['reward_pearson']:.3f}")
    if "value_mae" in report:
        print(f"value (discount {report['value_discount']}): MAE {report['value_mae']:.4f}, Pearson r "
              f"{report['value_pearson']:.3f}")
    print(f"positives in training: {report['train_positives']}, held out: {report['val_positives']}")
    for name, table in report["reliability"].items():
        print(f"{name} reliability (predicted -> observed, count): " + ", ".join(
            f"[{row['low']:.1f}, {row['high']:.1f}) {row['mean_predicted']:.3f} -> {row['observed_frequency']:.3f} "
            f"({row['count']})" for row in table))
    print(f"wrote {args.output or Path(args.model) / 'heads'}")


def cmd_train_decoder(args) -> None:
    from worldsim.training.train_decoder import train_decoder

    report = train_decoder(args.model, args.dataset, val_datasets=args.val_dataset, steps=args.steps,
                           batch_size=args.batch_size, learning_rate=args.learning_rate,
                           block_out_channels=args.block_out_channels, num_blocks=tuple(args.num_blocks),
                           seed=args.seed, max_minutes=args.max_minutes, output=args.output)
    flops, held = report["flops_per_frame"], report["held_out"]
    print(f"{report['steps']} steps in {report['wall_minutes']:.1f} min; {report['num_parameters']:,} parameters; "
          f"{flops['light'] / 1e6:.0f} MFLOP per frame (autoencoder's decoder: {flops['full'] / 1e6:.0f})")
    print(f"held-out frames: {held['frames']}; PSNR light {held['psnr']['light']:.2f} dB, full "
          f"{held['psnr']['full']:.2f} dB" + (f"; {held['frame_metric']['name']} light "
                                             f"{held['frame_metric']['light']:.2f}, full "
                                             f"{held['frame_metric']['full']:.2f}" if held["frame_metric"] else ""))
    print(f"wrote {args.output or Path(args.model) / 'decoder'}")


def cmd_distill(args) -> None:
    from worldsim.training.distill import distill_world_model

    report = distill_world_model(args.model, args.dataset, args.out, val_datasets=args.val_dataset,
                                 student_steps=args.student_steps, teacher_steps=args.teacher_steps,
                                 timestep_spacing=args.timestep_spacing, num_layers=args.num_layers,
                                 steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                 val_clips=args.val_clips, seed=args.seed, max_minutes=args.max_minutes)
    errors = report["latent_mse_to_teacher"]
    k = report["student_steps"]
    print(f"{report['steps']} steps in {report['wall_minutes']:.1f} min ({report['samples_per_second']:.1f} clips/s); "
          f"student: {report['num_layers']} layers, {report['num_parameters']:,} parameters, {k} step(s) per frame")
    print(f"latent error against the teacher's {report['teacher_steps']}-step samples on {report['val_clips']} clips: "
          f"teacher at {k} step(s) {errors[f'teacher_{k}_steps']:.4f}, student before {errors['student_init']:.4f}, "
          f"after {errors['student']:.4f}")
    print(f"wrote {args.out}")


def _zoo_and_policies(specs: list[str] | None, plugin, seed: int) -> dict:
    """``--policy`` values: ``zoo`` (the plug-in's zoo) or ``[name=]module:callable``, in order."""
    from worldsim.data.policies import _load_callable

    policies = {}
    for spec in specs or ["zoo"]:
        if spec == "zoo":
            zoo = plugin.policy_zoo(seed=seed)
            if not zoo:
                raise ValueError(f"embodiment {plugin.name!r} has no policy zoo; pass --policy name=module:callable")
            policies.update(zoo)
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

    state = _process_state()
    device = str(state.device) if args.device == "auto" else args.device
    pipeline = _inference_pipeline(args, device)
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


def cmd_steer_eval(args) -> None:
    from worldsim.steering import OutcomePredictor
    from worldsim.steering.evaluate import steer_evaluate, steer_table, write_steer_report

    from worldsim.embodiments import resolve_embodiment

    pipeline = _inference_pipeline(args, args.device)
    name, plugin = resolve_embodiment(pipeline, args.embodiment)
    # the base policy's noise-free mode, acting on the imagined frames
    follow = plugin.follow_policy() if args.follow_steps else None
    predictor = OutcomePredictor(pipeline, aggregate=args.aggregate, seed=args.seed, embodiment=name,
                                 follow_policy=follow, follow_steps=args.follow_steps,
                                 num_inference_steps=args.num_inference_steps or None,
                                 timestep_spacing=args.timestep_spacing, num_samples=args.samples)
    report = steer_evaluate(predictor, args.candidates, num_states=args.num_states, horizon=args.horizon,
                            num_context=args.context, seed=args.seed, base_noise=args.base_noise,
                            chunk_length=args.chunk_length, oracle_follow=args.oracle_follow, progress_dir=args.out,
                            resume=args.resume, embodiment_plugin=plugin)
    print(steer_table(report))
    out = Path(args.out)
    written = write_steer_report(report, out)
    serialisable = {"settings": report["settings"], "results": report["results"], "model": str(args.model)}
    write_json(out / "report.json", serialisable)
    print(f"wrote {out / 'report.json'}, {written['plot']}" + (f", {written['video']}" if written["video"] else ""))


def _read_reports(paths: list[str], key: str, what: str) -> list[dict]:
    """The JSON objects at ``paths``; raises ValueError naming a file that lacks ``key`` or ``settings``."""
    from worldsim.utils.files import read_json_object

    reports = [read_json_object(path) for path in paths]
    for path, report in zip(paths, reports):
        if key not in report or "settings" not in report:
            raise ValueError(f"{path} is not {what}: it has no {key!r} and 'settings'")
    return reports


def cmd_steer_report(args) -> None:
    from worldsim.steering.evaluate import merge_steer_reports, steer_table, write_steer_report

    reports = _read_reports(args.reports, "results", "a steer-eval report (the report.json `worldsim steer-eval` "
                                                     "writes)")
    report = merge_steer_reports(reports) if len(reports) > 1 else reports[0]
    print(steer_table(report))
    out = Path(args.out)
    written = write_steer_report(report, out)
    write_json(out / "report.json", {key: report[key] for key in ("settings", "results", "model") if key in report})
    print(f"wrote {out / 'report.json'}, {written['plot']}")


def cmd_rank_report(args) -> None:
    from worldsim.evaluation.rank import merge_rank_reports, rank_table

    reports = _read_reports(args.reports, "policies", "a rank report (the JSON `worldsim rank --json` writes)")
    report = merge_rank_reports(reports)
    print(rank_table(report))
    if args.json:
        print(f"wrote {write_json(args.json, report)}")


def cmd_router_stats(args) -> None:
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.router import router_statistics

    pipeline = _load_pipeline(args.model)
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


def cmd_bench(args) -> None:
    from worldsim.benchmark import markdown_report, run_benchmark, write_markdown_section

    report = run_benchmark(args.model, args.num_envs, args.seconds, args.num_inference_steps, args.timestep_spacing,
                           args.latency_steps, args.memory_steps, args.train_steps, args.train_batch_size,
                           device=args.device, progress=lambda line: print(line, flush=True), decoder=args.decoder,
                           quantize=args.quantize)
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

    pipeline = _load_pipeline(args.model, args.device)
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


def cmd_demo(args) -> None:
    from worldsim.demo import run_demo

    run_demo(args.model, args.out, args.episodes, args.steps, args.context, args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="record episodes from a Gymnasium env into a LeRobot v3.0 dataset")
    p.add_argument("--env", required=True, help="Gymnasium id; an embodiment plug-in serving it supplies the pixel-observation settings, task text and state recording")
    p.add_argument("--policy", default="random", help="random | zoo:<member> (the plug-in's zoo) | a plug-in's collection policy | module:callable")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--policy-kwargs", nargs="*", metavar="KEY=VALUE",
                   help="policy arguments; a list value is cycled over episodes, e.g. noise_std=[0,5,15,30]")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="gym.make arguments")
    p.add_argument("--start", help="a start-state distribution the env's plug-in names (EmbodimentPlugin.start_distributions)")
    p.set_defaults(func=cmd_collect)

    for name, func, help_text in (("train-autoencoder", cmd_train_autoencoder, "train the frame autoencoder"),
                                  ("train", cmd_train, "train the world model (resumes from the latest checkpoint)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="run config YAML (configs/)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=100")
        p.set_defaults(func=func)

    def embodiment_arg(p):
        p.add_argument("--embodiment", default=None, help="the model's embodiment (default: the model's), or "
                       "module:object naming your own EmbodimentPlugin (registered on the spot)")

    def inference_args(p):
        p.add_argument("--decoder", choices=["full", "light"], default="full",
                       help="frame decoder: the autoencoder's or the model's light one (worldsim train-decoder)")
        p.add_argument("--quantize", choices=["int8", "int8+decoder"], default=None,
                       help="int8: the transformer blocks' linear layers in dynamic int8; int8+decoder: also the light "
                            "decoder in static int8 (with --decoder light). CPU; default: bf16 autocast")

    def sampler_args(p):
        p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame")
        p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None,
                       help="sigma spacing of the denoising steps (trailing: equal steps, better with 1-4 steps)")
        inference_args(p)
        p.add_argument("--context-noise", type=float, default=None, help="history noise level sigma in [0, 1)")
        p.add_argument("--action-guidance-scale", type=float, default=None,
                       help="classifier-free guidance on the action (1.0: off)")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
        p.add_argument("--embodiment", default=None, help="which embodiment's actions (multi-embodiment models)")

    p = sub.add_parser("rollout", help="imagine a rollout and write a video (real | imagined with --dataset)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", help="take context frames and actions from this episode")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first context frame within the episode")
    p.add_argument("--context", type=int, default=4, help="number of real context frames")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--actions", help=".npy file (S, A) of actions in env units, instead of the episode's")
    p.add_argument("--out", default="rollout.mp4", help=".mp4 or .gif")
    sampler_args(p)
    p.set_defaults(func=cmd_rollout)

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
    p.add_argument("--seed", type=int, default=0, help="first env seed; also seeds the branch actions")
    p.add_argument("--json", help="write the reports here")
    p.add_argument("--video", help="write real | imagined branches of the first context here")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("train-heads", help="train reward / termination / success heads of a model on real episodes")
    p.add_argument("--model", required=True, help="pipeline folder; the heads are written to <model>/heads")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset with next.reward (repeat)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--val-episodes", type=int, default=10, help="last episodes of the first dataset, held out")
    p.add_argument("--val-dataset", action="append", help="report on this dataset instead (repeat); trains on none of it")
    p.add_argument("--embodiment", help="the embodiment the datasets show (multi-embodiment models); default: the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write the heads here instead of <model>/heads")
    p.add_argument("--value-discount", type=float, default=None,
                   help="also train a value head with this gamma (e.g. 0.97): discounted future reward under the "
                        "data's policy, the steering score of a chunk's final imagined frame")
    p.set_defaults(func=cmd_train_heads)

    p = sub.add_parser("train-decoder", help="train a light frame decoder (a quarter of the decode FLOPs) on a "
                                             "model's latents of real frames")
    p.add_argument("--model", required=True, help="pipeline folder; the decoder is written to <model>/decoder")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset of the model's embodiment "
                                                                     "(repeat)")
    p.add_argument("--val-dataset", action="append", help="report on this dataset (repeat); default: the last 10 "
                                                          "episodes of the first dataset, held out")
    p.add_argument("--steps", type=int, default=9000, help="the shipped decoder's: 19 min on 2 CPU cores")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--block-out-channels", type=int, default=32, help="decoder width")
    p.add_argument("--num-blocks", type=int, nargs="+", default=[2, 2, 1, 0], help="residual blocks per stage")
    p.add_argument("--max-minutes", type=float, help="stop early after this many minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write the decoder here instead of <model>/decoder")
    p.set_defaults(func=cmd_train_decoder)

    p = sub.add_parser("distill", help="distil a model into a few-step student (1-4 denoising steps per frame, "
                                       "optionally fewer layers)")
    p.add_argument("--model", required=True, help="teacher pipeline folder")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset of the model's embodiment "
                                                                     "(repeat)")
    p.add_argument("--out", required=True, help="student pipeline folder to write")
    p.add_argument("--val-dataset", action="append", help="report on clips of this dataset (repeat); default: the "
                                                          "training datasets")
    p.add_argument("--student-steps", type=int, default=1, help="the student's Euler steps per frame")
    p.add_argument("--teacher-steps", type=int, help="the teacher's, a multiple of --student-steps (default: twice)")
    p.add_argument("--timestep-spacing", choices=["trailing", "linspace"], default="trailing")
    p.add_argument("--num-layers", type=int, help="student depth (default: the teacher's); fewer keeps evenly spaced "
                                                  "teacher blocks")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--val-clips", type=int, default=256)
    p.add_argument("--max-minutes", type=float, help="stop early after this many minutes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("rank", help="rank policies in imagination and in the real env (or against logged episodes); "
                       "report the agreement")
    p.add_argument("--model", required=True, help="model folder with outcome heads for the embodiment")
    embodiment_arg(p)
    p.add_argument("--policy", action="append",
                   help="'zoo' (the embodiment plug-in's zoo, default) or [name=]module:callable (repeat); a callable "
                        "maps observation -> action or action chunk, or is a LeRobot-style object")
    p.add_argument("--dataset", help="rank against logged episodes instead of the real env: each policy's initial "
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

    p = sub.add_parser("steer-eval", help="run the embodiment plug-in's stochastic chunk policy with and without steering in the real env")
    p.add_argument("--model", required=True, help="model folder with outcome heads for the embodiment")
    embodiment_arg(p)
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="K values (1 = base policy)")
    p.add_argument("--num-states", type=int, default=100, help="initial states (real env seeds)")
    p.add_argument("--horizon", type=int, default=64, help="real env steps per episode")
    p.add_argument("--context", type=int, default=4, help="real frames given to the predictor")
    p.add_argument("--base-noise", type=float, default=None, help="noise of the base policy's chunks, in the "
                   "plug-in's unit (default: the plug-in's steering_noise)")
    p.add_argument("--chunk-length", type=int, default=8, help="actions per chunk (H)")
    p.add_argument("--aggregate", choices=["value", "max", "last", "mean"],
                   help="how the heads score an imagined future (default: value if the heads have one, else max)")
    p.add_argument("--oracle-follow", type=int, default=0,
                   help="> 0: also execute every candidate in the real env (then this many pusher steps) to "
                        "measure how much a perfect predictor would gain")
    p.add_argument("--follow-steps", type=int, default=0,
                   help="> 0: continue each imagined candidate this many steps with the noise-free pusher (acting on "
                        "the imagined frames) before scoring it")
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

    p = sub.add_parser("steer-report", help="table and gain plot of steer-eval reports; merges runs of other K values "
                                            "or initial states")
    p.add_argument("reports", nargs="+", help="report.json files of `worldsim steer-eval` (same settings and model; "
                                              "the same or disjoint state ranges)")
    p.add_argument("--out", default="outputs/steer-eval-merged", help="folder for the merged report.json and gain.png")
    p.set_defaults(func=cmd_steer_report)

    p = sub.add_parser("rank-report", help="pool `worldsim rank` runs on disjoint initial states into one ranking")
    p.add_argument("reports", nargs="+", help="JSON files of `worldsim rank --json` (same policies and settings; "
                                              "disjoint state ranges)")
    p.add_argument("--json", help="write the pooled report here")
    p.set_defaults(func=cmd_rank_report)

    p = sub.add_parser("router-stats", help="expert load of the mixture of action experts per embodiment")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", action="append", required=True, help="embodiment=path to a LeRobot dataset (repeat)")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_router_stats)

    p = sub.add_parser("bench", help="imagined vs real env steps/s, latency, FLOP/s vs the matmul peak, training "
                                     "speed, rollout memory; JSON and a markdown table")
    p.add_argument("--model", required=True)
    p.add_argument("--num-envs", type=int, nargs="+", default=[16, 64], help="vector-env sizes (FLOP/s at the largest)")
    p.add_argument("--seconds", type=float, default=20.0, help="timing length of each env measurement")
    p.add_argument("--num-inference-steps", type=int, default=3, help="denoising steps per frame (0: the model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default="trailing")
    inference_args(p)
    p.add_argument("--latency-steps", type=int, default=200, help="single-env steps timed one by one")
    p.add_argument("--memory-steps", type=int, nargs="*", default=[200, 2000],
                   help="rollout lengths whose peak memory is measured, each in a fresh process")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps (0: skip)")
    p.add_argument("--train-batch-size", type=int, default=None, help="default: the model's run config")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--markdown", help="write the table into this markdown file (between bench markers)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("soak", help="a long imagined rollout and many resets: resident memory and finite outputs")
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=10_000, help="rollout length (0: skip)")
    p.add_argument("--resets", type=int, default=1_000, help="env resets (0: skip)")
    p.add_argument("--num-inference-steps", type=int, default=3, help="denoising steps per frame (0: the model's)")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default="trailing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser("demo", help="record fresh real episodes and imagine them with a trained model (make demo: the "
                       "shipped one)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--context", type=int, default=4)
    p.add_argument("--seed", type=int, default=20_000)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"worldsim {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
