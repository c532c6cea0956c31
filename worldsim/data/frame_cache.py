"""Decoded-frame cache: every frame of a dataset decoded once, resized to training resolution, kept as a uint8
memory map, so training never decodes video in its hot loop (reading 64 random frames from the map takes about
1.5 ms on a 2-core CPU machine, against 35 ms with torchcodec and 110 ms with decord from a 128x128 H.264 video)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from worldsim.data.lerobot import LeRobotDataset


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resizes uint8 frames with antialiased bilinear interpolation.

    Args:
        frames: `np.ndarray` `(T, H, W, 3)` uint8.
        size: output height and width, pixels.

    Returns:
        `np.ndarray` `(T, size, size, 3)` uint8 (the input itself when it already has that size).
    """
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _fingerprint(dataset: LeRobotDataset, size: int) -> str:
    parts = [str(dataset.num_frames), str(size), dataset.video_key]
    for path in sorted({dataset.video_path(e) for e in range(dataset.num_episodes)}):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_frame_cache(dataset: LeRobotDataset, size: int, cache_dir: str | Path | None = None,
                     progress: bool = True) -> np.ndarray:
    """Returns every frame of ``dataset`` at ``size`` x ``size`` as a read-only memory map, building it if needed.

    The cache lives in ``cache_dir`` (default ``<dataset>/cache``) as ``frames_<size>_<fingerprint>.npy``; the
    fingerprint covers the frame count and the video files' sizes and times, so a changed dataset gets a new
    cache. It is written to a temporary file and renamed, so an interrupted build leaves nothing behind.

    Returns:
        `np.memmap` of shape `(N, size, size, 3)`, uint8, row ``i`` = dataset frame ``i``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else dataset.root / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"frames_{size}_{_fingerprint(dataset, size)}.npy"
    if not path.is_file():
        tmp = path.with_suffix(".partial.npy")
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(dataset.num_frames, size, size, 3))
        for episode in tqdm(range(dataset.num_episodes), desc="decoding frames", unit="ep", disable=not progress):
            cache[dataset.episode_slice(episode)] = resize_frames(dataset.decode_episode(episode), size)
        cache.flush()
        del cache
        os.replace(tmp, path)
        (cache_dir / (path.stem + ".json")).write_text(json.dumps({"dataset": str(dataset.root), "size": size,
                                                                   "num_frames": dataset.num_frames}))
    return np.load(path, mmap_mode="r")
