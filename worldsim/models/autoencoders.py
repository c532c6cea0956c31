"""The per-frame image autoencoder: a small diffusers ``AutoencoderKL`` (no hand-written VAE).

Frames go in as uint8 `(..., H, W, 3)`; latents come out as `(..., C, h, w)` float32, already shifted and scaled
with the autoencoder's ``shift_factor`` and ``scaling_factor`` (measured on the training data after training, so
latents have roughly zero mean and unit variance, as the diffusion model expects).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from einops import rearrange


def build_autoencoder(
    sample_size: int = 64,
    latent_channels: int = 8,
    block_out_channels: tuple[int, ...] = (32, 32, 64, 64),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
) -> AutoencoderKL:
    """Builds a small ``AutoencoderKL``; each block after the first halves the resolution.

    With the defaults a 64 x 64 frame maps to an 8 x 8 x 8 latent (1.0 M parameters). The mid-block attention is
    off: at an 8 x 8 grid it costs more than it gives on CPU.

    Raises:
        ValueError: ``sample_size`` not divisible by the total downsampling, or channels not divisible by
            ``norm_num_groups``.
    """
    factor = 2 ** (len(block_out_channels) - 1)
    if sample_size % factor:
        raise ValueError(f"sample_size {sample_size} is not divisible by the downsampling factor {factor}")
    if any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(f"block_out_channels {block_out_channels} not divisible by norm_num_groups {norm_num_groups}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        mid_block_add_attention=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def frames_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` -> float32 `(..., 3, H, W)` in [-1, 1]."""
    return rearrange(frames, "... h w c -> ... c h w").float() / 127.5 - 1.0


def pixels_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """float `(..., 3, H, W)` in [-1, 1] -> uint8 `(..., H, W, 3)`."""
    return rearrange(((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8), "... c h w -> ... h w c")


@torch.no_grad()
def encode_frames(autoencoder: AutoencoderKL, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Encodes frames to normalised latents (the posterior mean, then ``(z - shift_factor) * scaling_factor``).

    Args:
        frames: `torch.Tensor` `(..., H, W, 3)` uint8.

    Returns:
        `torch.Tensor` `(..., C, h, w)` float32.
    """
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    device = next(autoencoder.parameters()).device
    outputs = []
    for chunk in flat.split(batch_size):
        pixels = frames_to_pixels(chunk.to(device))
        z = autoencoder.encode(pixels).latent_dist.mean
        outputs.append(((z - autoencoder.config.shift_factor) * autoencoder.config.scaling_factor).float())
    latents = torch.cat(outputs)
    return latents.reshape(*lead, *latents.shape[1:])


@torch.no_grad()
def decode_latents(autoencoder: AutoencoderKL, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Inverse of :func:`encode_frames`: `(..., C, h, w)` float -> `(..., H, W, 3)` uint8."""
    lead = latents.shape[:-3]
    flat = latents.reshape(-1, *latents.shape[-3:])
    dtype = next(autoencoder.parameters()).dtype
    outputs = []
    for chunk in flat.split(batch_size):
        z = chunk.to(dtype) / autoencoder.config.scaling_factor + autoencoder.config.shift_factor
        outputs.append(pixels_to_frames(autoencoder.decode(z).sample))
    frames = torch.cat(outputs)
    return frames.reshape(*lead, *frames.shape[1:])
