"""Training verbs: ``train-autoencoder``, ``train`` (the world model), ``train-heads`` (reward / termination /
success / value heads), ``train-decoder`` (a light frame decoder) and ``distill`` (a few-step student).

``train-autoencoder`` and ``train`` take a YAML run config under ``configs/`` plus dotted overrides.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from worldsim.cli.common import process_state


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
    if process_state().is_main_process:  # under `accelerate launch`, one line, not one per process
        print(f"world model written to {out}")


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
    print(f"wrote {args.output or Path(args.model) / 'heads' / report['embodiment']}")


def cmd_start_set(args) -> None:
    from worldsim.data.starts import write_start_set

    report = write_start_set(args.model, args.dataset, embodiment=args.embodiment, num_clips=args.num_clips,
                             num_context=args.context)
    print(f"wrote {report['clips']} start clips of {report['num_context']} frames for {report['embodiment']!r} into "
          f"{Path(args.model) / 'start_frames.safetensors'}")


def _add_start_set(sub) -> None:
    p = sub.add_parser("start-set", help="rewrite a model's bundled start clips (what reset() without a context "
                                         "draws from) from datasets")
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset of the embodiment (repeat); "
                   "clips are the first frames of its episodes, in order")
    p.add_argument("--embodiment", help="whose start set (multi-embodiment models); default: the model's")
    p.add_argument("--num-clips", type=int, default=100)
    p.add_argument("--context", type=int, default=4, help="frames per clip")
    p.set_defaults(func=cmd_start_set)


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


def _add_config_run(sub, name: str, func, help_text: str) -> None:
    """A verb that runs ``func`` on a YAML run config plus dotted overrides."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", required=True, help="run config YAML (configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=100")
    p.set_defaults(func=func)


def _add_train_autoencoder(sub) -> None:
    _add_config_run(sub, "train-autoencoder", cmd_train_autoencoder, "train the frame autoencoder")


def _add_train(sub) -> None:
    _add_config_run(sub, "train", cmd_train, "train the world model (resumes from the latest checkpoint)")


def _add_train_heads(sub) -> None:
    p = sub.add_parser("train-heads", help="train reward / termination / success heads of a model on real episodes")
    p.add_argument("--model", required=True, help="pipeline folder; the heads are written to "
                   "<model>/heads/<embodiment> (other embodiments' heads are kept)")
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


def _add_train_decoder(sub) -> None:
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


def _add_distill(sub) -> None:
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


_PARSERS = {
    "train-autoencoder": _add_train_autoencoder,
    "train": _add_train,
    "train-heads": _add_train_heads,
    "train-decoder": _add_train_decoder,
    "distill": _add_distill,
    "start-set": _add_start_set,
}


def add_parsers(sub, verbs: Iterable[str] | None = None) -> None:
    """Add this group's verbs to ``sub``, the ``add_subparsers`` action of ``worldsim``.

    Args:
        sub: the subparsers action; `worldsim --help` lists verbs in the order they are added.
        verbs: the verbs to add, in this order (default: all of them).

    Raises:
        KeyError: if a name in ``verbs`` is not one of this group's verbs.
    """
    for verb in verbs or _PARSERS:
        _PARSERS[verb](sub)
