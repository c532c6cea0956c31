"""Int8 inference on CPU: dynamic quantization of the world-model transformer's block linear layers, and static
quantization of the light frame decoder.

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

The light decoder (diffusers' ``DecoderTiny``: 3 x 3 convolutions, ReLUs, nearest upsampling) is quantized
statically instead (PyTorch FX graph mode post-training quantization, ``prepare_fx`` / ``convert_fx`` with the x86
backend's default ``QConfigMapping``): every convolution runs in int8 with activation scales fixed by a calibration
pass over real latents. Convolutions are where dynamic quantization does not apply.
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
from torch import nn

QUANTIZATION_MODES = ("int8", "int8+decoder")
QUANTIZATION_LABELS = {"int8": "transformer blocks in int8 (dynamic)",
                       "int8+decoder": "transformer blocks in int8 (dynamic), light decoder in int8 (static)"}


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
    if mode != "int8":  # "int8+decoder" is a pipeline mode: the decoder part is quantize_decoder_'s
        raise ValueError(f"transformer quantization mode must be 'int8', got {mode!r}")
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


class StaticInt8Decoder(nn.Module):
    """A light decoder's network with int8 weights and int8 activations (PyTorch FX post-training static
    quantization, x86 backend), calibrated once on latents; CPU only.

    Args:
        network: the float network (a :class:`~worldsim.models.autoencoders.LightDecoder`'s ``decoder``, diffusers'
            ``DecoderTiny``); it is copied, not changed.
        calibration: `(N, C, h, w)` float latents the network will see (real frames' normalised latents): the
            activation ranges of every layer are observed on them (histogram observers).

    Forward: latents `(B, C, h, w)` in any float dtype -> pixels `(B, 3, H, W)` in the input's dtype (the int8
    graph itself takes and returns float32).
    """

    def __init__(self, network: nn.Module, calibration: torch.Tensor):
        super().__init__()
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every use
            warnings.simplefilter("ignore")
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            network = copy.deepcopy(network).float().eval()
            calibration = calibration.float().contiguous(memory_format=torch.channels_last)
            # DecoderTiny's input squashing (tanh(x / 3) * 3) stays in float: quantized, the latents lose enough
            # precision to tint the grey T block blue (the agent's colour), and the agent locator's error on decoded
            # real latents grew from 2.1 to 14.7 px; with it in float it is 2.4 px, at the same speed
            mapping = get_default_qconfig_mapping("x86")
            for op in (torch.tanh, operator.truediv, operator.mul):
                mapping = mapping.set_object_type(op, None)
            prepared = prepare_fx(network, mapping, example_inputs=(calibration[:1],))
            with torch.no_grad():
                for chunk in calibration.split(64):
                    prepared(chunk)
            self.inner = convert_fx(prepared)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner(latents.float().contiguous(memory_format=torch.channels_last)).to(latents.dtype)


def quantize_decoder_(decoder: nn.Module, calibration: torch.Tensor) -> None:
    """Replaces, in place, a :class:`~worldsim.models.autoencoders.LightDecoder`'s network by a
    :class:`StaticInt8Decoder` calibrated on ``calibration``.

    Args:
        decoder: a ``LightDecoder`` on the CPU, in float weights.
        calibration: `(N, C, h, w)` float latents, ``C`` the decoder's ``latent_channels``, ``N >= 1``.

    Raises:
        ValueError: not a light decoder, not on the CPU, or calibration latents of the wrong shape; nothing is
            changed then.
        RuntimeError: the decoder is already quantized.
    """
    from worldsim.models.autoencoders import LightDecoder

    if not isinstance(decoder, LightDecoder):
        raise ValueError(f"static int8 quantization applies to the light decoder, got {type(decoder).__name__}")
    if isinstance(decoder.decoder, StaticInt8Decoder):
        raise RuntimeError("the light decoder is already quantized")
    device = next(decoder.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 static quantization runs on the CPU only; the decoder is on {device}")
    channels = decoder.config.latent_channels
    if calibration.ndim != 4 or calibration.shape[1] != channels or len(calibration) == 0:
        raise ValueError(f"calibration latents must be (N >= 1, {channels}, h, w), got {tuple(calibration.shape)}")
    decoder.decoder = StaticInt8Decoder(decoder.decoder, calibration)
