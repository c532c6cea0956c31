"""Scorers for imagined futures: ``scorer(frames (K, H, S, S, 3) uint8, task) -> (K,)``, higher is better.

Any callable with this signature plugs into :class:`~worldsim.steering.OutcomePredictor` (a VLM judge that reads
the frames and the task text, a learned success classifier, a hand-written check). This module ships a goal-image
similarity, the simplest scorer that needs no training.
"""

from __future__ import annotations

import numpy as np
import torch

from worldsim.data.frame_cache import resize_frames


class GoalImageScorer:
    """Similarity of the imagined frames to a goal image: negative mean squared distance, in pixel or latent space.

    Args:
        goal: `(H', W', 3)` uint8 image of the desired outcome (resized to the frames' size).
        space: ``"pixel"`` (RGB in [0, 1]) or ``"latent"`` (the pipeline's autoencoder latents, which weigh shapes
            more than colours of single pixels).
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` whose autoencoder encodes (``"latent"`` only).
        reduce: ``"last"`` (the final frame, default) or ``"max"`` (the closest frame of the future).

    Call: ``scorer(frames (K, H, S, S, 3) uint8, task=None) -> (K,)`` float64 (0 is a perfect match, more negative
    is farther). The task text is ignored.

    Raises:
        ValueError: unknown ``space`` or ``reduce``, a latent scorer without a pipeline, or a goal that is not
            `(H', W', 3)` uint8.
    """

    def __init__(self, goal: np.ndarray, space: str = "pixel", pipeline=None, reduce: str = "last"):
        goal = np.asarray(goal)
        if goal.ndim != 3 or goal.shape[-1] != 3 or goal.dtype != np.uint8:
            raise ValueError(f"goal must be a uint8 (H, W, 3) image, got {goal.dtype} {goal.shape}")
        if space not in ("pixel", "latent"):
            raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}")
        if space == "latent" and pipeline is None:
            raise ValueError("a latent-space goal scorer needs the pipeline (its autoencoder)")
        if reduce not in ("last", "max"):
            raise ValueError(f"reduce must be 'last' or 'max', got {reduce!r}")
        self.goal, self.space, self.pipeline, self.reduce = goal, space, pipeline, reduce

    def _features(self, frames: np.ndarray) -> np.ndarray:
        if self.space == "pixel":
            return frames.astype(np.float32) / 255.0
        from worldsim.models.autoencoders import encode_frames

        with torch.no_grad():
            return encode_frames(self.pipeline.autoencoder, torch.from_numpy(np.ascontiguousarray(frames))).numpy()

    def __call__(self, frames: np.ndarray, task: str | None = None) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (K, H, S, S, 3), got {frames.shape}")
        count, horizon = frames.shape[:2]
        goal = resize_frames(self.goal[None], frames.shape[2])[0]
        features = self._features(frames.reshape(-1, *frames.shape[2:]))
        target = self._features(goal[None])
        distance = ((features - target) ** 2).reshape(count * horizon, -1).mean(axis=1).reshape(count, horizon)
        similarity = -distance.astype(np.float64)
        return similarity[:, -1] if self.reduce == "last" else similarity.max(axis=1)
