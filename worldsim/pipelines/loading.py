"""A saved :class:`~worldsim.pipelines.WorldModelPipeline`: the folder, writing it and reading it back safely.

A saved pipeline is a folder::

    model_index.json        what this folder is (worldsim version, component classes, SHA-256 of each file)
    autoencoder/            diffusers AutoencoderKL (config.json + safetensors)
    transformer/            WorldModelTransformer (config.json + safetensors)
    scheduler/              scheduler_config.json
    heads/                  optional OutcomeHeads (reward / termination / success)
    decoder/                optional LightDecoder (a cheaper frame decoder; ``set_decoder("light")`` uses it)
    state/<embodiment>/     optional StatePredictor per embodiment (each imagined frame's observation.state)
    worldsim.json           embodiment, env id, fps, image size, window, action space and normalisation, defaults
    start_frames.safetensors   bundled start set for resets without context (uint8 frames + actions)

Components are loaded by classes from the allow-list of :mod:`worldsim.registry` (never imported by a name read from
a file), weights only from safetensors, and ``model_index.json`` holds the SHA-256 of every weight and config file,
checked at load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from worldsim.models.heads import OutcomeHeads
from worldsim.models.state import StatePredictor
from worldsim.registry import (COMPONENT_CLASSES, MANIFEST_KEY, PIPELINE_CLASS, check_component_config,
                               component_class, manifest_files, verify_manifest, write_manifest)
from worldsim.utils.files import read_json_object, replace_folder, write_json

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


def state_folder(path: str | Path, embodiment: str) -> Path:
    """``<path>/state/<embodiment>``: where a pipeline folder keeps the state predictor of one embodiment.

    Raises:
        ValueError: ``embodiment`` is not a plain folder name (empty, hidden, ``..``, or holding a path separator).
    """
    if (not isinstance(embodiment, str) or not embodiment or embodiment.startswith(".") or "/" in embodiment
            or "\\" in embodiment):
        raise ValueError(f"embodiment {embodiment!r} cannot name a state predictor folder; expected a plain name")
    return Path(path) / "state" / embodiment


def state_folders(path: str | Path) -> list[Path]:
    """The state-predictor folders of a pipeline folder, ``state/<embodiment>/`` each (not hidden partial ones);
    sorted, empty when none."""
    root = Path(path) / "state"
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir()
                  if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file())


def save_state_predictor(predictor: StatePredictor, folder: str | Path, metrics: dict | None = None) -> Path:
    """Writes one state predictor (``config.json`` and safetensors weights, plus ``metrics.json`` when given) to
    ``folder``, replacing what is there, atomically: the files are written into a hidden sibling folder that is then
    moved into place, so an interrupted save leaves the old predictor or the new one, never a mix. Does not touch a
    pipeline's manifest (see :func:`save_state_predictors`). Returns ``folder``.

    Raises:
        TypeError: ``predictor`` is not a :class:`~worldsim.models.state.StatePredictor`.
        OSError: the folder cannot be written (the old one, if any, is kept).
    """
    if not isinstance(predictor, StatePredictor):
        raise TypeError(f"expected a StatePredictor, got {type(predictor).__name__}")
    return save_model_folder(predictor, folder, metrics)


def save_model_folder(model, folder: str | Path, metrics: dict | None = None) -> Path:
    """Writes a diffusers model (``save_pretrained``: ``config.json`` and safetensors weights, plus ``metrics.json``
    when given) to ``folder``, replacing what is there, atomically: the files go into a hidden sibling folder
    (``.<name>.partial``) that is then moved into place (:func:`~worldsim.utils.files.replace_folder`), so an
    interrupted save leaves the old folder or the new one, never a mix. Returns ``folder``.

    Raises:
        OSError: the folder cannot be written (the old one, if any, is kept).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged, safe_serialization=True)
    if metrics is not None:
        write_json(staged / "metrics.json", metrics)
    return replace_folder(staged, folder)


