"""Writing videos and images for people to look at (imageio with the FFmpeg plugin; GIF by Pillow)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of `(..., H, W, 3)` uint8 frames by an integer factor (crisp pixels)."""
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, scale: int | None = None) -> Path:
    """Writes `(T, H, W, 3)` uint8 frames as ``.mp4`` (H.264) or ``.gif`` (chosen by the suffix).

    Args:
        scale: integer upscaling factor; default: enough for a frame height of at least 256 pixels.

    Raises:
        ValueError: frames are not `(T, H, W, 3)` uint8, or the suffix is not ``.mp4`` / ``.gif``.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if path.suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path {path} must end in .mp4 or .gif")
    scale = scale or max(1, int(np.ceil(256 / frames.shape[1])))
    frames = upscale(frames, scale)
    # H.264 wants even sizes
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, codec="libx264", plugin="pyav")
    return path
