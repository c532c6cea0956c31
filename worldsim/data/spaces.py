"""Gymnasium action spaces as JSON, and a flat float layout for actions of any supported space.

Supported: ``Box``, ``Discrete``, ``MultiBinary``, ``MultiDiscrete`` and ``Dict`` of those. Every action is stored
and fed to the model as a flat float32 vector (the dataset's ``action`` column):

* ``Box(shape)``: its values, flattened (``prod(shape)`` entries); the only part that is min-max normalised;
* ``Discrete(n, start)``: one entry, the index ``a - start`` in ``[0, n)``;
* ``MultiBinary(n)``: ``n`` entries in {0, 1};
* ``MultiDiscrete(nvec)``: ``len(nvec)`` entries, each an index in ``[0, nvec[i])``;
* ``Dict``: its sub-spaces' layouts concatenated in sorted key order.

Unlike ``gymnasium.spaces.flatten`` (which one-hot encodes discrete parts), indices stay indices, so the
embodiment's action encoder (:func:`worldsim.models.actions.build_action_encoder`) can embed them.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SPACE_TYPES = ("Box", "Discrete", "MultiBinary", "MultiDiscrete", "Dict")


def space_to_json(space: gym.Space) -> dict:
    """Describes an action space as JSON (what datasets, checkpoints and the world-model env rebuild it from).

    Raises:
        NotImplementedError: a space type outside :data:`SPACE_TYPES` (the message names it).
    """
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape),
                "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": int(np.prod(space.shape))}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).reshape(-1).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in sorted(space.spaces.items())}}
    raise NotImplementedError(f"action space {space} is not supported; supported: {', '.join(SPACE_TYPES)}")


def space_from_json(description: dict) -> gym.Space:
    """Inverse of :func:`space_to_json`.

    Raises:
        ValueError: unknown ``type`` or missing fields (the message names them).
    """
    kind = description.get("type")
    try:
        if kind == "Box":
            dtype = description.get("dtype", "float32")
            return gym.spaces.Box(low=np.asarray(description["low"], dtype=dtype),
                                  high=np.asarray(description["high"], dtype=dtype), dtype=dtype)
        if kind == "Discrete":
            return gym.spaces.Discrete(description["n"], start=description.get("start", 0))
        if kind == "MultiBinary":
            return gym.spaces.MultiBinary(description["n"])
        if kind == "MultiDiscrete":
            return gym.spaces.MultiDiscrete(description["nvec"])
        if kind == "Dict":
            return gym.spaces.Dict({key: space_from_json(sub) for key, sub in description["spaces"].items()})
    except KeyError as error:
        raise ValueError(f"action space description {description} lacks field {error}") from error
    raise ValueError(f"unknown action space type {kind!r}; known: {', '.join(SPACE_TYPES)}")


def flat_dim(description: dict) -> int:
    """Length of the flat layout of an action of this space."""
    kind = description["type"]
    if kind == "Box":
        return int(np.prod(description["shape"]))
    if kind == "Discrete":
        return 1
    if kind == "MultiBinary":
        return int(description["n"])
    if kind == "MultiDiscrete":
        return len(description["nvec"])
    if kind == "Dict":
        return sum(flat_dim(sub) for _, sub in sorted(description["spaces"].items()))
    raise ValueError(f"unknown action space type {kind!r}; known: {', '.join(SPACE_TYPES)}")


def continuous_mask(description: dict) -> np.ndarray:
    """`(flat_dim,)` bool: True for entries that are Box values (min-max normalised), False for indices and bits."""
    kind = description["type"]
    if kind == "Dict":
        parts = [continuous_mask(sub) for _, sub in sorted(description["spaces"].items())]
        return np.concatenate(parts) if parts else np.zeros(0, bool)
    return np.full(flat_dim(description), kind == "Box")


def flatten_action(description: dict, action: Any) -> np.ndarray:
    """One env action -> `(flat_dim,)` float32 in the flat layout.

    Raises:
        ValueError: the action does not fit the space (wrong size or key set).
    """
    kind = description["type"]
    if kind == "Dict":
        if not isinstance(action, dict) or set(action) != set(description["spaces"]):
            raise ValueError(f"action {action!r} must be a dict with keys {sorted(description['spaces'])}")
        parts = [flatten_action(sub, action[key]) for key, sub in sorted(description["spaces"].items())]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    values = np.asarray(action, dtype=np.float64).reshape(-1)
    if kind == "Discrete":
        values = values - description.get("start", 0)
    if values.size != flat_dim(description):
        raise ValueError(f"action {action!r} has {values.size} entries, the {kind} space expects {flat_dim(description)}")
    return values.astype(np.float32)


def unflatten_action(description: dict, flat: np.ndarray) -> Any:
    """Inverse of :func:`flatten_action`: `(flat_dim,)` -> an action of the space (ints for discrete parts)."""
    flat = np.asarray(flat).reshape(-1)
    kind = description["type"]
    if kind == "Box":
        return flat.reshape(description["shape"]).astype(description.get("dtype", "float32"))
    if kind == "Discrete":
        return int(round(float(flat[0]))) + description.get("start", 0)
    if kind in ("MultiBinary", "MultiDiscrete"):
        return np.rint(flat).astype(np.int8 if kind == "MultiBinary" else np.int64)
    if kind == "Dict":
        out, offset = {}, 0
        for key, sub in sorted(description["spaces"].items()):
            size = flat_dim(sub)
            out[key] = unflatten_action(sub, flat[offset:offset + size])
            offset += size
        return out
    raise ValueError(f"unknown action space type {kind!r}; known: {', '.join(SPACE_TYPES)}")
