"""Training verbs: ``train-autoencoder``, ``train`` (the world model), ``train-heads`` (reward / termination /
success / value heads), ``train-state`` (a state predictor: each imagined frame's ``observation.state``),
``train-bc`` (a behaviour-cloned policy to rank), ``train-decoder`` (a light frame decoder) and ``distill`` (a
few-step student).

``train-autoencoder`` and ``train`` take a YAML run config under ``configs/`` plus dotted overrides. ``train-heads``,
``train-state``, ``train-bc``, ``train-decoder`` and ``distill`` take their settings as flags, and may also read them
from ``--config FILE.yaml`` (the fields of :class:`~worldsim.training.config.HeadsConfig`,
:class:`~worldsim.training.config.StateConfig`, :class:`~worldsim.training.config.BCConfig`,
:class:`~worldsim.training.config.DecoderConfig` or :class:`~worldsim.training.config.DistillConfig`) plus trailing
dotted overrides (``steps=100``): the defaults, then the file, then the flags given, then the overrides.
"""

from __future__ import annotations

import argparse
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


def _verb_config(args, schema):
    """The verb's config: its dataclass defaults, then ``--config FILE``, then the flags given, then the dotted
    overrides.

    A flag that sets a field of ``schema`` has the field's name as its dest and ``default=argparse.SUPPRESS``, so that
    a flag left out does not hide the file's value; the dataclass holds the default (the value the flag had).

    Raises:
        ValueError: a field set both by a flag and by a dotted override, an unknown key, a wrong type or an impossible
            value (naming the field).
        FileNotFoundError: ``--config`` names no file.
    """
    from dataclasses import fields

    from worldsim.training.config import load_config

    given = {f.name: getattr(args, f.name) for f in fields(schema) if hasattr(args, f.name)}
    both = sorted(given.keys() & {item.split("=", 1)[0].strip() for item in args.overrides})
    if both:
        raise ValueError(f"set both by a flag and by a KEY=VALUE override: {', '.join(both)}; give each once")
    return load_config(args.config, args.overrides, schema=schema, values=given)


def _add_verb_config(p) -> None:
    """``--config FILE`` and trailing ``KEY=VALUE`` overrides for a verb whose flags set a config dataclass."""
    p.add_argument("--config", help="YAML file of the settings (the flags' names, with underscores); the flags "
                                    "given and KEY=VALUE overrides take precedence")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the settings, e.g. steps=100")


def cmd_train_heads(args) -> None:
    from worldsim.training.config import HeadsConfig
    from worldsim.training.train_heads import train_heads

    report = train_heads(args.model, args.dataset, _verb_config(args, HeadsConfig),
                         val_datasets=args.val_dataset, output=args.output)
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


def cmd_train_state(args) -> None:
    from worldsim.training.config import StateConfig
    from worldsim.training.train_state import train_state_predictor

    report = train_state_predictor(args.model, args.dataset, _verb_config(args, StateConfig),
                                   val_datasets=args.val_dataset, embodiment=args.embodiment, output=args.output)
    held, loop = report["held_out"], report["closed_loop"]
    names = report["state_names"] or [f"[{i}]" for i in range(report["state_dim"])]
    print(f"held-out frames: {report['val_frames']}; state MAE {held['mae']:.4g} (copy the previous state: "
          f"{held['copy_previous']['mae']:.4g}); in training standard deviations {held['mae_normalized']:.3f} "
          f"(copy: {held['copy_previous']['mae_normalized']:.3f})")
    print("MAE per dimension (copy the previous state): " + ", ".join(
        f"{name} {mae:.4g} ({copy:.4g})" for name, mae, copy in zip(names, held["mae_per_dim"],
                                                                    held["copy_previous"]["mae_per_dim"])))
    if report["carried_dims"]:
        print("carried over unchanged (never changed within a training episode): "
              + ", ".join(names[d] for d in report["carried_dims"]))
    print(f"closed loop over {loop['episodes']} held-out episodes (mean length {loop['mean_length']:.0f}) fed its own "
          f"states: MAE at the last frame {loop['final']['mae']:.4g}, {loop['final']['mae_normalized']:.3f} std "
          f"(copy the first state: {loop['copy_first']['final']['mae']:.4g}, "
          f"{loop['copy_first']['final']['mae_normalized']:.3f} std); over all frames {loop['mean']['mae']:.4g} "
          f"(copy: {loop['copy_first']['mean']['mae']:.4g})")
    print(f"wrote {args.output or Path(args.model) / 'state' / report['embodiment']}")


def cmd_train_bc(args) -> None:
    from worldsim.training.config import BCConfig
    from worldsim.training.train_bc import train_bc

    report = train_bc(args.dataset, args.output, _verb_config(args, BCConfig), val_datasets=args.val_dataset)
    print(f"{report['train_frames']} training frames of {report['train_episodes']} episodes, tasks {report['tasks']}; "
          f"{report['num_parameters']:,} parameters, {report['seconds_per_100_steps']:.1f} s per 100 steps")
    for entry in report["checkpoints"]:
        held = (f"held-out action MSE {entry['val_action_mse']:.4f} (mean action: {entry['val_mean_action_mse']:.4f})"
                if entry["val_action_mse"] is not None else "no held-out data")
        print(f"step {entry['step']}: train loss {entry['train_loss']:.4f}, {held}; wrote {entry['folder']}")
    print(f"wrote {Path(args.output) / 'report.json'}")


