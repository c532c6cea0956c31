"""The per-frame image autoencoder: a small diffusers ``AutoencoderKL`` (no hand-written VAE), and a light decoder.

Frames go in as uint8 `(..., H, W, 3)`; latents come out as `(..., C, h, w)` float32, already shifted and scaled
with the autoencoder's ``shift_factor`` and ``scaling_factor`` (measured on the training data after training, so
latents have roughly zero mean and unit variance, as the diffusion model expects).

:class:`LightDecoder` maps the same normalised latents back to frames at a fraction of the ``AutoencoderKL``
decoder's FLOPs (diffusers' ``DecoderTiny``, the decoder of TAESD / ``AutoencoderTiny``); it is trained on the
autoencoder's latents of real frames (``worldsim train-decoder``) and is what an imagined frame costs most of after
the transformer.

A pretrained video VAE can stand in for the small autoencoder: diffusers' ``AutoencoderKLWan`` (Wan 2.1's causal 3-D
VAE) encodes a single frame as a one-frame clip, which its causal encoder handles alone (as Wan's image-to-video
pipeline encodes its first frame), and its latents are normalised per channel by the VAE's ``latents_mean`` and
``latents_std``. :func:`load_autoencoder` reads either kind from a folder.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoencoderKLWan
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderTiny
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from worldsim.utils.shapes import size_config, size_pair


def build_autoencoder(
    sample_size: int | tuple[int, int] = 64,
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
    if any(side % factor for side in size_pair(sample_size, "sample_size")):
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
        sample_size=size_config(sample_size),
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


#: the frame autoencoders a model folder may hold: config ``_class_name`` -> class
AUTOENCODER_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderKLWan": AutoencoderKLWan}


def load_autoencoder(folder) -> AutoencoderKL | AutoencoderKLWan:
    """The autoencoder saved in ``folder`` (safetensors only): an ``AutoencoderKL`` or an ``AutoencoderKLWan``, chosen
    by the ``_class_name`` of its ``config.json`` from :data:`AUTOENCODER_CLASSES` (never imported by that name).

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
        ValueError: a class outside :data:`AUTOENCODER_CLASSES`.
    """
    from pathlib import Path

    from worldsim.utils.files import read_json_object

    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"autoencoder not found: {config_path} is missing")
    name = read_json_object(config_path).get("_class_name")
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(f"{config_path}: _class_name {name!r} is not a frame autoencoder worldsim loads; expected "
                         f"one of {sorted(AUTOENCODER_CLASSES)}")
    return AUTOENCODER_CLASSES[name].from_pretrained(folder, use_safetensors=True)


def latent_normalization(autoencoder) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """``(shift, scale)`` with normalised latents ``(z - shift) * scale``: the ``AutoencoderKL``'s scalar
    ``shift_factor`` / ``scaling_factor``, or an ``AutoencoderKLWan``'s per-channel ``latents_mean`` and
    ``1 / latents_std`` as `(C, 1, 1)` tensors."""
    if isinstance(autoencoder, AutoencoderKLWan):
        config = autoencoder.config
        shift = torch.tensor(config.latents_mean, dtype=torch.float32)[:, None, None]
        scale = 1.0 / torch.tensor(config.latents_std, dtype=torch.float32)[:, None, None]
        return shift, scale
    return autoencoder.config.shift_factor, autoencoder.config.scaling_factor


def _as_device(value, device, dtype):
    """A per-channel normalisation tensor moved to ``device`` / ``dtype``; a Python float is left as it is."""
    return value.to(device, dtype) if isinstance(value, torch.Tensor) else value


@torch.no_grad()
def encode_frames(autoencoder: AutoencoderKL | AutoencoderKLWan, frames: torch.Tensor,
                  batch_size: int = 256) -> torch.Tensor:
    """Encodes frames to normalised latents (the posterior mean, then ``(z - shift) * scale``,
    :func:`latent_normalization`). An ``AutoencoderKLWan`` encodes each frame as a one-frame clip.

    Args:
        frames: `torch.Tensor` `(..., H, W, 3)` uint8.

    Returns:
        `torch.Tensor` `(..., C, h, w)` float32.
    """
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    device = next(autoencoder.parameters()).device
    video = isinstance(autoencoder, AutoencoderKLWan)
    shift, scale = latent_normalization(autoencoder)
    shift, scale = _as_device(shift, device, torch.float32), _as_device(scale, device, torch.float32)
    outputs = []
    for chunk in flat.split(batch_size):
        pixels = frames_to_pixels(chunk.to(device))
        if video:
            z = autoencoder.encode(pixels.unsqueeze(2)).latent_dist.mean[:, :, 0].float()
        else:
            z = autoencoder.encode(pixels).latent_dist.mean.float()
        outputs.append((z - shift) * scale)
    latents = torch.cat(outputs)
    return latents.reshape(*lead, *latents.shape[1:])


class LightDecoder(ModelMixin, ConfigMixin):
    """A light frame decoder for normalised autoencoder latents: diffusers' ``DecoderTiny`` (TAESD's decoder).

    Plain 3 x 3 convolutions and ReLUs, nearest-neighbour upsampling by 2 per stage, no normalisation layers: at the
    defaults (32 channels; two residual blocks at the 8 and 16 px stages, one at 32 px, none at 64 px) it costs 198
    MFLOP per 64 x 64 frame, 3.5x fewer than the 691 of the ``AutoencoderKL`` decoder it stands in for,
    and it reads the pipeline's normalised latents directly (no ``scaling_factor`` / ``shift_factor`` to undo).
    Trained by :func:`worldsim.training.train_decoder.train_decoder`; saved with diffusers' ``ModelMixin``
    (safetensors) under ``<pipeline>/decoder``.

    Args:
        latent_channels: C of the latents.
        out_channels: image channels.
        block_out_channels: width of every stage (``DecoderTiny`` keeps one width throughout).
        num_blocks: residual blocks per stage; ``len(num_blocks) - 1`` upsamplings, so 4 stages turn an 8 x 8
            latent into a 64 x 64 frame.

    Shapes:
        forward: latents `(B, C, h, w)` float -> pixels `(B, out_channels, h * 2 ** (S - 1), w * 2 ** (S - 1))` in
        about [-1, 1] (not clamped; :func:`pixels_to_frames` clamps).

    Raises:
        ValueError: a width < 1 or an empty ``num_blocks`` / negative block count.
    """

    @register_to_config
    def __init__(self, latent_channels: int = 8, out_channels: int = 3, block_out_channels: int = 32,
                 num_blocks: tuple[int, ...] = (2, 2, 1, 0)):
        super().__init__()
        if block_out_channels < 1 or not num_blocks or min(num_blocks) < 0:
            raise ValueError(f"need block_out_channels >= 1 and non-negative num_blocks, got {block_out_channels}, "
                             f"{num_blocks}")
        self.decoder: nn.Module = DecoderTiny(in_channels=latent_channels, out_channels=out_channels,
                                              num_blocks=tuple(num_blocks),
                                              block_out_channels=(block_out_channels,) * len(num_blocks),
                                              upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")

    @property
    def upsampling_factor(self) -> int:
        """Frame side over latent side."""
        return 2 ** (len(self.config.num_blocks) - 1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)


@torch.no_grad()
def decode_latents(decoder: AutoencoderKL | AutoencoderKLWan | LightDecoder, latents: torch.Tensor,
                   batch_size: int = 256, normalization: tuple | None = None) -> torch.Tensor:
    """Inverse of :func:`encode_frames`: `(..., C, h, w)` float -> `(..., H, W, 3)` uint8.

    Args:
        decoder: the ``AutoencoderKL`` or ``AutoencoderKLWan`` that encoded the latents (its decoder runs; Wan's
            decodes each latent as a one-frame clip), or a :class:`LightDecoder` trained on its latents.
        normalization: the decoder's :func:`latent_normalization`, already on the latents' device (a CUDA-graph
            step passes it: built here, a per-channel one would be copied from the host at every call); None:
            worked out here.
    """
    lead = latents.shape[:-3]
    flat = latents.reshape(-1, *latents.shape[-3:])
    parameter = next(decoder.parameters(), None)  # a statically quantized light decoder has none left
    dtype = torch.float32 if parameter is None else parameter.dtype
    light = isinstance(decoder, LightDecoder)
    shift, scale = (0.0, 1.0) if light else normalization or latent_normalization(decoder)
    shift, scale = _as_device(shift, flat.device, dtype), _as_device(scale, flat.device, dtype)
    outputs = []
    for chunk in flat.split(batch_size):
        latent = chunk.to(dtype)
        if light:
            outputs.append(pixels_to_frames(decoder(latent)))
            continue
        z = latent / scale + shift
        if isinstance(decoder, AutoencoderKLWan):
            outputs.append(pixels_to_frames(decoder.decode(z.unsqueeze(2)).sample[:, :, 0]))
        else:
            outputs.append(pixels_to_frames(decoder.decode(z).sample))
    frames = torch.cat(outputs)
    return frames.reshape(*lead, *frames.shape[1:])


#: video frames Wan's causal encoder reads per step after the first frame (``AutoencoderKLWan._encode``)
WAN_ENCODER_CHUNK = 4


def temporal_compression(autoencoder) -> int:
    """Video frames per latent frame of ``autoencoder`` after its first frame: ``2 ** (temporal downsamplings)`` for an
    ``AutoencoderKLWan`` (4 for Wan 2.1's VAE), 1 for a per-frame ``AutoencoderKL`` or :class:`LightDecoder`."""
    if isinstance(autoencoder, AutoencoderKLWan):
        return 2 ** sum(bool(flag) for flag in autoencoder.config.temperal_downsample)
    return 1


def check_video_autoencoder(autoencoder) -> int:
    """The frames per latent frame of a VAE used on whole clips (:func:`encode_video`), checked.

    Raises:
        ValueError: not an ``AutoencoderKLWan``; a temporal compression other than the 4 frames its encoder reads per
            step (its latents would not line up with its chunks); a VAE that patchifies (Wan 2.2's ``patch_size``);
            tiling turned on (tiles are decoded without the temporal cache this module keeps).
    """
    if not isinstance(autoencoder, AutoencoderKLWan):
        raise ValueError(f"temporal compression needs an AutoencoderKLWan, got {type(autoencoder).__name__}")
    factor = temporal_compression(autoencoder)
    if factor != WAN_ENCODER_CHUNK:
        raise ValueError(f"the VAE compresses time {factor}x (temperal_downsample="
                         f"{list(autoencoder.config.temperal_downsample)}); grouping actions needs the {WAN_ENCODER_CHUNK}x "
                         f"that matches its encoder's {WAN_ENCODER_CHUNK}-frame steps, as Wan 2.1's VAE has")
    if autoencoder.config.get("patch_size") is not None:
        raise ValueError(f"a VAE with patch_size {autoencoder.config.patch_size} is not supported for whole clips")
    if getattr(autoencoder, "use_tiling", False):
        raise ValueError("the VAE has tiling on (enable_tiling()); turn it off (disable_tiling()) for whole clips")
    return factor


@torch.no_grad()
def encode_video(autoencoder: AutoencoderKLWan, frames: torch.Tensor) -> torch.Tensor:
    """Encodes clips with a causal video VAE, time compressed: the first frame alone, then every ``k`` frames
    (:func:`temporal_compression`) into one latent frame, normalised per channel as :func:`encode_frames`.

    Args:
        frames: `(B, T, H, W, 3)` uint8 with ``T = 1 + k * m``.

    Returns:
        `torch.Tensor` `(B, 1 + m, C, h, w)` float32 (the posterior mean). Latent ``j >= 1`` holds frames
        ``k (j - 1) + 1 .. k j``; being causal, it depends on no later frame.

    Raises:
        ValueError: ``T - 1`` is not a multiple of ``k``, or the VAE is refused by :func:`check_video_autoencoder`.
    """
    factor = check_video_autoencoder(autoencoder)
    if frames.dtype != torch.uint8 or frames.ndim != 5 or (frames.shape[1] - 1) % factor:
        raise ValueError(f"clips must be (B, 1 + {factor} m, H, W, 3) uint8 for a VAE that compresses time "
                         f"{factor}x, got {tuple(frames.shape)}")
    device = next(autoencoder.parameters()).device
    shift, scale = latent_normalization(autoencoder)
    shift, scale = _as_device(shift, device, torch.float32), _as_device(scale, device, torch.float32)
    outputs = []
    for clip in frames:  # one clip at a time: the encoder's causal cache is per call
        pixels = rearrange(frames_to_pixels(clip.to(device)), "t c h w -> 1 c t h w")
        z = autoencoder.encode(pixels).latent_dist.mean[0].float()  # (C, 1 + m, h, w)
        outputs.append((rearrange(z, "c t h w -> t c h w") - shift) * scale)
    return torch.stack(outputs)


class VideoDecoderCache:
    """Streaming decoding through a causal video VAE's temporal cache, one latent frame at a time, for a batch of
    rollouts: what lets an imagined env decode each new latent frame into its ``k`` video frames exactly as decoding
    the whole latent sequence at once would (diffusers' ``AutoencoderKLWan._decode`` loops over latent frames with the
    same per-layer cache; this keeps that cache between calls instead of clearing it).

    The cache is one entry per causal convolution of the decoder: None before the first latent frame, the marker
    ``"Rep"`` (the temporal upsampler's "no previous frame"), or the last one or two frames of that layer's input,
    `(B, c, 1 or 2, h', w')`. A one-frame entry and the marker both mean zeros before it, which is how rows whose
    histories differ in length are merged (:meth:`splice`).

    Args:
        autoencoder: an ``AutoencoderKLWan`` (:func:`check_video_autoencoder`).

    Raises:
        ValueError: a VAE that :func:`check_video_autoencoder` refuses.
    """

    def __init__(self, autoencoder: AutoencoderKLWan):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.frames_per_latent = check_video_autoencoder(autoencoder)
        self.autoencoder = autoencoder
        self.num_entries = sum(isinstance(module, WanCausalConv3d) for module in autoencoder.decoder.modules())
        self.entries: list | None = None  # None: nothing decoded yet
        self.batch_size: int | None = None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decodes the next latent frames of every rollout, continuing from those decoded before.

        Args:
            latents: `(B, n, C, h, w)` normalised latents (as :func:`encode_video` gives), the same ``B`` at every
                call.

        Returns:
            `torch.Tensor` `(B, F, H, W, 3)` uint8, ``F = k n``, or ``1 + k (n - 1)`` when these are the first
            latent frames (the first latent frame holds one video frame).

        Raises:
            ValueError: latents that are not `(B, n, C, h, w)` with the VAE's C channels, or a batch size other than
                the cache's.
        """
        if latents.ndim != 5 or latents.shape[2] != self.autoencoder.config.z_dim:
            raise ValueError(f"latents must be (B, n, {self.autoencoder.config.z_dim}, h, w), got "
                             f"{tuple(latents.shape)}")
        if self.batch_size is not None and latents.shape[0] != self.batch_size:
            raise ValueError(f"this decoder cache holds {self.batch_size} rollouts, got latents of {latents.shape[0]}")
        vae = self.autoencoder
        parameter = next(vae.parameters())
        shift, scale = latent_normalization(vae)
        shift, scale = _as_device(shift, latents.device, parameter.dtype), _as_device(scale, latents.device,
                                                                                      parameter.dtype)
        z = rearrange(latents.to(parameter.dtype) / scale + shift, "b t c h w -> b c t h w")
        x = vae.post_quant_conv(z)  # a 1 x 1 x 1 convolution: frame by frame
        outputs = []
        for index in range(x.shape[2]):
            first = self.entries is None
            if first:
                self.entries, self.batch_size = [None] * self.num_entries, latents.shape[0]
            outputs.append(vae.decoder(x[:, :, index:index + 1], feat_cache=self.entries, feat_idx=[0],
                                       first_chunk=first))
        pixels = torch.cat(outputs, dim=2).clamp(-1.0, 1.0)
        return pixels_to_frames(rearrange(pixels, "b c t h w -> b t c h w"))

    def select(self, rows: torch.Tensor) -> "VideoDecoderCache":
        """A new cache of the rollouts ``rows`` `(R,)` long (repeats allowed); ``self`` is left as it is.

        Raises:
            IndexError: a row outside the cache's batch (torch's message).
        """
        out = VideoDecoderCache.__new__(VideoDecoderCache)
        out.frames_per_latent, out.autoencoder, out.num_entries = self.frames_per_latent, self.autoencoder, \
            self.num_entries
        out.batch_size = None if self.entries is None else len(rows)
        out.entries = None if self.entries is None else [
            entry[rows.to(entry.device)].clone() if isinstance(entry, torch.Tensor) else entry
            for entry in self.entries]
        return out

    def splice(self, rows: torch.Tensor, fresh: "VideoDecoderCache") -> None:
        """Replaces the cache of the rollouts ``rows`` `(R,)` with ``fresh``'s (a cache of R rollouts that decoded
        their own history), in place: what a vector env's reset of some sub-envs needs.

        Raises:
            ValueError: either cache has decoded nothing yet, or ``fresh`` does not hold ``len(rows)`` rollouts.
        """
        if self.entries is None or fresh.entries is None:
            raise ValueError("splice needs caches that have decoded their context")
        if fresh.batch_size != len(rows):
            raise ValueError(f"fresh cache holds {fresh.batch_size} rollouts for {len(rows)} rows")
        merged = []
        for mine, theirs in zip(self.entries, fresh.entries):
            if not isinstance(mine, torch.Tensor) and not isinstance(theirs, torch.Tensor):
                merged.append(mine)  # both "no previous frame yet"
                continue
            like = mine if isinstance(mine, torch.Tensor) else theirs
            length = max(entry.shape[2] for entry in (mine, theirs) if isinstance(entry, torch.Tensor))
            mine = _left_padded(mine, self.batch_size, like, length)
            mine[rows.to(mine.device)] = _left_padded(theirs, len(rows), like, length).to(mine.dtype)
            merged.append(mine)
        self.entries = merged


def _left_padded(entry, batch: int, like: torch.Tensor, length: int) -> torch.Tensor:
    """A decoder-cache entry as a `(batch, c, length, h, w)` tensor: the marker becomes zeros, a shorter history gets
    zero frames before it (what the causal convolution pads with)."""
    if not isinstance(entry, torch.Tensor):
        return like.new_zeros((batch, like.shape[1], length, *like.shape[3:]))
    if entry.shape[2] < length:
        entry = torch.cat([entry.new_zeros((batch, entry.shape[1], length - entry.shape[2], *entry.shape[3:])), entry],
                          dim=2)
    return entry.clone()
