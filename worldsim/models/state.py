"""State predictor: a frame's ``observation.state`` predicted from its latent and the previous frame's state.

Robot datasets (LeRobot layout) store a state vector with every frame: for a Meta-World arm the 39-D observation
(hand position, gripper opening, object poses, the same 18 values one step earlier, the goal). A policy that reads
images *and* state needs that vector with every imagined frame too. The world model imagines frames only, so this
small network reads an imagined frame's autoencoder latent `(C, h, w)` plus the previous frame's state and
predicts the frame's state: what the frame shows (hand, object) comes from the latent, what it does not show
(a goal, the previous step's copy) is carried over from the previous state. Optionally (``action_dim > 0``) it also
reads the action that produced the frame, the input of a dynamics model: an arm's commanded motion tells where the
hand went where an imagined frame has blurred it (docs/log.md, "State predictor: the action, noisy latents and
imagined frames").

It predicts a residual on the previous state in normalised units (``next = previous + delta``), with the last layer
initialised to zero, so an untrained predictor copies the previous state. On recorded Meta-World episodes this beat
predicting the state outright (docs/log.md). Dimensions that never changed within a training episode (a goal, an
empty object slot) are *carried*: copied exactly from the previous state, never predicted, so they cannot drift in a
long rollout; and :meth:`~StatePredictor.predict` clips every state to the range seen in training (as the outcome
heads clip rewards), so that no dimension can run away. Trained on real frames (``worldsim train-state``,
:mod:`worldsim.training.train_state`) with noise added to the previous state, so that it stays stable when fed its
own predictions in an imagined rollout, and optionally with noisy latents and on frames the world model imagined.

Saved and loaded with diffusers' ``ModelMixin`` (safetensors) under ``<pipeline>/state/<embodiment>/``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from worldsim.utils.shapes import size_pair

#: smallest normalisation scale of a state dimension, in its own units: a dimension that never changed in the
#: training data (a fixed object's orientation, a padded slot) is divided by this instead of by zero
MIN_STATE_STD = 1e-4
#: the normalised previous state is clipped to +-this before the network reads it (the residual path adds the
#: unclipped value): a dimension far outside its training range cannot swamp the prediction of the others
MAX_NORMALIZED_INPUT = 10.0


def state_statistics(state_dim: int, state_mean=None, state_std=None,
                     names: tuple[str, str] = ("state_mean", "state_std")) -> tuple[np.ndarray, np.ndarray]:
    """A state normalisation's per-dimension mean and standard deviation, checked (shared by the state predictor and
    the BC policy's config).

    Args:
        state_dim: S.
        state_mean, state_std: S floats each (env units), or None for zeros / ones.
        names: what the two are called in an error message.

    Returns:
        ``(mean (S,), std (S,))`` float64, as given (flooring the std is the caller's).

    Raises:
        ValueError: a value that is not S finite floats (the message names it and shows it).
    """
    mean = np.zeros(state_dim) if state_mean is None else np.asarray(state_mean, dtype=np.float64)
    std = np.ones(state_dim) if state_std is None else np.asarray(state_std, dtype=np.float64)
    for name, value in zip(names, (mean, std)):
        if value.shape != (state_dim,) or not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be {state_dim} finite floats, got {np.asarray(value).tolist()!r}")
    return mean, std


class StatePredictor(ModelMixin, ConfigMixin):
    """Predicts a frame's state from its latent and the previous frame's state.

    The latent goes through two 3 x 3 convolutions (the second with stride 2) and a linear layer; the features are
    concatenated with the normalised previous state and an MLP predicts the change of the normalised state.

    Args:
        in_channels: latent channels C.
        sample_size: the latent grid, an int h = w or a pair [h, w] (any positive sides; frames of several cameras
            side by side are wider than high).
        state_dim: S, the width of ``observation.state``.
        hidden_dim: convolution width; the MLP is ``4 * hidden_dim`` wide.
        state_mean, state_std: lists of S floats, the per-dimension mean and standard deviation of the training
            states (env units); each std is floored at :data:`MIN_STATE_STD`.
        embodiment: the embodiment whose frames it was trained on (None: any).
        state_names: optional list of S names of the state dimensions (the dataset's feature names).
        carried_dims: indices of the dimensions copied from the previous state unchanged (those that never changed
            within a training episode); None or empty: every dimension is predicted.
        state_min, state_max: lists of S floats, the range of each dimension in the training data (env units);
            :meth:`predict` clips to it. None: no clipping.
        action_dim: A, the width of the action that produced the frame, read beside the latent and the previous
            state; 0 (the default, and every predictor saved before this option): no action input.
        action_mean, action_std: lists of A floats, the action normalisation (env units; each std floored at
            :data:`MIN_STATE_STD`); None: zeros / ones.

    Shapes:
        forward: latents `(B, C, h, w)` float, previous_state `(B, S)` float (normalised), action `(B, A)` float
        (normalised; only when ``action_dim > 0``) -> `(B, S)` float32 (normalised). :meth:`predict` takes and
        returns env units.

    Raises:
        ValueError: a non-positive size, width or ``state_dim``; ``state_mean`` / ``state_std`` / ``state_names``
            not of length S; a mean or std that is not finite or a negative std; ``carried_dims`` not distinct
            indices in [0, S); ``state_min`` / ``state_max`` not S finite floats with ``state_min <= state_max``;
            a negative ``action_dim``; ``action_mean`` / ``action_std`` not A finite floats, given with
            ``action_dim`` 0, or a negative ``action_std``.
    """

    @register_to_config
    def __init__(self, in_channels: int = 8, sample_size: int | tuple[int, int] = 8, state_dim: int = 1,
                 hidden_dim: int = 64, state_mean: list[float] | None = None, state_std: list[float] | None = None,
                 embodiment: str | None = None, state_names: list[str] | None = None,
                 carried_dims: list[int] | None = None, state_min: list[float] | None = None,
                 state_max: list[float] | None = None, action_dim: int = 0, action_mean: list[float] | None = None,
                 action_std: list[float] | None = None):
        super().__init__()
        height, width = size_pair(sample_size, "sample_size")
        for name, value in (("in_channels", in_channels), ("state_dim", state_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(action_dim, int) or isinstance(action_dim, bool) or action_dim < 0:
            raise ValueError(f"action_dim must be an int >= 0, got {action_dim!r}")
        mean, std = state_statistics(state_dim, state_mean, state_std)
        if action_dim:
            action_shift, action_scale = state_statistics(action_dim, action_mean, action_std,
                                                          ("action_mean", "action_std"))
        elif action_mean or action_std:
            raise ValueError(f"action_mean / action_std need action_dim > 0, got action_dim {action_dim}")
        else:
            action_shift, action_scale = np.zeros(0), np.ones(0)
        if np.any(action_scale < 0):
            raise ValueError(f"action_std must be >= 0, got {action_scale.tolist()}")
        low = np.full(state_dim, -np.inf) if state_min is None else np.asarray(state_min, dtype=np.float64)
        high = np.full(state_dim, np.inf) if state_max is None else np.asarray(state_max, dtype=np.float64)
        for name, value, given in (("state_min", low, state_min), ("state_max", high, state_max)):
            if given is not None and (value.shape != (state_dim,) or not np.all(np.isfinite(value))):
                raise ValueError(f"{name} must be {state_dim} finite floats or None, got "
                                 f"{np.asarray(given).tolist()!r}")
        if np.any(low > high):
            raise ValueError(f"state_min must be <= state_max in every dimension, got {low.tolist()} and "
                             f"{high.tolist()}")
        if np.any(std < 0):
            raise ValueError(f"state_std must be >= 0, got {std.tolist()}")
        if state_names is not None and (len(state_names) != state_dim
                                        or not all(isinstance(name, str) for name in state_names)):
            raise ValueError(f"state_names must be {state_dim} strings or None, got {state_names!r}")
        carried = list(carried_dims or [])
        if (len(set(carried)) != len(carried) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                          and 0 <= d < state_dim for d in carried)):
            raise ValueError(f"carried_dims must be distinct indices in [0, {state_dim}), got {carried_dims!r}")
        moving = torch.ones(state_dim)
        moving[carried] = 0.0
        self.register_buffer("moving", moving, persistent=False)  # 0 on carried dimensions
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32), persistent=False)
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(np.maximum(std, MIN_STATE_STD), dtype=torch.float32),
                             persistent=False)
        self.register_buffer("action_shift", torch.tensor(action_shift, dtype=torch.float32), persistent=False)
        self.register_buffer("action_scale", torch.tensor(np.maximum(action_scale, MIN_STATE_STD),
                                                          dtype=torch.float32), persistent=False)
        width_mlp = 4 * hidden_dim
        cells = math.ceil(height / 2) * math.ceil(width / 2)  # after the stride-2 convolution (padding 1)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(hidden_dim * cells, width_mlp), nn.SiLU())
        self.head = nn.Sequential(
            nn.Linear(width_mlp + state_dim + action_dim, width_mlp), nn.SiLU(),
            nn.Linear(width_mlp, width_mlp), nn.SiLU(),
            nn.Linear(width_mlp, state_dim))
        nn.init.zeros_(self.head[-1].weight)  # untrained: the prediction is the previous state
        nn.init.zeros_(self.head[-1].bias)

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the latents it reads."""
        return size_pair(self.config.sample_size, "sample_size")

    @property
    def action_dim(self) -> int:
        """A, the width of the action it reads (0: none)."""
        return int(self.config.action_dim)

    def _check(self, latents: torch.Tensor, previous_state: torch.Tensor, action) -> None:
        expected = (self.config.in_channels, *self.latent_size)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            raise ValueError(f"latents must be (B, {', '.join(map(str, expected))}), got {tuple(latents.shape)}")
        if previous_state.ndim != 2 or previous_state.shape != (latents.shape[0], self.config.state_dim):
            raise ValueError(f"previous_state must be (B, {self.config.state_dim}) with B = {latents.shape[0]} (the "
                             f"latents' batch), got {tuple(previous_state.shape)}")
        width = self.action_dim
        if not width and action is not None:
            raise ValueError("this state predictor reads no action (action_dim 0), but an action was given")
        if width and (action is None or tuple(action.shape) != (latents.shape[0], width)):
            raise ValueError(f"this state predictor reads the action that produced the frame: action must be "
                             f"(B, {width}) with B = {latents.shape[0]}, got "
                             f"{None if action is None else tuple(action.shape)}")

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Env units -> normalised units: ``(action - action_mean) / action_std``; `(..., A)` float32 in and out."""
        return (action.float() - self.action_shift) / self.action_scale

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        """Env units -> normalised units: ``(state - state_mean) / state_std``; `(..., S)` float32 in and out."""
        return (state.float() - self.shift) / self.scale

    def denormalize(self, state: torch.Tensor) -> torch.Tensor:
        """Normalised units -> env units: ``state * state_std + state_mean``; `(..., S)` float32 in and out."""
        return state.float() * self.scale + self.shift

    def forward(self, latents: torch.Tensor, previous_state: torch.Tensor,
                action: torch.Tensor | None = None) -> torch.Tensor:
        """The frame's normalised state.

        Args:
            latents: `(B, C, h, w)` float (any float dtype), the frame's normalised autoencoder latent (what
                :func:`~worldsim.models.autoencoders.encode_frames` returns and the world model imagines).
            previous_state: `(B, S)` float, the previous frame's state, normalised (:meth:`normalize`).
            action: `(B, A)` float, the action applied after the previous frame (the one that produced this frame),
                normalised (:meth:`normalize_action`); required when ``action_dim > 0``, else None.

        Returns:
            `(B, S)` float32, the frame's state, normalised (``previous_state`` itself on the carried dimensions).

        Raises:
            ValueError: a shape other than those above (the message gives the expected one), an action given to a
                predictor without action input or missing for one with it.
        """
        self._check(latents, previous_state, action)
        dtype = self.head[0].weight.dtype
        previous = previous_state.float()
        features = self.features(latents.to(dtype))
        parts = [features, previous.clamp(-MAX_NORMALIZED_INPUT, MAX_NORMALIZED_INPUT).to(dtype)]
        if action is not None:
            parts.append(action.float().clamp(-MAX_NORMALIZED_INPUT, MAX_NORMALIZED_INPUT).to(dtype))
        return previous + self.head(torch.cat(parts, dim=1)).float() * self.moving

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, previous_state, action=None) -> torch.Tensor:
        """The frame's state in env units, clipped to the training range (``state_min``, ``state_max``); carried
        dimensions are the previous state's, exactly.

        Args:
            latents: `(B, C, h, w)` float tensor, the frame's normalised autoencoder latent.
            previous_state: `(B, S)` float (tensor or array), the previous frame's state in env units.
            action: `(B, A)` float (tensor or array), env units, the action that produced the frame; required when
                ``action_dim > 0`` (:attr:`action_dim`), else None.

        Returns:
            `(B, S)` float32 tensor on the predictor's device, env units.

        Raises:
            ValueError: a wrong shape, a previous state or action that is not finite, or an action given to a
                predictor without action input or missing for one with it.
        """
        device = self.shift.device
        previous = torch.as_tensor(np.asarray(previous_state, dtype=np.float32)
                                   if not isinstance(previous_state, torch.Tensor) else previous_state)
        previous = previous.to(device, torch.float32)
        if action is not None:
            action = torch.as_tensor(np.asarray(action, dtype=np.float32)
                                     if not isinstance(action, torch.Tensor) else action).to(device, torch.float32)
        self._check(latents, previous, action)
        if not torch.isfinite(previous).all():
            raise ValueError("previous_state holds NaN or inf")
        if action is not None and not torch.isfinite(action).all():
            raise ValueError("action holds NaN or inf")
        normalized_action = None if action is None else self.normalize_action(action)
        predicted = self.denormalize(self(latents.to(device), self.normalize(previous), normalized_action))
        predicted = torch.minimum(torch.maximum(predicted, self.low), self.high)
        return torch.where(self.moving.bool(), predicted, previous)  # carried dimensions exactly, not round-tripped
