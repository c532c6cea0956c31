"""A saved :class:`~worldsim.pipelines.WorldModelPipeline`: the folder, writing it and reading it back safely.

A saved pipeline is a folder::

    model_index.json        what this folder is (worldsim version, component classes, SHA-256 of each file)
    autoencoder/            diffusers AutoencoderKL (config.json + safetensors)
    transformer/            WorldModelTransformer (config.json + safetensors)
    scheduler/              scheduler_config.json
    heads/                  optional OutcomeHeads (reward / termination / success)
    decoder/                optional LightDecoder (a cheaper frame decoder; ``set_decoder("light")`` uses it)
    worldsim.json           embodiment, env id, fps, image size, window, action space and normalisation, defaults
    start_frames.safetensors   bundled start set for resets without context (uint8 frames + actions)

Components are loaded by classes from the allow-list of :mod:`worldsim.registry` (never imported by a name read from
a file), weights only from safetensors, and ``model_index.json`` holds the SHA-256 of every weight and config file,
checked at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from worldsim.models.heads import OutcomeHeads
from worldsim.registry import (COMPONENT_CLASSES, PIPELINE_CLASS, check_component_config, component_class,
                               verify_manifest, write_manifest)
from worldsim.utils.files import read_json_object

if TYPE_CHECKING:
    from worldsim.pipelines.world_model import WorldModelPipeline

PIPELINE_FILES = ("model_index.json", "worldsim.json", "autoencoder", "transformer", "scheduler")


def _load_weights(cls, folder: Path):
    """``cls.from_pretrained(folder)`` from safetensors only, with unreadable weights reported as ValueError.

    Raises:
        ValueError: the safetensors file is truncated or not a safetensors file (a pickle, say; it is never
            unpickled), or its tensors do not match the folder's ``config.json`` (names or shapes).
    """
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder} holds no .safetensors weights (worldsim loads no other weight format)")
    try:
        model, info = cls.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False,
                                          output_loading_info=True)
    except Exception as error:  # OSError, RuntimeError, safetensors' SafetensorError (a malformed header), ...
        raise ValueError(f"{folder}: cannot load {cls.__name__} weights: {type(error).__name__}: "
                         f"{str(error)[:500]}") from error
    wrong = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
             if info.get(kind)}
    if wrong:  # diffusers only warns and initialises the missing tensors at random: a silently wrong model
        detail = "; ".join(f"{kind} {list(value)[:6]}{' ...' if len(value) > 6 else ''}" for kind, value in wrong.items())
        raise ValueError(f"{folder}: cannot load {cls.__name__} weights: they do not match config.json ({detail})")
    return model


def heads_folders(path: Path) -> list[Path]:
    """The outcome-head folders of a pipeline folder: ``heads/<embodiment>/`` each, or ``heads/`` itself when it
    holds a single set of heads (folders saved before heads were per embodiment); sorted, empty when none."""
    root = Path(path) / "heads"
    if (root / "config.json").is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir()
                  if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file())


def save_pipeline(pipeline: WorldModelPipeline, path: str | Path) -> Path:
    """Writes ``pipeline`` as a folder (see the module docstring) with the SHA-256 manifest of its files in
    ``model_index.json`` (:func:`worldsim.registry.write_manifest`); returns the folder. What
    :meth:`WorldModelPipeline.save_pretrained <worldsim.pipelines.WorldModelPipeline.save_pretrained>` runs.

    Raises:
        RuntimeError: the transformer was quantized (:meth:`~worldsim.pipelines.WorldModelPipeline.quantize`);
            nothing is written.
    """
    if pipeline.quantization is not None:
        raise RuntimeError(f"this pipeline's transformer is quantized ({pipeline.quantization}) for inference; save "
                           "the float pipeline it was loaded from instead")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.autoencoder.save_pretrained(path / "autoencoder")
    pipeline.transformer.save_pretrained(path / "transformer")
    pipeline.scheduler.save_pretrained(path / "scheduler")
    (path / "worldsim.json").write_text(json.dumps(pipeline.metadata, indent=2))
    if pipeline.start_frames is not None:
        save_file({k: torch.as_tensor(v).contiguous() for k, v in pipeline.start_frames.items()},
                  path / "start_frames.safetensors")
    for name, module in pipeline.outcome_heads.items():  # heads/<embodiment>/, one folder per embodiment
        module.save_pretrained(path / "heads" / (name or pipeline.default_embodiment))
    if pipeline.decoder is not None:
        pipeline.decoder.save_pretrained(path / "decoder")
    from worldsim import __version__

    index = {"_class_name": PIPELINE_CLASS, "worldsim_version": __version__}
    for component, module in (("autoencoder", pipeline.autoencoder), ("transformer", pipeline.transformer),
                              ("scheduler", pipeline.scheduler),
                              ("heads", next(iter(pipeline.outcome_heads.values()), None)),
                              ("decoder", pipeline.decoder)):
        if module is not None:
            index[component] = next(list(key) for key, cls in COMPONENT_CLASSES[component].items()
                                    if isinstance(module, cls))
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    write_manifest(path)
    return path


def load_pipeline_parts(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Reads a pipeline folder written by :func:`save_pipeline` and checks it; what
    :meth:`WorldModelPipeline.from_pretrained <worldsim.pipelines.WorldModelPipeline.from_pretrained>` builds the
    pipeline from.

    Nothing in the folder can run code: component classes come from the allow-list of :mod:`worldsim.registry` (a
    ``model_index.json`` or ``config.json`` naming another class is refused before any weight is read), weights only
    from safetensors, and every file the manifest lists must match its SHA-256.

    Returns:
        The keyword arguments of ``WorldModelPipeline(...)``: ``autoencoder``, ``transformer`` (both on
        ``device``), ``scheduler``, ``metadata`` (``worldsim.json``), ``start_frames`` (dict of tensors, or None),
        ``heads`` (``{embodiment: OutcomeHeads}``, or None) and ``decoder`` (a ``LightDecoder``, or None).

    Raises:
        FileNotFoundError: the folder or one of its parts is missing (the message names it).
        ValueError: a class outside the allow-list, a malformed JSON file, a file whose SHA-256 differs from the
            manifest (truncated, corrupted or edited), weights that are not safetensors or do not match their
            ``config.json``, or ``worldsim.json`` without an action normaliser.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    for name in PIPELINE_FILES:
        if not (path / name).exists():
            raise FileNotFoundError(f"model folder {path} lacks {name}")
    index = read_json_object(path / "model_index.json")
    if index.get("_class_name") != PIPELINE_CLASS:
        raise ValueError(f"{path / 'model_index.json'}: _class_name {index.get('_class_name')!r} is not "
                         f"{PIPELINE_CLASS!r}; this folder is not a worldsim pipeline")
    classes = {}
    for component in ("autoencoder", "transformer", "scheduler", "heads", "decoder"):
        if component == "decoder" and component not in index:
            continue
        if component == "heads" and component not in index:
            if (path / "heads").is_dir():  # heads trained into a folder saved before manifests existed
                classes["heads"] = OutcomeHeads
            continue
        classes[component] = component_class(component, index.get(component), path / "model_index.json")
        for folder in heads_folders(path) if component == "heads" else [path / component]:
            check_component_config(component, folder)
    verify_manifest(path, index)
    metadata = read_json_object(path / "worldsim.json")
    if "embodiments" not in metadata and "action_normalizer" not in metadata:
        raise ValueError(f"{path / 'worldsim.json'} lacks action_normalizer")
    autoencoder = _load_weights(classes["autoencoder"], path / "autoencoder").to(device)
    transformer = _load_weights(classes["transformer"], path / "transformer").to(device)
    scheduler = classes["scheduler"].from_pretrained(path / "scheduler")
    start_frames = None
    if (path / "start_frames.safetensors").is_file():
        try:
            start_frames = load_file(path / "start_frames.safetensors")
        except Exception as error:  # safetensors raises its own error type for a malformed file
            raise ValueError(f"{path / 'start_frames.safetensors'} is not a readable safetensors file: {error}") \
                from error
    heads = None
    if "heads" in classes:
        heads = {}
        for folder in heads_folders(path):
            module = _load_weights(classes["heads"], folder).to(device)
            # a single heads/ folder (saved before heads were per embodiment) serves what its config names
            heads[module.config.embodiment if folder == path / "heads" else folder.name] = module
    decoder = _load_weights(classes["decoder"], path / "decoder").to(device) if "decoder" in classes else None
    return {"autoencoder": autoencoder, "transformer": transformer, "scheduler": scheduler, "metadata": metadata,
            "start_frames": start_frames, "heads": heads, "decoder": decoder}
