"""Behaviour cloning (BC): a small policy that maps a robot's camera images, its ``observation.state`` and the task
text to an action, fitted by regression to recorded demonstrations.

Users rank their own policy checkpoints in worldsim; this is a policy family to train such checkpoints from the
recorded LeRobot datasets (``worldsim train-bc``, :mod:`worldsim.training.train_bc`), saved at several training steps
so that there are checkpoints of graded skill.

:class:`BCNetwork` is the model: per camera a small convolutional encoder (stride-2 3 x 3 convolutions with GroupNorm
and SiLU, then a linear layer over the flattened map, which keeps where things are in the view), the normalised state
through an MLP, a learned embedding of the task text (a table over the training tasks), all concatenated into an MLP
whose tanh output is the action in [-1, 1]. It is the usual image-plus-proprioception BC recipe of robot learning
(e.g. the ResNet-free baselines of robomimic, Mandlekar et al. 2021), kept to a few hundred thousand parameters so it
trains in minutes on two CPU cores.

:class:`BCPolicy` wraps a network as a LeRobot-style policy (``select_action(batch)`` and ``reset()``, LeRobot's
``PreTrainedPolicy`` interface), which worldsim's policy adapter drives
(:func:`~worldsim.evaluation.policy_adapters.as_policy`)::

    >>> from worldsim.evaluation.policy_adapters import as_policy
    >>> policy = BCPolicy.from_pretrained("runs/bc/step-003000")          # doctest: +SKIP
    >>> adapter = as_policy(policy, (4,)); adapter.task = "push the puck to the goal"  # doctest: +SKIP
    >>> adapter.reset(num_envs); action = adapter.act(observation)  # (N, 4) in [-1, 1]  # doctest: +SKIP

Saved with diffusers' ``ModelMixin`` (``config.json`` + ``model.safetensors``); loaded from safetensors only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from worldsim.constants import OBS_STATE
from worldsim.models.state import MAX_NORMALIZED_INPUT, MIN_STATE_STD, state_statistics
from worldsim.utils.files import read_json_object
from worldsim.utils.shapes import size_pair

#: the batch key of the task texts (LeRobot's)
TASK = "task"
#: the cameras of a Meta-World arm recorded by worldsim, in the datasets' order
DEFAULT_CAMERAS = ("observation.images.scene", "observation.images.wrist")


def _positive_ints(name: str, values) -> list[int]:
    """``values`` as a list, checked to be a non-empty list of positive ints (else ValueError naming ``name``)."""
    values = list(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {values!r}")
    return values


class BCNetwork(ModelMixin, ConfigMixin):
    """Images + state + task -> action, for behaviour cloning.

    Per camera: ``len(channels)`` 3 x 3 convolutions of stride 2 (GroupNorm, SiLU), the map flattened and projected
    to ``image_features``; the state, normalised by the training mean and standard deviation and clipped to
    +-:data:`~worldsim.models.state.MAX_NORMALIZED_INPUT`, through a two-layer MLP of width ``state_features``; the
    task through a learned table of ``task_features``-wide rows. Concatenated, a three-layer MLP of width
    ``hidden_dim`` ends in ``tanh``.

    Args:
        camera_keys: the cameras it reads, in order (LeRobot video keys, e.g. ``observation.images.scene``).
        image_size: ``[H, w]`` pixels of each camera's image (an int for a square one).
        state_dim: S, the width of ``observation.state``.
        state_mean, state_std: S floats each, the training states' per-dimension mean and standard deviation (env
            units); each std is floored at :data:`~worldsim.models.state.MIN_STATE_STD`. None: 0 and 1.
        action_dim: A, the width of the action.
        tasks: the task texts it knows, in table order (non-empty, distinct strings).
        channels: output channels of the convolutions, one per layer; each a multiple of ``num_groups``.
        image_features: width of each camera's feature vector.
        state_features: width of the state MLP.
        task_features: width of a task's embedding.
        hidden_dim: width of the action MLP.
        num_groups: GroupNorm groups in the convolutional encoders.

    Shapes:
        forward: images `(B, V, 3, H, w)` float in [0, 1] (V = ``len(camera_keys)``), state `(B, S)` float (env
        units), task_index `(B,)` long in ``[0, len(tasks))`` -> action `(B, A)` float32 in (-1, 1).

    Raises:
        ValueError: no cameras or repeated ones, a non-positive size or width, ``state_mean`` / ``state_std`` not S
            finite floats (or a negative std), no tasks or repeated or non-string ones, or a channel count that is
            not a multiple of ``num_groups`` (the message names the argument).
    """

    @register_to_config
    def __init__(self, camera_keys: list[str] | None = None, image_size: int | list[int] = 64, state_dim: int = 39,
                 state_mean: list[float] | None = None, state_std: list[float] | None = None, action_dim: int = 4,
                 tasks: list[str] | None = None, channels: list[int] | None = None, image_features: int = 64,
                 state_features: int = 64, task_features: int = 16, hidden_dim: int = 256, num_groups: int = 8):
        super().__init__()
        cameras = list(DEFAULT_CAMERAS if camera_keys is None else camera_keys)
        if not cameras or len(set(cameras)) != len(cameras) or not all(isinstance(k, str) and k for k in cameras):
            raise ValueError(f"camera_keys must be distinct non-empty strings, got {camera_keys!r}")
        height, width = size_pair(image_size, "image_size")
        for name, value in (("state_dim", state_dim), ("action_dim", action_dim), ("image_features", image_features),
                            ("state_features", state_features), ("task_features", task_features),
                            ("hidden_dim", hidden_dim), ("num_groups", num_groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        widths = _positive_ints("channels", [16, 32, 32, 64] if channels is None else channels)
        if any(c % num_groups for c in widths):
            raise ValueError(f"every entry of channels {widths} must be a multiple of num_groups={num_groups}")
        known = list(tasks or [])
        if not known or len(set(known)) != len(known) or not all(isinstance(t, str) and t for t in known):
            raise ValueError(f"tasks must be distinct non-empty strings, got {tasks!r}")
        mean, std = state_statistics(state_dim, state_mean, state_std)
        if np.any(std < 0):
            raise ValueError(f"state_std must be >= 0, got {std.tolist()}")
        # the config holds what was resolved (the defaults spelled out), so a saved network reads the same
        self.register_to_config(camera_keys=cameras, channels=widths, tasks=known, state_mean=mean.tolist(),
                                state_std=std.tolist())
        self.register_buffer("state_shift", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("state_scale", torch.tensor(np.maximum(std, MIN_STATE_STD), dtype=torch.float32),
                             persistent=False)

        # each stride-2 convolution (padding 1) halves a side, rounding up
        cells = math.ceil(height / 2 ** len(widths)) * math.ceil(width / 2 ** len(widths))
        self.encoders = nn.ModuleList()
        for _ in cameras:
            layers, in_channels = [], 3
            for out_channels in widths:
                layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                           nn.GroupNorm(num_groups, out_channels), nn.SiLU()]
                in_channels = out_channels
            layers += [nn.Flatten(), nn.Linear(widths[-1] * cells, image_features), nn.SiLU()]
            self.encoders.append(nn.Sequential(*layers))
        self.state_encoder = nn.Sequential(nn.Linear(state_dim, state_features), nn.SiLU(),
                                           nn.Linear(state_features, state_features), nn.SiLU())
        self.task_embedding = nn.Embedding(len(known), task_features)
        self.head = nn.Sequential(
            nn.Linear(len(cameras) * image_features + state_features + task_features, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, action_dim))

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, w)``, pixels of each camera's image."""
        return size_pair(self.config.image_size, "image_size")

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """Env units -> ``(state - state_mean) / state_std``, clipped to +-MAX_NORMALIZED_INPUT; `(..., S)` float32."""
        normalized = (state.float() - self.state_shift) / self.state_scale
        return normalized.clamp(-MAX_NORMALIZED_INPUT, MAX_NORMALIZED_INPUT)

    def forward(self, images: torch.Tensor, state: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """The action.

        Args:
            images: `(B, V, 3, H, w)` float in [0, 1], the cameras in ``camera_keys`` order.
            state: `(B, S)` float, ``observation.state`` in env units.
            task_index: `(B,)` long, each row's task as an index into ``tasks``.

        Returns:
            `(B, A)` float32 in (-1, 1).

        Raises:
            ValueError: a shape other than those above, or a task index out of range.
        """
        cameras, (height, width) = len(self.config.camera_keys), self.image_shape
        expected = (cameras, 3, height, width)
        if images.ndim != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        batch = images.shape[0]
        if state.shape != (batch, self.config.state_dim):
            raise ValueError(f"state must be ({batch}, {self.config.state_dim}), got {tuple(state.shape)}")
        if task_index.shape != (batch,):
            raise ValueError(f"task_index must be ({batch},), got {tuple(task_index.shape)}")
        if batch and not 0 <= int(task_index.min()) <= int(task_index.max()) < len(self.config.tasks):
            raise ValueError(f"task_index must be in [0, {len(self.config.tasks)}), got {task_index.tolist()}")
        dtype = self.head[0].weight.dtype
        pixels = images.to(dtype) * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        # 1. one feature vector per camera, 2. the state's, 3. the task's, 4. the action MLP
        features = [encoder(pixels[:, view]) for view, encoder in enumerate(self.encoders)]
        features.append(self.state_encoder(self.normalize_state(state).to(dtype)))
        features.append(self.task_embedding(task_index.long()))
        return torch.tanh(self.head(torch.cat(features, dim=1))).float()


def load_bc_network(folder: str | Path) -> BCNetwork:
    """A :class:`BCNetwork` from a ``save_pretrained`` folder, read from safetensors only (nothing is unpickled).

    Raises:
        FileNotFoundError: the folder has no ``config.json`` or no ``.safetensors`` weights.
        ValueError: the weights are unreadable or do not match ``config.json``, or the config names another class.
    """
    from worldsim.pipelines.loading import _load_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; expected a folder written by BCPolicy.save_pretrained")
    kind = read_json_object(folder / "config.json").get("_class_name")
    if kind != BCNetwork.__name__:
        raise ValueError(f"{folder / 'config.json'} describes a {kind!r}, not a {BCNetwork.__name__}")
    return _load_weights(BCNetwork, folder)


def save_bc_network(network: BCNetwork, folder: str | Path, metrics: dict | None = None) -> Path:
    """Writes ``config.json`` and ``model.safetensors`` (plus ``metrics.json`` when given) to ``folder``, replacing
    what is there, atomically: into a hidden staged sibling folder that is then moved into place, so an interrupted
    save leaves the old folder or the new one, never a mix. Returns ``folder``.

    Raises:
        TypeError: ``network`` is not a :class:`BCNetwork`.
        OSError: the folder cannot be written (an old one is kept).
    """
    from worldsim.pipelines.loading import save_model_folder

    if not isinstance(network, BCNetwork):
        raise TypeError(f"expected a BCNetwork, got {type(network).__name__}")
    return save_model_folder(network, folder, metrics)


class BCPolicy:
    """A :class:`BCNetwork` as a LeRobot-style policy: ``select_action(batch)`` and ``reset()`` on torch tensors.

    The batch is what :class:`~worldsim.evaluation.policy_adapters.LeRobotPolicy` passes for a Dict observation:
    each camera ``(N, 3, H, W)`` float32 in [0, 1] under its key, ``observation.state`` `(N, S)` float32 and
    ``task``, a list of N strings (or one string for every row). Images of another size are resized to the trained
    one (bilinear, antialiased). A network trained on a single task may be given no ``task``. It keeps no state
    between steps, so :meth:`reset` does nothing.

    >>> policy = BCPolicy.from_pretrained("runs/bc/step-003000")  # doctest: +SKIP
    >>> policy.select_action({"observation.images.scene": scene, "observation.images.wrist": wrist,
    ...                       "observation.state": state, "task": ["push the puck to the goal"] * len(state)})
    ... # (N, 4) float32 in (-1, 1)  # doctest: +SKIP

    Args:
        network: the trained network (put in eval mode on ``device``).
        device: where it runs (``"cpu"`` by default).
    """

    def __init__(self, network: BCNetwork, device: str | torch.device = "cpu"):
        if not isinstance(network, BCNetwork):
            raise TypeError(f"BCPolicy wraps a BCNetwork, got {type(network).__name__}")
        self.network = network.eval()
        self.to(device)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "BCPolicy":
        """Loads a policy written by :meth:`save_pretrained` (or a ``train-bc`` checkpoint folder).

        Raises:
            FileNotFoundError, ValueError: as :func:`load_bc_network`.
        """
        return cls(load_bc_network(folder), device)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` to ``folder``, replacing what is there, atomically (a
        hidden staged sibling folder moved into place). Returns ``folder``.

        Raises:
            OSError: the folder cannot be written (an old one is kept).
        """
        return save_bc_network(self.network, folder)

    def to(self, device: str | torch.device) -> "BCPolicy":
        """Moves the network to ``device``; returns the policy."""
        self.device = torch.device(device)
        self.network.to(self.device)
        return self

    @property
    def config(self):
        """The network's config (``camera_keys``, ``image_size``, ``state_dim``, ``action_dim``, ``tasks``, ...)."""
        return self.network.config

    def reset(self) -> None:
        """Starts new episodes: nothing to clear (the policy acts on the current observation alone)."""

    def task_index(self, tasks: Any, batch: int) -> torch.Tensor:
        """The table rows of a batch's tasks.

        Args:
            tasks: a list of ``batch`` strings, one string for every row, or None (only for a network of one task).
            batch: N.

        Returns:
            `(N,)` long on the policy's device.

        Raises:
            ValueError: no task given to a multi-task network, a list of another length, or a task the network was
                not trained on (the message names it and lists the known tasks).
        """
        known = list(self.config.tasks)
        if tasks is None:
            if len(known) != 1:
                raise ValueError(f"the batch has no {TASK!r}; this policy knows several tasks, give one of {known}")
            tasks = known * batch
        elif isinstance(tasks, str):
            tasks = [tasks] * batch
        tasks = list(tasks)
        if len(tasks) != batch:
            raise ValueError(f"{TASK!r} holds {len(tasks)} entries for a batch of {batch}")
        unknown = next((task for task in tasks if task not in known), None)
        if unknown is not None:
            raise ValueError(f"unknown task {unknown!r}; this policy was trained on {known}")
        return torch.tensor([known.index(task) for task in tasks], dtype=torch.long, device=self.device)

    def _images(self, batch: dict) -> torch.Tensor:
        """The cameras of a batch as `(N, V, 3, H, w)` float32 in [0, 1] at the trained size."""
        size, views = self.network.image_shape, []
        for key in self.config.camera_keys:
            if key not in batch:
                raise ValueError(f"the batch has no camera {key!r}; this policy reads {list(self.config.camera_keys)}, "
                                 f"the batch holds {sorted(batch)}")
            image = torch.as_tensor(batch[key])
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(f"{key} must be (N, 3, H, W), got shape {tuple(image.shape)}")
            image = image.to(self.device)
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            if tuple(image.shape[-2:]) != size:
                image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
            views.append(image)
        if len({len(view) for view in views}) != 1:
            raise ValueError(f"the cameras {list(self.config.camera_keys)} hold different batch sizes "
                             f"{[len(view) for view in views]}")
        return torch.stack(views, dim=1)  # (N, V, 3, H, w)

    @torch.no_grad()
    def select_action(self, batch: dict) -> torch.Tensor:
        """One action per row of the batch.

        Args:
            batch: ``{camera key: (N, 3, H, W) float32 in [0, 1] (uint8 0..255 is also read), "observation.state":
                (N, S) float32 (env units), "task": list of N strings}``, torch tensors (arrays are converted);
                other keys are ignored.

        Returns:
            `(N, A)` float32 tensor on the policy's device, normalised actions in (-1, 1).

        Raises:
            ValueError: a missing camera or ``observation.state`` (naming it), an image not `(N, 3, H, W)`, a state
                not `(N, S)` or not finite, or a bad task (:meth:`task_index`).
        """
        images = self._images(batch)
        if OBS_STATE not in batch:
            raise ValueError(f"the batch has no {OBS_STATE!r}; the batch holds {sorted(batch)}")
        state = torch.as_tensor(batch[OBS_STATE]).to(self.device, torch.float32)
        if state.shape != (len(images), self.config.state_dim):
            raise ValueError(f"{OBS_STATE} must be ({len(images)}, {self.config.state_dim}), got "
                             f"{tuple(state.shape)}")
        if not torch.isfinite(state).all():
            raise ValueError(f"{OBS_STATE} holds NaN or inf")
        return self.network(images, state, self.task_index(batch.get(TASK), len(images)))


__all__ = ["BCNetwork", "BCPolicy", "DEFAULT_CAMERAS", "load_bc_network", "save_bc_network"]
