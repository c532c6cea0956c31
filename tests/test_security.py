"""Nothing in a model folder, checkpoint or config runs code, and a damaged file is refused by name."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.config import load_config


class _Trap:
    """Unpickling this creates ``path``: the evidence that a loader executed code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def model(tiny_pipeline_path, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_pipeline_path, path)
    return path


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_saved_folder_loads_and_lists_every_file(model):
    index = json.loads((model / "model_index.json").read_text())
    assert set(index["worldsim_files"]) >= {"worldsim.json", "transformer/diffusion_pytorch_model.safetensors",
                                            "autoencoder/config.json", "scheduler/scheduler_config.json"}
    WorldModelPipeline.from_pretrained(model)


@pytest.mark.parametrize("entry", [["os", "system"], ["subprocess", "Popen"], ["worldsim_evil", "Payload"],
                                   ["diffusers", "AutoencoderTiny"], "diffusers.AutoencoderKL", None])
def test_model_index_naming_another_class_is_refused_without_importing_it(model, tmp_path, monkeypatch, entry):
    # A module that would leave a marker if anything imported it.
    marker = tmp_path / "imported"
    (tmp_path / "worldsim_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Payload: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _edit_json(model / "model_index.json", lambda index: index.__setitem__("autoencoder", entry))
    with pytest.raises(ValueError, match="autoencoder"):
        WorldModelPipeline.from_pretrained(model)
    assert not marker.exists()


def test_component_config_naming_another_class_is_refused(model):
    _edit_json(model / "transformer" / "config.json", lambda config: config.__setitem__("_class_name", "Evil"))
    with pytest.raises(ValueError, match="_class_name 'Evil'"):
        WorldModelPipeline.from_pretrained(model)


def test_pickle_disguised_as_a_checkpoint_is_never_unpickled(model, tmp_path):
    marker = tmp_path / "unpickled"
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(pickle.dumps({"weight": _Trap(marker)}))
    with pytest.raises(ValueError, match="SHA-256"):  # the manifest catches it first
        WorldModelPipeline.from_pretrained(model)
    # without the manifest (a folder from before manifests), the safetensors parser refuses it
    _edit_json(model / "model_index.json", lambda index: index.pop("worldsim_files"))
    with pytest.raises(ValueError, match="cannot load WorldModelTransformer"):
        WorldModelPipeline.from_pretrained(model)
    # a torch.save pickle next to the (removed) safetensors file is not read either
    weights.unlink()
    torch.save({"weight": _Trap(marker)}, model / "transformer" / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        WorldModelPipeline.from_pretrained(model)
    assert not marker.exists()


def test_truncated_and_tampered_weights_are_refused_by_name(model):
    weights = model / "autoencoder" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="autoencoder/diffusion_pytorch_model.safetensors.*truncated"):
        WorldModelPipeline.from_pretrained(model)
    tampered = bytearray(data)
    tampered[-7] ^= 0xFF  # one byte of one weight: still a valid safetensors file, silently wrong without the manifest
    weights.write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="SHA-256"):
        WorldModelPipeline.from_pretrained(model)
    _edit_json(model / "model_index.json", lambda index: index.pop("worldsim_files"))
    WorldModelPipeline.from_pretrained(model)  # loads: the manifest is what catches an edit of the numbers


def test_config_that_does_not_match_the_weights_is_refused(model):
    _edit_json(model / "transformer" / "config.json", lambda config: config.__setitem__("num_layers", 3))
    _edit_json(model / "model_index.json", lambda index: index.pop("worldsim_files"))
    with pytest.raises(ValueError, match="cannot load WorldModelTransformer"):
        WorldModelPipeline.from_pretrained(model)


def test_manifest_cannot_point_outside_the_folder(model):
    _edit_json(model / "model_index.json",
               lambda index: index["worldsim_files"].__setitem__("../../etc/passwd", "0" * 64))
    with pytest.raises(ValueError, match="outside the model folder"):
        WorldModelPipeline.from_pretrained(model)


def test_malicious_run_config_is_refused(tmp_path):
    # Keys that other config systems turn into imports or object construction are unknown keys here.
    for text in ("train:\n  _target_: os.system\n", "transformer:\n  _target_: subprocess.Popen\n  args: [ls]\n",
                 "callbacks:\n  - builtins.exec\n", "dataset: !!python/object/apply:os.system [ls]\n"):
        path = tmp_path / "evil.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match="bad config"):
            load_config(path)
