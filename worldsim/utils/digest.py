"""SHA-256 digests of what a result depends on: module weights (quantized layers included) and arrays, so a cache or
a resumed run can tell whether its inputs are the ones it was made from.

Imports nothing from worldsim above :mod:`worldsim.utils`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def update_digest(digest, value) -> None:
    """Feeds one value into a :mod:`hashlib` object: a tensor's bytes (a quantized tensor's dequantized values; the
    shape is left to the name that comes with it in a state dict), an array's shape, dtype and bytes, the parts of a
    tuple or list in order (a quantized layer's packed weight and bias), the keys and values of a dict in sorted key
    order, or the ``repr`` of anything else (a dtype, a number, a string). Tensors and sequences are fed as
    ``steer-eval`` has always fed them, so its recorded weight digests stay valid.

    Args:
        digest: a ``hashlib`` object (``hashlib.sha256()``), updated in place.
        value: what to feed in.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.dequantize() if value.is_quantized else value
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"array{array.shape}{array.dtype.str}".encode())
        digest.update(array.view(np.uint8).reshape(-1).data)
    elif isinstance(value, (tuple, list)):
        for part in value:
            update_digest(digest, part)
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            update_digest(digest, value[key])
    else:
        digest.update(repr(value).encode())


def modules_sha256(*modules: torch.nn.Module | None) -> str:
    """SHA-256 (hex) of the modules' state dicts, parameter and buffer names included; None entries are skipped.

    Two modules with equal weights under equal names give the same digest whatever their device; a changed value or
    name changes it.

    Returns:
        64 hexadecimal characters.
    """
    digest = hashlib.sha256()
    for module in modules:
        if module is None:
            continue
        for name, value in module.state_dict().items():
            digest.update(name.encode())
            update_digest(digest, value)
    return digest.hexdigest()
