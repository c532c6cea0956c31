"""Helpers shared by several verb groups: loading a pipeline, the process state under ``accelerate launch``,
reading JSON reports, and the arguments several verbs take.
"""

from __future__ import annotations

import argparse


def process_state():
    """accelerate's ``PartialState`` of this process: one process for a plain run, several under
    ``accelerate launch`` (on CPU machines with ``ACCELERATE_USE_CPU=1``, which selects gloo; see docs/scaling.md)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def load_pipeline(path: str, device: str = "cpu"):
    from worldsim.pipelines.world_model import WorldModelPipeline

    return WorldModelPipeline.from_pretrained(path, device)


def inference_pipeline(args, device: str = "cpu"):
    """The model of ``args.model`` with the frame decoder (``--decoder``) and quantization (``--quantize``) asked for."""
    pipeline = load_pipeline(args.model, device)
    if args.decoder:  # None keeps the model's default (worldsim.json "decoder")
        pipeline.set_decoder(args.decoder)
    if args.quantize:
        pipeline.quantize(args.quantize)
    return pipeline


def read_reports(paths: list[str], key: str, what: str) -> list[dict]:
    """The JSON objects at ``paths``; raises ValueError naming a file that lacks ``key`` or ``settings``."""
    from worldsim.utils.files import read_json_object

    reports = [read_json_object(path) for path in paths]
    for path, report in zip(paths, reports):
        if key not in report or "settings" not in report:
            raise ValueError(f"{path} is not {what}: it has no {key!r} and 'settings'")
    return reports


def embodiment_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--embodiment``: one of the model's embodiments or a ``module:object`` plug-in."""
    p.add_argument("--embodiment", default=None, help="the model's embodiment (default: the model's), or "
                   "module:object naming your own EmbodimentPlugin (registered on the spot)")


def inference_args(p: argparse.ArgumentParser) -> None:
    """Add ``--decoder`` and ``--quantize``, read by :func:`inference_pipeline`."""
    p.add_argument("--decoder", choices=["full", "light"], default=None,
                   help="frame decoder: the autoencoder's or the model's light one (worldsim train-decoder); "
                        "default: the model's")
    p.add_argument("--quantize", choices=["int8", "int8+decoder"], default=None,
                   help="int8: the transformer blocks' linear layers in dynamic int8; int8+decoder: also the light "
                        "decoder in static int8 (with --decoder light). CPU; default: bf16 autocast")


def sampler_args(p: argparse.ArgumentParser) -> None:
    """Add the sampler settings of an imagined rollout (steps, spacing, context noise, guidance, seed, embodiment),
    :func:`inference_args` and :func:`device_arg`."""
    p.add_argument("--num-inference-steps", type=int, default=None, help="denoising steps per frame")
    p.add_argument("--timestep-spacing", choices=["linspace", "trailing"], default=None,
                   help="sigma spacing of the denoising steps (trailing: equal steps, better with 1-4 steps)")
    inference_args(p)
    p.add_argument("--context-noise", type=float, default=None, help="history noise level sigma in [0, 1)")
    p.add_argument("--action-guidance-scale", type=float, default=None,
                   help="classifier-free guidance on the action (1.0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--embodiment", default=None, help="which embodiment's actions (multi-embodiment models)")
    device_arg(p)


def device_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--device`` (where the world model runs; noise is drawn on the CPU, so a seed gives the same noise)."""
    p.add_argument("--device", default="cpu", help="where the world model runs: cpu, cuda, cuda:1, ...")


def model_embodiment(pipeline, value: str | None) -> str:
    """The model's embodiment name that ``--embodiment value`` means: the name itself, or the name of the plug-in a
    ``module:object`` value names (registered on the spot, so the commands that ask the registry find it).

    Raises:
        ValueError: the model has no such embodiment, or a bad ``module:object``.
    """
    if value is not None and ":" in value:
        from worldsim.embodiments import resolve_embodiment

        return resolve_embodiment(pipeline, value)[0]
    return pipeline.embodiment(value).name
