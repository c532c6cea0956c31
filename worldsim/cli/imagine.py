"""Imagination verbs: ``rollout`` (one imagined rollout to a video) and ``demo`` (fresh real episodes
imagined side by side by a trained model).
"""

from __future__ import annotations

import time

import numpy as np

from worldsim.cli.common import inference_pipeline, sampler_args


def cmd_rollout(args) -> None:
    import torch

    from worldsim.data.frame_cache import load_frame_cache
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation.report import side_by_side
    from worldsim.utils.video import write_video

    pipeline = inference_pipeline(args, args.device)
    generator = torch.Generator().manual_seed(args.seed)
    real = None
    if args.dataset:
        dataset = LeRobotDataset(args.dataset)
        if not 0 <= args.episode < dataset.num_episodes:
            raise SystemExit(f"--episode {args.episode} out of range: {args.dataset} has {dataset.num_episodes} episodes")
        frames = load_frame_cache(dataset, pipeline.image_size, video_keys=pipeline.composed_cameras)
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


def cmd_demo(args) -> None:
    from worldsim.demo import run_demo

    run_demo(args.model, args.out, args.episodes, args.steps, args.context, args.seed)


def _add_rollout(sub) -> None:
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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="record fresh real episodes and imagine them with a trained model (make demo: the "
                       "shipped one)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--context", type=int, default=4)
    p.add_argument("--seed", type=int, default=20_000)
    p.set_defaults(func=cmd_demo)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "rollout": _add_rollout,
    "demo": _add_demo,
}
