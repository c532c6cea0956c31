"""Training state in safetensors + JSON (nothing pickled): optimizer moments, LR-scheduler counters, RNG states.

accelerate's ``save_state`` pickles the optimizer (``torch.save``); worldsim checkpoints must load without
unpickling anything, so the optimizer state is flattened into tensors here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Writes ``optimizer.state_dict()`` as ``<path>.safetensors`` (tensors) and ``<path>.json`` (the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{param_id}.{key}"] = value
    save_file(tensors, str(path) + ".safetensors")
    Path(str(path) + ".json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Inverse of :func:`save_optimizer`.

    Raises:
        FileNotFoundError: a part is missing. ValueError: the state does not match the optimizer's parameters.
    """
    tensors = load_file(str(path) + ".safetensors")
    meta = json.loads(Path(str(path) + ".json").read_text())
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for name, value in meta["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    expected = sum(len(group["params"]) for group in optimizer.state_dict()["param_groups"])
    saved = sum(len(group["params"]) for group in meta["param_groups"])
    if expected != saved:
        raise ValueError(f"{path}: optimizer state has {saved} parameters, the model has {expected}")
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    return {"torch_cpu": torch.get_rng_state()}


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