def save_state_predictors(predictors: dict[str, StatePredictor], path: str | Path, manifest: bool = True) -> list[Path]:
    """Writes state predictors into a pipeline folder, one ``state/<embodiment>/`` each (:func:`save_state_predictor`);
    other embodiments' predictors there are kept.

    Args:
        predictors: ``{embodiment: StatePredictor}``.
        path: the pipeline folder.
        manifest: then rewrite the folder's SHA-256 manifest (:func:`worldsim.registry.write_manifest`) when it has a
            ``model_index.json``; False when the caller writes it afterwards (as :func:`save_pipeline` does).

    Returns:
        The folders written, in the order of ``predictors``.

    Raises:
        ValueError: an embodiment name that cannot be a folder name.
        TypeError: a value that is not a :class:`~worldsim.models.state.StatePredictor`.
    """
    targets = [(state_folder(path, name), predictor) for name, predictor in predictors.items()]  # check names first
    written = [save_state_predictor(predictor, folder) for folder, predictor in targets]
    if manifest and (Path(path) / "model_index.json").is_file():
        write_manifest(Path(path))
    return written


def load_state_predictors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, StatePredictor]:
    """The state predictors of a pipeline folder, ``{embodiment: StatePredictor}`` from ``state/<embodiment>/``
    (empty when it has none), each on ``device`` and in eval mode.

    Checked as every component is: the class named by ``model_index.json``'s ``"state"`` entry and by each folder's
    ``config.json`` must be the allow-listed :class:`~worldsim.models.state.StatePredictor` (checked before any
    weight is read), weights are read only from safetensors and must match ``config.json``, and when the folder has a
    SHA-256 manifest every state file must be listed in it and match it (a predictor copied in without rewriting the
    manifest is refused: :func:`save_state_predictors` rewrites it).

    Raises:
        FileNotFoundError: state folders but no ``model_index.json``, or a file the manifest lists is missing.
        ValueError: a class outside the allow-list, a malformed JSON file, a state file missing from the manifest or
            differing from it, weights that are not safetensors or do not match ``config.json``, or a predictor whose
            ``embodiment`` is not its folder's name.
    """
    path = Path(path)
    folders = state_folders(path)
    if not folders:
        return {}
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"model folder {path} lacks model_index.json")
    index = read_json_object(index_path)
    cls = component_class("state", index["state"], index_path) if "state" in index else StatePredictor
    for folder in folders:
        check_component_config("state", folder)
    _verify_state_files(path, index)
    predictors = {}
    for folder in folders:
        module = _load_weights(cls, folder)
        if module.config.embodiment not in (None, folder.name):
            raise ValueError(f"{folder / 'config.json'}: the predictor was trained for embodiment "
                             f"{module.config.embodiment!r}, but its folder names {folder.name!r}")
        predictors[folder.name] = module.to(device).eval()
    return predictors


def _verify_state_files(path: Path, index: dict) -> None:
    """Checks the ``state/`` files of a pipeline folder against its manifest: each one present must be listed, and
    each one listed must be present and match (:func:`worldsim.registry.verify_manifest`). No manifest: no check.

    Raises:
        FileNotFoundError, ValueError: as :func:`verify_manifest`; ValueError also for an unlisted state file.
    """
    files = index.get(MANIFEST_KEY)
    if files is None:
        return
    if not isinstance(files, dict):
        verify_manifest(path, index)  # raises: a malformed manifest
    present = {file.relative_to(path).as_posix() for file in manifest_files(path)}
    unlisted = sorted(name for name in present - set(files) if name.startswith("state/"))
    if unlisted:
        raise ValueError(f"{path / unlisted[0]} is not in model_index.json's SHA-256 manifest; state predictors "
                         f"added to a saved folder need it rewritten (worldsim.registry.write_manifest, which "
                         f"`worldsim train-state` and save_state_predictors run)")
    verify_manifest(path, {MANIFEST_KEY: {name: digest for name, digest in files.items() if name.startswith("state/")}})


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
    # state/<embodiment>/, one folder per embodiment; the manifest below covers them
    save_state_predictors(getattr(pipeline, "state_predictors", None) or {}, path, manifest=False)
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
        ``heads`` (``{embodiment: OutcomeHeads}``, or None) and ``decoder`` (a ``LightDecoder``, or None). State
        predictors (``state/<embodiment>/``) are checked here (their classes, and their files by the manifest) but
        not loaded: :func:`load_state_predictors` loads them.

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
    for component in ("autoencoder", "transformer", "scheduler", "heads", "decoder", "state"):
        if component == "decoder" and component not in index:
            continue
        if component == "state":  # only checked here (before any weight is read); load_state_predictors reads them
            if component in index:
                component_class(component, index[component], path / "model_index.json")
            for folder in state_folders(path):
                check_component_config(component, folder)
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
