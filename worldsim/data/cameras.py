"""Several camera views in one frame: composed side by side, and split again.

A multi-camera dataset (one video per camera, :class:`~worldsim.data.lerobot.LeRobotDataset.video_keys`) becomes one
frame stream for the world model by putting the views side by side, left to right in a fixed order (the dataset's
camera order): ``V`` views of ``(H, w)`` make one ``(H, V * w)`` frame. :func:`split_views` undoes it, e.g. to score
or show each camera of an imagined frame on its own.

>>> scene = np.zeros((10, 64, 64, 3), np.uint8); wrist = np.ones((10, 64, 64, 3), np.uint8)
>>> compose_views([scene, wrist]).shape
(10, 64, 128, 3)
>>> [view.shape for view in split_views(compose_views([scene, wrist]), 2)]
[(10, 64, 64, 3), (10, 64, 64, 3)]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def compose_views(views: Sequence[np.ndarray]) -> np.ndarray:
    """Puts camera views side by side, left to right in the given order.

    Args:
        views: ``V >= 1`` arrays of the same shape `(..., H, w, 3)` and dtype (uint8 frames, usually `(T, H, w, 3)`).

    Returns:
        `(..., H, V * w, 3)`, same dtype; view ``v`` fills columns ``[v * w, (v + 1) * w)``. A single view is returned
        as it is.

    Raises:
        ValueError: no views, a view that is not `(..., H, w, 3)`, or views that differ in shape or dtype (the message
            names the first view that differs).
    """
    views = [np.asarray(view) for view in views]
    if not views:
        raise ValueError("compose_views needs at least one view, got none")
    first = views[0]
    if first.ndim < 3 or first.shape[-1] != 3:
        raise ValueError(f"camera view 0 must be (..., H, w, 3), got shape {first.shape}")
    for index, view in enumerate(views[1:], start=1):
        if view.shape != first.shape or view.dtype != first.dtype:
            raise ValueError(f"camera view {index} has shape {view.shape} {view.dtype}, view 0 has {first.shape} "
                             f"{first.dtype}; resize every view to the same size first")
    if len(views) == 1:
        return first
    return np.concatenate(views, axis=-2)


def split_views(frames: np.ndarray, num_views: int) -> list[np.ndarray]:
    """Splits side-by-side frames back into their camera views (the inverse of :func:`compose_views`).

    Args:
        frames: `(..., H, W, 3)`, any dtype.
        num_views: ``V >= 1``, the number of views side by side; ``W`` must be a multiple of it.

    Returns:
        ``V`` views `(..., H, W / V, 3)`, left to right (views of ``frames``, not copies).

    Raises:
        ValueError: ``num_views`` not a positive int, ``frames`` not `(..., H, W, 3)`, or ``W`` not divisible by
            ``num_views``.
    """
    if not isinstance(num_views, (int, np.integer)) or isinstance(num_views, bool) or num_views < 1:
        raise ValueError(f"num_views must be an int >= 1, got {num_views!r}")
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (..., H, W, 3), got shape {frames.shape}")
    width = frames.shape[-2]
    if width % num_views:
        raise ValueError(f"frame width {width} is not divisible by num_views={num_views}")
    step = width // num_views
    return [frames[..., index * step:(index + 1) * step, :] for index in range(int(num_views))]


__all__ = ["compose_views", "split_views"]
