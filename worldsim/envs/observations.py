"""What an imagined env observes: one frame, or a Dict of camera views and the robot state.

A model trained on one camera imagines one frame, and its env observes a ``Box`` image. A model trained on several
cameras imagines their views side by side in one frame (:mod:`worldsim.data.cameras`; the views of one moment are
generated together, so they stay consistent), and a model with a state predictor for the embodiment
(:class:`~worldsim.models.state.StatePredictor`) predicts each frame's ``observation.state``; its env then observes a
``Dict`` keyed like a LeRobot dataset and like the real env's wrapper, so one policy object runs in both::

    {"observation.images.scene": (H, w, 3) uint8, "observation.images.wrist": (H, w, 3) uint8,
     "observation.state": (S,) float32}
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.constants import ACTION, OBS_IMAGE, OBS_STATE
from worldsim.data.cameras import compose_views, split_views
from worldsim.data.frame_cache import resize_frames


class ObservationLayout:
    """The observation of one imagined sub-env, and the conversions between it and the model's frames.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline`.
        embodiment: the served embodiment's name.
        start_state: whether the env's start clips carry ``observation.state`` (a state is observed only when they
            do and the model has a state predictor for the embodiment).

    Attributes:
        cameras: the camera keys, left to right in the model's frames.
        state_dim: S when the env observes ``observation.state``, else None.
        is_dict: whether the observation is a ``Dict`` (several cameras or a state) rather than one image.
    """

    def __init__(self, pipeline, embodiment: str, start_state: bool):
        self.cameras = list(pipeline.camera_keys)
        self.frame_size = pipeline.frame_size
        predictor = pipeline.state_predictor_for(embodiment)
        self.state_dim = int(predictor.config.state_dim) if predictor is not None and start_state else None
        self.is_dict = len(self.cameras) > 1 or self.state_dim is not None

    def space(self) -> gym.Space:
        """The single-env observation space: ``Box(0, 255, (H, W, 3), uint8)``, or a ``Dict`` of one such Box per
        camera (each ``W / V`` wide) and ``observation.state`` ``Box(-inf, inf, (S,), float32)``."""
        height, width = self.frame_size
        if not self.is_dict:
            return gym.spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        view = (height, width // len(self.cameras), 3)
        spaces = {key: gym.spaces.Box(0, 255, view, dtype=np.uint8) for key in self.cameras}
        if self.state_dim is not None:
            spaces[OBS_STATE] = gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), dtype=np.float32)
        return gym.spaces.Dict(spaces)

    def observe(self, frames: np.ndarray, state: np.ndarray | None = None) -> Any:
        """Batched observations of ``frames`` `(B, H, W, 3)` uint8 and ``state`` `(B, S)` float32 (None without a
        state): the frames themselves, or ``{camera: (B, H, w, 3), "observation.state": (B, S)}``."""
        if not self.is_dict:
            return frames
        views = split_views(frames, len(self.cameras))
        observation = {key: np.ascontiguousarray(view) for key, view in zip(self.cameras, views)}
        if self.state_dim is not None:
            observation[OBS_STATE] = np.asarray(state, dtype=np.float32).copy()
        return observation

    def from_real(self, observation: Any, env: gym.Env | None = None) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """A real env's observation in this layout, so that a policy meets the same input in both worlds.

        Args:
            observation: one real observation: a frame `(H', W', 3)` uint8, or a Dict with every camera key of
                :attr:`cameras` (each `(H', w', 3)` uint8, any size of the views' aspect) and, when this layout observes
                a state, ``observation.state`` `(S,)`; a frame-only layout also takes what
                :func:`~worldsim.data.collect._pixels` reads (``env.render()`` when the observation has no frame).
            env: the real env (for ``render()``).

        Returns:
            ``(observation, frame, state)``: what the imagined env observes for one env (:meth:`space`), the model's
            frame `(H, W, 3)` uint8 (the views resized and side by side) and the state `(S,)` float32 or None.

        Raises:
            ValueError: a Dict layout and an observation that lacks a camera or the state (the message names the key
                and lists the observation's keys).
        """
        if not self.is_dict:
            from worldsim.data.collect import _pixels

            frame = resize_frames(np.asarray(_pixels(observation, env))[None], self.frame_size)[0]
            return frame, frame, None
        keys = list(observation) if isinstance(observation, dict) else type(observation).__name__
        wanted = self.cameras + ([OBS_STATE] if self.state_dim is not None else [])
        missing = [key for key in wanted if not isinstance(observation, dict) or key not in observation]
        if missing:
            raise ValueError(f"the real observation lacks {missing[0]!r} (it has {keys}); the model observes {wanted}")
        height, width = self.frame_size
        view_size = (height, width // len(self.cameras))
        views = [resize_frames(np.asarray(observation[key], dtype=np.uint8)[None], view_size)[0] for key in self.cameras]
        result = {key: view for key, view in zip(self.cameras, views)}
        state = None
        if self.state_dim is not None:
            state = np.asarray(observation[OBS_STATE], dtype=np.float32).reshape(-1)
            if state.shape != (self.state_dim,):
                raise ValueError(f"the real {OBS_STATE!r} has shape {state.shape}; the model's state predictor has "
                                 f"{self.state_dim} dimensions")
            result[OBS_STATE] = state
        return result, compose_views(views), state

    def single(self, observation: Any, index: int) -> Any:
        """Sub-env ``index``'s observation out of a batched one (:meth:`observe`)."""
        if not self.is_dict:
            return observation[index].copy()
        return {key: value[index].copy() for key, value in observation.items()}

    def context_frames(self, context: dict, batched: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The frames and states of a reset context given as observations.

        Args:
            context: ``{"observation.image": frames}`` (frames already side by side), or one entry per camera key
                (each camera's views), plus ``"observation.state"`` `(..., n, S)` when the env observes a state;
                frames `(n, H', W', 3)` uint8 (``batched``: `(R, n, H', W', 3)`), resized to the model's size.
            batched: whether the context holds R clips (vector env) or one.

        Returns:
            ``(frames (..., n, H, W, 3) uint8, states (..., n, S) float32 or None)``.

        Raises:
            ValueError: a missing camera or state, frames that are not uint8 images of equal shape, or states of
                the wrong shape or not finite; the message names the key.
        """
        if not isinstance(context, dict):
            raise ValueError(f"options['context'] must be a dict, got {type(context).__name__}")
        rank = 5 if batched else 4
        missing = [key for key in self.cameras if key not in context]
        if not missing:
            parts = [(key, context[key]) for key in self.cameras]
        elif OBS_IMAGE in context:
            parts = [(OBS_IMAGE, context[OBS_IMAGE])]
        else:
            raise ValueError(f"options['context'] lacks camera {missing[0]!r}; give every camera of {self.cameras} "
                             f"(or {OBS_IMAGE!r} with the views side by side) and {ACTION!r}")
        arrays = []
        for key, value in parts:
            frames = np.asarray(value)
            if not batched and frames.ndim == 3:
                frames = frames[None]
            if frames.dtype != np.uint8 or frames.ndim != rank or frames.shape[-1] != 3 or frames.shape[-4] == 0:
                shape = "(R, n, H, W, 3)" if batched else "(n, H, W, 3)"
                raise ValueError(f"context {key!r} must be uint8 {shape} with n >= 1, got {frames.dtype} {frames.shape}")
            arrays.append(frames)
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"the context cameras' frames differ in shape: {[array.shape for array in arrays]}")
        height, width = self.frame_size
        view_size = (height, width // len(parts))
        given = arrays[0].shape[-3:-1]
        if given[0] * view_size[1] != given[1] * view_size[0]:  # resizing may scale, never stretch
            raise ValueError(f"context frames are {given[0]}x{given[1]} (height x width); the model's views are "
                             f"{view_size[0]}x{view_size[1]}, so frames need that aspect ratio")
        lead = arrays[0].shape[:-3]
        resized = [resize_frames(array.reshape(-1, *array.shape[-3:]), view_size) for array in arrays]
        frames = (compose_views(resized) if len(resized) > 1 else resized[0]).reshape(*lead, height, width, 3)
        state = None
        if self.state_dim is not None:
            if OBS_STATE not in context:
                raise ValueError(f"options['context'] lacks {OBS_STATE!r}: this env observes the robot state, so its "
                                 f"context needs each frame's state, shape {(*lead, self.state_dim)}")
            state = np.asarray(context[OBS_STATE], dtype=np.float64)
            if state.shape != (*lead, self.state_dim) or not np.all(np.isfinite(state)):
                raise ValueError(f"context {OBS_STATE!r} must be finite with shape {(*lead, self.state_dim)}, got "
                                 f"{state.shape}")
            state = state.astype(np.float32)
        return frames, state
