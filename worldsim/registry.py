"""What a saved model folder may name, and the integrity of the files it holds.

A diffusers-style folder names the class of each component in ``model_index.json`` (``["diffusers",
"AutoencoderKL"]``) and in each component's ``config.json`` (``"_class_name"``). diffusers' generic loader imports
whatever module such an entry names; worldsim never does. Every entry is looked up in :data:`COMPONENT_CLASSES`, an
allow-list of the classes worldsim itself builds, and anything else is refused before a single weight is read.
Weights are read only from safetensors files (no pickle is ever opened).

``model_index.json`` also carries ``worldsim_files``: the SHA-256 of every weight and config file of the folder,
written by :func:`write_manifest` when the folder is saved and checked by :func:`verify_manifest` when it is
loaded, so a truncated, corrupted or edited file is refused with its name instead of loading wrong weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from diffusers import AutoencoderKL, AutoencoderKLWan, FlowMatchEulerDiscreteScheduler

from worldsim.models.autoencoders import LightDecoder
from worldsim.models.backbones import WanWorldModel
from worldsim.models.heads import OutcomeHeads
from worldsim.models.state import StatePredictor
from worldsim.models.world_model import WorldModelTransformer
from worldsim.utils.files import read_json_object, write_json

#: component name -> {(library, class name): class}: the only classes a model folder may name.
COMPONENT_CLASSES: dict[str, dict[tuple[str, str], type]] = {
    "autoencoder": {("diffusers", "AutoencoderKL"): AutoencoderKL, ("diffusers", "AutoencoderKLWan"): AutoencoderKLWan},
    "transformer": {("worldsim", "WorldModelTransformer"): WorldModelTransformer,
                    ("worldsim", "WanWorldModel"): WanWorldModel},
    "scheduler": {("diffusers", "FlowMatchEulerDiscreteScheduler"): FlowMatchEulerDiscreteScheduler},
    "heads": {("worldsim", "OutcomeHeads"): OutcomeHeads},
    "decoder": {("worldsim", "LightDecoder"): LightDecoder},
    "state": {("worldsim", "StatePredictor"): StatePredictor},
}
#: components kept one folder per embodiment, ``<component>/<embodiment>/`` (heads also as a single folder)
PER_EMBODIMENT = ("heads", "state")
PIPELINE_CLASS = "WorldModelPipeline"
MANIFEST_KEY = "worldsim_files"
#: the files of a component folder that the manifest covers (weights and configs; not logs, videos or metrics).
MANIFEST_PATTERNS = ("*.safetensors", "config.json", "scheduler_config.json")


def component_class(component: str, entry, source: Path | str = "model_index.json") -> type:
    """The allow-listed class for one ``model_index.json`` entry.

    Args:
        component: ``"autoencoder"``, ``"transformer"``, ``"scheduler"``, ``"heads"``, ``"decoder"`` or
            ``"state"``.
        entry: the file's value for it, ``[library, class_name]``.
        source: the file the entry came from (for the message).

    Returns:
        The class (never imported from the entry: looked up in :data:`COMPONENT_CLASSES`).

    Raises:
        ValueError: an unknown component, a malformed entry, or a class outside the allow-list; the message names
            the entry and the allowed classes.
    """
    if component not in COMPONENT_CLASSES:
        raise ValueError(f"{source}: unknown component {component!r}; expected one of {sorted(COMPONENT_CLASSES)}")
    allowed = COMPONENT_CLASSES[component]
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise ValueError(f"{source}: entry {component!r} is {entry!r}; expected [library, class name], one of "
                         f"{[list(key) for key in allowed]}")
    key = (entry[0], entry[1])
    if key not in allowed:
        raise ValueError(f"{source}: {component!r} names {list(key)}, which is not an allowed class; worldsim loads "
                         f"only {[list(k) for k in allowed]} (classes are never imported by a name read from a file)")
    return allowed[key]


def check_component_config(component: str, folder: Path) -> None:
    """Refuses a component folder whose ``config.json`` names a class other than the allow-listed one.

    Raises:
        FileNotFoundError: the folder has no config file.
        ValueError: the config is not JSON or its ``_class_name`` is not the component's allowed class.
    """
    config_path = folder / ("scheduler_config.json" if component == "scheduler" else "config.json")
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {config_path.name}")
    config = read_json_object(config_path)
    names = {cls.__name__ for cls in COMPONENT_CLASSES[component].values()}
    if config.get("_class_name") not in names:
        raise ValueError(f"{config_path}: _class_name {config.get('_class_name')!r} is not allowed for {component!r};"
                         f" expected one of {sorted(names)}")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_files(folder: Path) -> list[Path]:
    """The files of a pipeline folder that :func:`write_manifest` covers, sorted."""
    files = [folder / "worldsim.json"]
    files += sorted(folder.glob("*.safetensors"))
    for component in COMPONENT_CLASSES:
        if (folder / component).is_dir():
            for pattern in MANIFEST_PATTERNS:
                files += sorted((folder / component).glob(pattern))
                if component in PER_EMBODIMENT:  # <component>/<embodiment>/ each (not a hidden partial one)
                    files += sorted(path for path in (folder / component).glob(f"*/{pattern}")
                                    if not path.parent.name.startswith("."))
    return [path for path in files if path.is_file()]


def write_manifest(folder: Path) -> dict[str, str]:
    """Records the SHA-256 of every weight and config file in ``folder/model_index.json`` (atomic rewrite).

    Returns:
        ``{relative path: sha256}``.

    Raises:
        FileNotFoundError: ``folder/model_index.json`` is missing.
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    index = read_json_object(index_path)
    files = {path.relative_to(folder).as_posix(): file_digest(path) for path in manifest_files(folder)}
    index[MANIFEST_KEY] = files
    for component, entry in (("heads", ["worldsim", "OutcomeHeads"]), ("decoder", ["worldsim", "LightDecoder"]),
                             ("state", ["worldsim", "StatePredictor"])):
        if (folder / component).is_dir():  # optional components trained into an existing folder
            index[component] = entry
    write_json(index_path, index)
    return files


def verify_manifest(folder: Path, index: dict) -> None:
    """Checks every file that ``model_index.json`` lists against its recorded SHA-256.

    A folder saved before manifests existed (no ``worldsim_files``) is not checked.

    Raises:
        FileNotFoundError: a listed file is missing.
        ValueError: a listed file's bytes differ from what was saved (truncated, corrupted or edited), or the manifest
            is malformed; the message names the file.
    """
    files = index.get(MANIFEST_KEY)
    if files is None:
        return
    if not isinstance(files, dict):
        raise ValueError(f"{folder / 'model_index.json'}: {MANIFEST_KEY} must map file names to SHA-256 digests")
    root = folder.resolve()
    for name, expected in files.items():
        path = (folder / name).resolve()
        if root not in path.parents:
            raise ValueError(f"{folder / 'model_index.json'}: {MANIFEST_KEY} names {name!r}, outside the model folder")
        if not path.is_file():
            raise FileNotFoundError(f"model folder {folder} lacks {name} (listed in model_index.json)")
        actual = file_digest(path)
        if actual != expected:
            raise ValueError(f"{folder / name}: SHA-256 {actual[:16]}... differs from the {str(expected)[:16]}... recorded "
                             f"in model_index.json when it was saved; the file is truncated, corrupted or was edited")
