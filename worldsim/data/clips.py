"""Clip sampling and action normalisation.

A clip is ``num_frames`` consecutive frames of one episode with their aligned actions: ``action[t]`` is applied
after ``frame[t]`` and produces ``frame[t + 1]`` (see :mod:`worldsim.constants`). The last action of a clip
therefore has no visible consequence inside the clip.
"""

from __future__ import annotations

import numpy as np
import torch


class ActionNormalizer:
    """Min-max normalisation of continuous actions to [-1, 1] (LeRobot's ``MIN_MAX`` mode).

    Only the continuous entries of the flat action layout (:mod:`worldsim.data.spaces`) are normalised; discrete
    indices and binary entries pass through unchanged, for the embodiment's encoder to embed.

    Args:
        minimum, maximum: `np.ndarray` `(A,)`, per-dimension bounds in the env's units (e.g. pixels of a workspace).
        continuous: `(A,)` bool or None (all True): which entries to normalise.

    Raises:
        ValueError: shapes differ or some ``maximum < minimum``.
    """

    def __init__(self, minimum, maximum, continuous=None):
        self.minimum = np.asarray(minimum, dtype=np.float32).reshape(-1)
        self.maximum = np.asarray(maximum, dtype=np.float32).reshape(-1)
        if self.minimum.shape != self.maximum.shape:
            raise ValueError(f"min shape {self.minimum.shape} != max shape {self.maximum.shape}")
        if np.any(self.maximum < self.minimum):
            raise ValueError(f"max {self.maximum} below min {self.minimum}")
        self.continuous = np.ones(self.minimum.shape, bool) if continuous is None else \
            np.asarray(continuous, dtype=bool).reshape(-1)
        if self.continuous.shape != self.minimum.shape:
            raise ValueError(f"continuous mask shape {self.continuous.shape} != action shape {self.minimum.shape}")
        self.scale = np.maximum(self.maximum - self.minimum, 1e-6)

    def normalize(self, action: np.ndarray) -> np.ndarray:
        """`(..., A)` env units -> `(..., A)` float32, continuous entries in [-1, 1] for actions inside the bounds."""
        action = np.asarray(action, dtype=np.float32)
        scaled = (action - self.minimum) / self.scale * 2.0 - 1.0
        return np.where(self.continuous, scaled, action).astype(np.float32)

    def unnormalize(self, action: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        action = np.asarray(action, dtype=np.float32)
        scaled = (action + 1.0) / 2.0 * self.scale + self.minimum
        return np.where(self.continuous, scaled, action).astype(np.float32)

    def to_dict(self) -> dict:
        out = {"min": self.minimum.tolist(), "max": self.maximum.tolist()}
        if not self.continuous.all():
            out["continuous"] = self.continuous.tolist()
        return out

    @classmethod
    def from_dict(cls, description: dict) -> "ActionNormalizer":
        """Inverse of :meth:`to_dict`."""
        return cls(description["min"], description["max"], description.get("continuous"))


def clip_starts(episode_from: np.ndarray, episode_to: np.ndarray, num_frames: int, stride: int = 1) -> np.ndarray:
    """Global frame indices where a clip of ``num_frames`` frames starts and stays inside one episode.

    Args:
        episode_from, episode_to: `(E,)` int, frame range ``[from, to)`` of each episode.
        num_frames: clip length.
        stride: spacing between candidate starts.

    Returns:
        `np.ndarray` `(num_clips,)` int64.

    Raises:
        ValueError: no episode is long enough.
    """
    starts = [np.arange(start, end - num_frames + 1, stride) for start, end in zip(episode_from, episode_to)]
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    if len(starts) == 0:
        longest = int((episode_to - episode_from).max()) if len(episode_from) else 0
        raise ValueError(f"no episode has {num_frames} frames (longest: {longest}); lower num_frames")
    return starts.astype(np.int64)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of consecutive frames (or latents) with their normalised actions.

    Args:
        frames: array-like `(N, ...)`: uint8 frames `(N, H, W, 3)` from the frame cache, or latents `(N, C, h, w)`.
        action: `(N, A)` float32, already normalised.
        episode_from, episode_to: `(E,)` episode frame ranges.
        num_frames: clip length T.
        episodes: restrict to these episode indices (train / validation split).

    Returns (``__getitem__``):
        dict with ``"frames"`` (`torch.Tensor` `(T, ...)`, the dtype of ``frames``), ``"action"``
        (`torch.Tensor` `(T, A)` float32) and ``"index"`` (global index of the first frame).
    """

    def __init__(self, frames, action, episode_from, episode_to, num_frames: int, episodes=None):
        if len(frames) != len(action):
            raise ValueError(f"{len(frames)} frames but {len(action)} actions")
        self.frames, self.action, self.num_frames = frames, np.asarray(action, dtype=np.float32), num_frames
        if episodes is not None:
            episodes = np.asarray(episodes)
            episode_from, episode_to = np.asarray(episode_from)[episodes], np.asarray(episode_to)[episodes]
        self.starts = clip_starts(np.asarray(episode_from), np.asarray(episode_to), num_frames)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, item: int) -> dict:
        start = int(self.starts[item])
        end = start + self.num_frames
        return {
            "frames": torch.from_numpy(np.array(self.frames[start:end])),
            "action": torch.from_numpy(self.action[start:end]),
            "index": start,
        }