def cmd_start_set(args) -> None:
    from worldsim.data.starts import write_start_set

    report = write_start_set(args.model, args.dataset, embodiment=args.embodiment, num_clips=args.num_clips,
                             num_context=args.context)
    print(f"wrote {report['clips']} start clips of {report['num_context']} frame(s) for {report['embodiment']!r} into "
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
    from worldsim.training.config import DecoderConfig
    from worldsim.training.train_decoder import train_decoder

    report = train_decoder(args.model, args.dataset, _verb_config(args, DecoderConfig),
                           val_datasets=args.val_dataset, output=args.output)
    flops, held = report["flops_per_frame"], report["held_out"]
    print(f"{report['steps']} steps in {report['wall_minutes']:.1f} min; {report['num_parameters']:,} parameters; "
          f"{flops['light'] / 1e6:.0f} MFLOP per frame (autoencoder's decoder: {flops['full'] / 1e6:.0f})")
    print(f"held-out frames: {held['frames']}; PSNR light {held['psnr']['light']:.2f} dB, full "
          f"{held['psnr']['full']:.2f} dB" + (f"; {held['frame_metric']['name']} light "
                                             f"{held['frame_metric']['light']:.2f}, full "
                                             f"{held['frame_metric']['full']:.2f}" if held["frame_metric"] else ""))
    print(f"wrote {args.output or Path(args.model) / 'decoder'}")


def cmd_distill(args) -> None:
    from worldsim.training.config import DistillConfig
    from worldsim.training.distill import distill_world_model

    config = _verb_config(args, DistillConfig)
    report = distill_world_model(args.model, args.dataset, args.out, config, val_datasets=args.val_dataset)
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


# A flag that sets a field of the verb's config dataclass: left out, it leaves the field to --config FILE or the
# dataclass default (which is the value the flag had before configs); see _verb_config.
_UNSET = argparse.SUPPRESS


def _add_train_heads(sub) -> None:
    p = sub.add_parser("train-heads", help="train reward / termination / success heads of a model on real episodes")
    p.add_argument("--model", required=True, help="pipeline folder; the heads are written to "
                   "<model>/heads/<embodiment> (other embodiments' heads are kept)")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset with next.reward (repeat)")
    p.add_argument("--steps", type=int, default=_UNSET)
    p.add_argument("--batch-size", type=int, default=_UNSET)
    p.add_argument("--learning-rate", type=float, default=_UNSET)
    p.add_argument("--val-episodes", type=int, default=_UNSET, help="last episodes of the first dataset, held out")
    p.add_argument("--val-dataset", action="append", help="report on this dataset instead (repeat); trains on none of it")
    p.add_argument("--embodiment", default=_UNSET,
                   help="the embodiment the datasets show (multi-embodiment models); default: the model's")
    p.add_argument("--seed", type=int, default=_UNSET)
    p.add_argument("--output", help="write the heads here instead of <model>/heads")
    p.add_argument("--value-discount", type=float, default=_UNSET,
                   help="also train a value head with this gamma (e.g. 0.97): discounted future reward under the "
                        "data's policy, the steering score of a chunk's final imagined frame")
    _add_verb_config(p)
    p.set_defaults(func=cmd_train_heads)


def _add_train_state(sub) -> None:
    p = sub.add_parser("train-state", help="train a state predictor (each imagined frame's observation.state, from "
                                           "its latent and the previous state) on real episodes")
    p.add_argument("--model", required=True, help="pipeline folder; the predictor is written to "
                   "<model>/state/<embodiment> (other embodiments' predictors are kept)")
    p.add_argument("--dataset", action="append", required=True,
                   help="LeRobot dataset with observation.state (repeat)")
    p.add_argument("--val-dataset", action="append", help="report on this dataset instead (repeat); trains on none "
                                                          "of it")
    p.add_argument("--embodiment", help="the embodiment the datasets show (multi-embodiment models); default: the "
                                        "model's")
    p.add_argument("--output", help="write the predictor here instead of <model>/state/<embodiment>")
    p.add_argument("--steps", type=int, default=_UNSET)
    p.add_argument("--batch-size", type=int, default=_UNSET)
    p.add_argument("--learning-rate", type=float, default=_UNSET)
    p.add_argument("--hidden-dim", type=int, default=_UNSET, help="convolution width (the MLP is 4x as wide)")
    p.add_argument("--previous-state-noise", type=float, default=_UNSET,
                   help="std of the noise added to the previous state in training, in units of each dimension's "
                        "standard deviation (default 0.2): teaches the predictor to correct a wrong previous state "
                        "from the frame, so closed-loop rollouts do not drift")
    p.add_argument("--action-input", action=argparse.BooleanOptionalAction, default=_UNSET,
                   help="also read the action that produced each frame (default: yes)")
    p.add_argument("--latent-noise", type=float, default=_UNSET,
                   help="largest std of Gaussian noise added to the unit-variance latents in training (default 2.0):"
                        " teaches the predictor to lean on the previous state and the action where a frame is unclear")
    p.add_argument("--imagined-fraction", type=float, default=_UNSET,
                   help="share of each batch from frames the model imagines under the recorded actions, paired with "
                        "the real states (default 0; 0.5 did best on Meta-World, for ~1.5 s of imagination per "
                        "training episode on 2 CPU cores)")
    p.add_argument("--imagined-horizon", type=int, default=_UNSET,
                   help="imagined frames per training episode (default 40)")
    p.add_argument("--imagined-context", type=int, default=_UNSET,
                   help="real frames each imagined window starts from (default 4)")
    p.add_argument("--val-episodes", type=int, default=_UNSET, help="last episodes of the first dataset, held out")
    p.add_argument("--seed", type=int, default=_UNSET)
    _add_verb_config(p)
    p.set_defaults(func=cmd_train_state)


def _add_train_bc(sub) -> None:
    p = sub.add_parser("train-bc", help="train a behaviour-cloned policy (camera images + observation.state + task "
                                        "text -> action) on recorded episodes, saved at several steps")
    p.add_argument("--dataset", action="append", required=True,
                   help="LeRobot dataset with observation.state, the cameras and task texts (repeat)")
    p.add_argument("--val-dataset", action="append", help="score each checkpoint's action error on this dataset "
                                                          "(repeat); trains on none of it")
    p.add_argument("--output", required=True, help="a new folder: step-<step>/ per checkpoint and report.json")
    p.add_argument("--steps", type=int, default=_UNSET)
    p.add_argument("--batch-size", type=int, default=_UNSET)
    p.add_argument("--learning-rate", type=float, default=_UNSET)
    p.add_argument("--save-steps", type=int, nargs="+", default=_UNSET,
                   help="write a checkpoint after these steps (the last step is always one)")
    p.add_argument("--success-only", action=argparse.BooleanOptionalAction, default=_UNSET,
                   help="train only on episodes that reach next.success (default: yes)")
    p.add_argument("--seed", type=int, default=_UNSET)
    _add_verb_config(p)
    p.set_defaults(func=cmd_train_bc)


def _add_train_decoder(sub) -> None:
    p = sub.add_parser("train-decoder", help="train a light frame decoder (a quarter of the decode FLOPs) on a "
                                             "model's latents of real frames")
    p.add_argument("--model", required=True, help="pipeline folder; the decoder is written to <model>/decoder")
    p.add_argument("--dataset", action="append", required=True, help="LeRobot dataset of the model's embodiment "
                                                                     "(repeat)")
    p.add_argument("--val-dataset", action="append", help="report on this dataset (repeat); default: the last 10 "
                                                          "episodes of the first dataset, held out")
    p.add_argument("--steps", type=int, default=_UNSET, help="the shipped decoder's: 19 min on 2 CPU cores")
    p.add_argument("--batch-size", type=int, default=_UNSET)
    p.add_argument("--learning-rate", type=float, default=_UNSET)
    p.add_argument("--block-out-channels", type=int, default=_UNSET, help="decoder width")
    p.add_argument("--num-blocks", type=int, nargs="+", default=_UNSET, help="residual blocks per stage")
    p.add_argument("--max-minutes", type=float, default=_UNSET, help="stop early after this many minutes")
    p.add_argument("--seed", type=int, default=_UNSET)
    p.add_argument("--output", help="write the decoder here instead of <model>/decoder")
    _add_verb_config(p)
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
    p.add_argument("--student-steps", type=int, default=_UNSET, help="the student's Euler steps per frame")
    p.add_argument("--teacher-steps", type=int, default=_UNSET,
                   help="the teacher's, a multiple of --student-steps (default: twice)")
    p.add_argument("--timestep-spacing", choices=["trailing", "linspace"], default=_UNSET)
    p.add_argument("--num-layers", type=int, default=_UNSET, help="student depth (default: the teacher's); fewer keeps "
                                                                  "evenly spaced teacher blocks")
    p.add_argument("--steps", type=int, default=_UNSET)
    p.add_argument("--batch-size", type=int, default=_UNSET)
    p.add_argument("--learning-rate", type=float, default=_UNSET)
    p.add_argument("--val-clips", type=int, default=_UNSET)
    p.add_argument("--max-minutes", type=float, default=_UNSET, help="stop early after this many minutes")
    p.add_argument("--seed", type=int, default=_UNSET)
    _add_verb_config(p)
    p.set_defaults(func=cmd_distill)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "train-autoencoder": _add_train_autoencoder,
    "train": _add_train,
    "train-heads": _add_train_heads,
    "train-state": _add_train_state,
    "train-bc": _add_train_bc,
    "train-decoder": _add_train_decoder,
    "distill": _add_distill,
    "start-set": _add_start_set,
}
