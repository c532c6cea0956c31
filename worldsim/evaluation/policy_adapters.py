"""One batched policy interface over what users already have: per-step callables, chunk callables, LeRobot policies.

Policy evaluation runs N episodes side by side (a vector env, real or imagined), so every policy is driven as
``reset(num_envs)`` then ``act(observation) -> action`` on batches. :func:`as_policy` wraps

- a callable ``observation -> action`` (one env's observation in, one action out; ``batched=True`` if it takes
  and returns batches),
- a callable returning an action *chunk* ``(H, *action_shape)``, executed open-loop for its length, one queue per
  env (action-chunking policies such as ACT or diffusion policy),
- a LeRobot-style object with ``select_action(batch)`` and ``reset()`` (LeRobot's ``PreTrainedPolicy``), fed
  ``{"observation.image": (N, 3, H, W) float32 in [0, 1]}`` like LeRobot's env wrappers do.

Observations are what the env gives: ``(N, H, W, 3)`` uint8 frames for worldsim and pixel envs, or a dict of
batched arrays for a Dict-observation env (a robot's cameras ``{"observation.images.<camera>": (N, H, W, 3) uint8}``
and ``"observation.state"`` `(N, S)` float32, as worldsim's multi-camera models and LeRobot-style robot envs give);
per-env callables then get one env's dict.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import numpy as np

from worldsim.constants import OBS_IMAGE


def batch_size(observation: Any) -> int:
    """N, the number of envs in a batched observation (an array or a dict of arrays)."""
    if isinstance(observation, dict):
        return len(next(iter(observation.values())))
    return len(observation)


def env_observation(observation: Any, index: int) -> Any:
    """Env ``index``'s observation out of a batched one (an array row, or a dict of rows)."""
    if isinstance(observation, dict):
        return {key: value[index] for key, value in observation.items()}
    return observation[index]


def _as_array(action: Any) -> np.ndarray:
    if hasattr(action, "detach"):  # a torch tensor
        action = action.detach().float().cpu().numpy()
    return np.asarray(action)


class CallablePolicy:
    """A callable ``observation -> action``, called once per env (or once per batch with ``batched=True``).

    Shapes: ``act`` observation `(N, *obs_shape)` -> action `(N, *action_shape)`.

    Raises (``act``): ValueError: the callable returned an action whose shape is not ``action_shape``.
    """

    def __init__(self, function: Callable, action_shape: tuple[int, ...], batched: bool = False):
        self.function, self.action_shape, self.batched = function, tuple(action_shape), batched

    def reset(self, num_envs: int) -> None:
        self.num_envs = num_envs

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self.batched:
            action = _as_array(self.function(observation))
        else:
            action = np.stack([_as_array(self.function(env_observation(observation, index)))
                               for index in range(batch_size(observation))])
        expected = (batch_size(observation),) + self.action_shape
        if action.shape != expected:
            raise ValueError(f"policy returned actions of shape {action.shape}; expected {expected}")
        return action


class ChunkPolicy:
    """A callable ``observation -> action chunk (H, *action_shape)``; each env plays its chunk open-loop.

    An env asks for a new chunk only when its queue is empty, so envs may be at different points of their chunks.
    With ``batched=True`` the callable takes ``(N, *obs_shape)`` and returns ``(N, H, *action_shape)``; it is then
    called for all envs whenever any queue runs out, and only the envs that needed a chunk take theirs.

    Raises (``act``): ValueError: an empty chunk or one whose action shape is not ``action_shape``.
    """

    def __init__(self, function: Callable, action_shape: tuple[int, ...], batched: bool = False):
        self.function, self.action_shape, self.batched = function, tuple(action_shape), batched
        self.queues: list[deque] = []

    def reset(self, num_envs: int) -> None:
        self.queues = [deque() for _ in range(num_envs)]

    def _check(self, chunk: np.ndarray) -> np.ndarray:
        if chunk.ndim != len(self.action_shape) + 1 or chunk.shape[1:] != self.action_shape or len(chunk) == 0:
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}; expected (H, *{self.action_shape}) "
                             f"with H >= 1")
        return chunk

    def act(self, observation: np.ndarray) -> np.ndarray:
        if len(self.queues) != batch_size(observation):
            raise ValueError(f"got {batch_size(observation)} observations but reset() was called for "
                             f"{len(self.queues)} envs")
        empty = [index for index, queue in enumerate(self.queues) if not queue]
        if empty:
            if self.batched:
                chunks = _as_array(self.function(observation))
                for index in empty:
                    self.queues[index].extend(self._check(chunks[index]))
            else:
                for index in empty:
                    self.queues[index].extend(self._check(_as_array(self.function(env_observation(observation,
                                                                                                  index)))))
        return np.stack([queue.popleft() for queue in self.queues])


