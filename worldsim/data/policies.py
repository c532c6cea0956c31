"""Data-collection policies: ``random``, those of the embodiment plug-ins, any ``module:callable`` and saved policy
checkpoints (a ``worldsim train-bc`` folder).

A policy is any callable ``policy(observation, info) -> action`` that returns an action inside the env's
``action_space``. Policies with state may define ``reset(seed: int | None)``, called at the start of each
episode. Policies are looked up by name with :func:`make_policy`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

Policy = Callable[[Any, dict], np.ndarray]


class RandomPolicy:
    """Samples uniformly from the action space (seeded through ``reset``).

    Args:
        action_space: the env's ``gymnasium.spaces.Space``.
    """

    def __init__(self, action_space: gym.Space):
        self.action_space = action_space

    def reset(self, seed: int | None = None) -> None:
        self.action_space.seed(seed)

    def __call__(self, observation: Any, info: dict) -> np.ndarray:
        return self.action_space.sample()


def _load_callable(spec: str) -> Callable:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"policy {spec!r} is not 'module:callable'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError as error:
        raise ValueError(f"policy {spec!r}: module {module_name!r} has no attribute {attribute!r}") from error


class ZooMemberPolicy:
    """A member of an embodiment plug-in's policy zoo, driven as a collection policy ``(observation, info) ->
    action`` (``worldsim collect --policy zoo:<member>``), so the episodes a zoo policy produces can be recorded and
    later ranked against (:func:`worldsim.evaluation.rank.rank_from_dataset`).

    The member sees the frame: ``info["pixels"]``, else the observation itself when it is an `(H, W, 3)` image, else
    ``observation["pixels"]``; resized to ``image_size`` when given (the resolution the member meets in ranking).

    Args:
        embodiment: the :class:`~worldsim.embodiments.EmbodimentPlugin` whose zoo holds the member.
        member: the member's name.
        image_size: side the frame is resized to before the member sees it (None: as recorded).

    Raises:
        ValueError: an unknown member (the message lists the zoo); at ``__call__``, an observation with no frame.
    """

    def __init__(self, embodiment, member: str, image_size: int | None = None):
        zoo = embodiment.policy_zoo(seed=0)
        if member not in zoo:
            raise ValueError(f"embodiment {embodiment.name!r} has no zoo policy {member!r}; its zoo: {sorted(zoo)}")
        self.embodiment, self.member, self.image_size = embodiment, member, image_size
        self.policy = zoo[member]
        self.policy.reset(1)

    def reset(self, seed: int | None = None) -> None:
        self.policy = self.embodiment.policy_zoo(seed=0 if seed is None else int(seed))[self.member]
        self.policy.reset(1)

    def __call__(self, observation: Any, info: dict) -> np.ndarray:
        from worldsim.data.frame_cache import resize_frames

        if "pixels" in info:
            frame = np.asarray(info["pixels"])
        elif isinstance(observation, np.ndarray) and observation.ndim == 3 and observation.shape[-1] == 3:
            frame = observation
        elif isinstance(observation, dict) and "pixels" in observation:
            frame = np.asarray(observation["pixels"])
        else:
            raise ValueError(f"zoo policy {self.member!r} needs a frame: info['pixels'], an (H, W, 3) observation or "
                             f"observation['pixels']; got {type(observation).__name__}")
        if self.image_size is not None:
            frame = resize_frames(frame[None], self.image_size)[0]
        return self.policy.act(frame[None])[0]


class CheckpointPolicy:
    """A saved policy checkpoint (a ``worldsim train-bc`` folder, :class:`~worldsim.policies.bc.BCPolicy`) driven as
    a collection policy ``(observation, info) -> action``, so that ``worldsim collect --policy <folder>`` records the
    episodes of a user's own policy: logs of earlier policy versions, with their failures, to train a world model on.

    Each step the observation becomes a LeRobot batch of one through
    :class:`~worldsim.evaluation.policy_adapters.LeRobotPolicy`, the adapter ``worldsim rank`` and ``steer-eval``
    drive the same checkpoint with: every camera ``(1, 3, H, W)`` float32 in [0, 1], ``observation.state``
    ``(1, S)`` float32 and ``task``, the instruction in ``info["task"]`` (reset and step infos of plug-in envs hold it).
    The action is the policy's, plus Gaussian noise of standard deviation ``noise_std`` (action units) drawn from
    a generator seeded by :meth:`reset`, clipped to the Box's bounds.

    Args:
        folder: the checkpoint folder (``config.json`` and ``model.safetensors``).
        action_space: the env's action space; a ``Box`` of shape ``(A,)``, A the checkpoint's ``action_dim``.
        noise_std: Gaussian action noise, >= 0 (default 0: the policy as it is).

    Raises:
        FileNotFoundError, ValueError: as :func:`~worldsim.policies.bc.load_bc_network`; ValueError: a negative
            ``noise_std``, or an action space that is not a Box of shape ``(action_dim,)`` (the checkpoint's).
    """

    def __init__(self, folder: str | Path, action_space: gym.Space, noise_std: float = 0.0):
        from worldsim.evaluation.policy_adapters import LeRobotPolicy
        from worldsim.policies.bc import BCPolicy

        noise_std = float(noise_std)
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        policy = BCPolicy.from_pretrained(folder)
        width = int(policy.config.action_dim)
        if not isinstance(action_space, gym.spaces.Box) or tuple(action_space.shape) != (width,):
            raise ValueError(f"the checkpoint {folder} acts with {width} values; the env's action space is "
                             f"{action_space}, expected a Box of shape ({width},)")
        self.folder, self.action_space, self.noise_std = Path(folder), action_space, noise_std
        self.adapter = LeRobotPolicy(policy, action_space.shape)
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        """Starts an episode: reseeds the action noise and resets the policy."""
        self.rng = np.random.default_rng(seed)
        self.adapter.reset(1)

    def __call__(self, observation: Any, info: dict) -> np.ndarray:
        """One action.

        Args:
            observation: one env's observation: a Dict of cameras `(H, W, 3)` uint8 and ``observation.state`` `(S,)`
                float32 (env units), or a single `(H, W, 3)` uint8 image.
            info: the env's info; its ``"task"`` string, when present, is the instruction passed to the policy.

        Returns:
            `(A,)` in the action space's dtype and bounds.

        Raises:
            ValueError: as :meth:`BCPolicy.select_action <worldsim.policies.bc.BCPolicy.select_action>` (a missing
                camera or state, an unknown task).
        """
        task = info.get("task")
        self.adapter.set_task(task if isinstance(task, str) and task else None)
        if isinstance(observation, dict):
            batch = {key: np.asarray(value)[None] for key, value in observation.items()}
        else:
            batch = np.asarray(observation)[None]
        action = np.asarray(self.adapter.act(batch)[0], dtype=np.float64)
        if self.noise_std:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)


def plugin_policies(embodiment=None) -> dict[str, Callable]:
    """Collection policies that embodiment plug-ins contribute: ``{name: factory(action_space, **kwargs)}``.

    Args:
        embodiment: an :class:`~worldsim.embodiments.EmbodimentPlugin` to ask first, or None.

    Every registered plug-in is asked (``embodiment``'s policies win a name clash); a plug-in whose env package is
    missing contributes nothing.
    """
    from worldsim.embodiments import make_embodiment, registered_embodiments

    found: dict[str, Callable] = {}
    for name in registered_embodiments():
        try:
            found.update(make_embodiment(name).collection_policies())
        except ImportError:
            continue
    if embodiment is not None:
        found.update(embodiment.collection_policies())
    return found


def make_policy(name: str, action_space: gym.Space, embodiment=None, **kwargs) -> Policy:
    """Builds a collection policy by name.

    Args:
        name: ``"random"``; ``"zoo:<member>"``, a member of the env's plug-in zoo (:class:`ZooMemberPolicy`; keyword
            ``image_size``); a policy an embodiment plug-in contributes (:func:`plugin_policies`; e.g.
            a scripted expert); or
            ``"module:callable"``: an importable callable that is itself a policy ``(observation, info) -> action``,
            or a factory that takes ``action_space`` (and the keyword arguments) and returns one; or a folder
            holding a saved policy checkpoint (:class:`CheckpointPolicy`; keyword ``noise_std``).
        action_space: the env's action space.
        embodiment: the plug-in of the env being recorded (asked first), or None.
        kwargs: keyword arguments for the policy's factory.

    Raises:
        ValueError: unknown name (the message lists the known ones) or a malformed ``module:callable``.
    """
    if name == "random":
        return RandomPolicy(action_space)
    if name.startswith("zoo:"):
        if embodiment is None:
            raise ValueError(f"policy {name!r} needs the env's embodiment plug-in (its zoo), and the env has none")
        return ZooMemberPolicy(embodiment, name[len("zoo:"):], **kwargs)
    if ":" in name:
        target = _load_callable(name)
        if isinstance(target, type) or getattr(target, "is_policy_factory", False):
            return target(action_space=action_space, **kwargs)
        return target
    known = plugin_policies(embodiment)
    if name in known:
        return known[name](action_space, **kwargs)
    if Path(name).is_dir():  # after the names, so a folder that happens to share a policy's name does not shadow it
        return CheckpointPolicy(name, action_space, **kwargs)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(['random', *sorted(known)])} or 'module:callable'")
