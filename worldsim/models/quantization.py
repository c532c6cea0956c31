"""Int8 inference for the world-model transformer on CPU: dynamic quantization of its blocks' linear layers.

Dynamic quantization (PyTorch's ``torch.ao.nn.quantized.dynamic.Linear``, the fbgemm / x86 / oneDNN kernels) keeps
each weight as int8 with a per-tensor scale and quantizes the activations to int8 on every call, from their observed
range. On CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI) an int8 matmul runs at several times the
bf16 rate where bf16 has no matrix unit: on the Intel Xeon of docs/benchmarks.md a `(1024, 256) x (256, 1024)` layer
runs at about 780 GFLOP/s-equivalent in int8 against about 150 in bf16. The per-layer output error is about 2%
(relative L2 norm); the fidelity of whole imagined rollouts is measured in docs/benchmarks.md.

Only the linear layers inside the transformer blocks (attention projections, MLPs, adaLN modulation, action
adapter and experts) are quantized: they hold almost all of the FLOPs. The patch embedding, the timestep and action
embeddings and the output projection stay in floating point. Quantized layers compute in float32 and hand back the
caller's dtype, so they sit inside the pipeline's bf16 autocast unchanged.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

QUANTIZATION_MODES = ("int8",)


class DynamicInt8Linear(nn.Module):
    """An ``nn.Linear`` with int8 weights and per-call int8 activations (PyTorch dynamic quantization), CPU only.

    Args:
        linear: the float layer to quantize; its weight `(out_features, in_features)` is copied, not shared.

    Forward: ``x`` `(..., in_features)` in any float dtype -> `(..., out_features)` in ``x``'s dtype (the int8
    kernel itself takes and returns float32).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear
        from torch.ao.quantization import default_dynamic_qconfig

        float_linear = copy.deepcopy(linear).float()
        float_linear.qconfig = default_dynamic_qconfig
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every use
            warnings.simplefilter("ignore")
            self.inner = QuantizedLinear.from_float(float_linear)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float()).to(x.dtype)


def quantize_transformer_(transformer: nn.Module, mode: str = "int8") -> int:
    """Replaces, in place, every ``nn.Linear`` under ``transformer.blocks`` by a :class:`DynamicInt8Linear`.

    Args:
        transformer: a :class:`~worldsim.models.world_model.WorldModelTransformer` on the CPU, in float weights.
        mode: ``"int8"`` (the only mode).

    Returns:
        The number of layers replaced.

    Raises:
        ValueError: an unknown ``mode``, a transformer that is not on the CPU (the int8 kernels are CPU kernels),
            or one that has no ``blocks``; nothing is changed then.
        RuntimeError: the transformer is already quantized.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization mode must be one of {QUANTIZATION_MODES}, got {mode!r}")
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(transformer).__name__} has no `blocks` to quantize")
    device = next(transformer.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on the CPU only; the transformer is on {device}")
    if any(isinstance(module, DynamicInt8Linear) for module in blocks.modules()):
        raise RuntimeError("the transformer is already quantized")
    targets = [name for name, module in blocks.named_modules() if isinstance(module, nn.Linear)]
    replacements = {name: DynamicInt8Linear(blocks.get_submodule(name)) for name in targets}  # all built first
    for name, replacement in replacements.items():
        parent, _, leaf = name.rpartition(".")
        setattr(blocks.get_submodule(parent) if parent else blocks, leaf, replacement)
    return len(replacements)