class LeRobotPolicy:
    """A LeRobot-style policy object: ``reset()`` and ``select_action(batch) -> (N, A)`` on torch tensors.

    The batch is ``{image_key: (N, 3, H, W) float32 in [0, 1]}`` (LeRobot's image convention), plus
    ``"task"`` when a task string is given. A Dict observation passes every camera the same way under its own key
    (each ``(N, H, W, 3)`` uint8 entry, e.g. ``observation.images.scene`` and ``observation.images.wrist``) and every
    other entry (``observation.state`` `(N, S)`) as a float32 tensor. The object keeps its own per-env action queues, as LeRobot policies
    do, so ``reset`` resets all envs at once.

    Raises (``act``): ValueError: ``select_action`` returned a batch of the wrong shape.
    """

    def __init__(self, policy: Any, action_shape: tuple[int, ...], image_key: str = OBS_IMAGE,
                 task: str | None = None):
        self.policy, self.action_shape, self.image_key, self.task = policy, tuple(action_shape), image_key, task

    def reset(self, num_envs: int) -> None:
        self.policy.reset()

    def set_task(self, task: str | None) -> None:
        """The instruction passed as ``batch["task"]`` from now on (None: none); ranking and steering call this with
        the task of the episodes they run."""
        self.task = task

    def act(self, observation: np.ndarray) -> np.ndarray:
        import torch

        def image(frames) -> "torch.Tensor":
            return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0

        if isinstance(observation, dict):
            batch = {key: image(value) if np.asarray(value).dtype == np.uint8 and np.asarray(value).ndim == 4
                     else torch.from_numpy(np.asarray(value, dtype=np.float32)) for key, value in observation.items()}
        else:
            batch = {self.image_key: image(observation)}
        if self.task is not None:
            batch["task"] = [self.task] * batch_size(observation)
        with torch.inference_mode():
            action = _as_array(self.policy.select_action(batch))
        expected = (batch_size(observation),) + self.action_shape
        if action.shape != expected:
            raise ValueError(f"select_action returned shape {action.shape}; expected {expected}")
        return action


def as_policy(policy: Any, action_shape: tuple[int, ...], chunk: bool | None = None, batched: bool = False):
    """Wraps ``policy`` for batched evaluation (see the module docstring for what it accepts).

    Args:
        policy: an object with ``select_action`` and ``reset`` (LeRobot-style), an object that already has
            ``reset(num_envs)`` and ``act``, or a callable.
        action_shape: one env's action shape (``action_space.shape``; ``()`` for ``Discrete``).
        chunk: for callables, whether they return action chunks. ``None`` decides on the first call from the
            output's number of dimensions (one more than ``action_shape``: a chunk).
        batched: for callables, whether they take and return batches.

    Returns:
        An object with ``reset(num_envs)`` and ``act(observation (N, ...)) -> (N, *action_shape)``.

    Raises:
        TypeError: ``policy`` is none of the above.
    """
    action_shape = tuple(action_shape)
    if hasattr(policy, "select_action") and hasattr(policy, "reset"):
        return LeRobotPolicy(policy, action_shape)
    if hasattr(policy, "act") and hasattr(policy, "reset"):
        return policy
    if not callable(policy):
        raise TypeError(f"policy must be callable or have select_action/reset, got {type(policy).__name__}")
    if chunk is True:
        return ChunkPolicy(policy, action_shape, batched)
    if chunk is False:
        return CallablePolicy(policy, action_shape, batched)
    return _AutoPolicy(policy, action_shape, batched)


class _AutoPolicy:
    """Defers the per-step / chunk decision to the first output (see :func:`as_policy`)."""

    def __init__(self, function: Callable, action_shape: tuple[int, ...], batched: bool):
        self.function, self.action_shape, self.batched = function, action_shape, batched
        self.inner = None
        self.num_envs = 0

    def reset(self, num_envs: int) -> None:
        self.num_envs = num_envs
        if self.inner is not None:
            self.inner.reset(num_envs)

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self.inner is not None:
            return self.inner.act(observation)
        probe = _as_array(self.function(observation if self.batched else env_observation(observation, 0)))
        extra = probe.ndim - len(self.action_shape) - (1 if self.batched else 0)
        if extra not in (0, 1):
            raise ValueError(f"policy output shape {probe.shape} is neither an action {self.action_shape} nor "
                             f"a chunk (H, *{self.action_shape})" + (" per env" if self.batched else ""))
        # the probe was a real call (policies may be stateful or stochastic): its output is used, not discarded;
        # the inner adapter's first call is for env 0 (or the whole batch), which is what the probe saw
        pending = [probe]
        function = self.function
        cls = ChunkPolicy if extra == 1 else CallablePolicy
        self.inner = cls(lambda obs: pending.pop() if pending else function(obs), self.action_shape, self.batched)
        self.inner.reset(self.num_envs or batch_size(observation))
        return self.inner.act(observation)
