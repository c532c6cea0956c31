"""Recording episodes from any Gymnasium env with pixel observations (or ``render()``).

Cameras: an env whose observation is a dict with LeRobot image keys (``"observation.images.<camera>"``, e.g. a
``gymnasium.spaces.Dict`` with ``observation.images.scene`` and ``observation.images.wrist``) is recorded with every
such camera, each its own video in the dataset, in the observation's key order; any other env is recorded as one
camera (``observation.image``) from its `(H, W, 3)` observation, ``observation["pixels"]`` or ``render()``.

Task text: an env may name each episode's task in ``reset``'s ``info["task"]`` (a multi-task env); otherwise
the episode records its embodiment plug-in's :attr:`~worldsim.embodiments.EmbodimentPlugin.task`.

>>> from worldsim.data.collect import collect  # doctest: +SKIP
>>> collect("MiniGrid-Empty-8x8-v0", "minigrid-zoo", num_episodes=200, out="data/grid")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldsim.data.cameras import compose_views
from worldsim.data.lerobot import Episode, LeRobotDatasetWriter
from worldsim.data.policies import make_policy
from worldsim.data.spaces import flatten_action, space_to_json

#: the prefix of LeRobot's per-camera image keys (``observation.images.<camera>``)
CAMERA_PREFIX = "observation.images."


def import_env_package(env_id: str) -> None:
    """Imports the package that registers ``env_id``: the one its embodiment plug-in names, else the id's namespace
    (``my_envs/Arm-v0`` -> ``my_envs``) when such a module exists.

    Raises:
        ImportError: the plug-in's package is not installed (the message says what to install).
    """
    from worldsim.embodiments import embodiment_for_env

    plugin = embodiment_for_env(env_id)
    if plugin is not None:
        plugin.import_env_package()
        return
    namespace = env_id.split("/")[0] if "/" in env_id else None
    if namespace:
        try:
            importlib.import_module(namespace)
        except ImportError:
            pass  # gym.make names the missing namespace itself


def make_recording_env(env_id: str, **kwargs) -> gym.Env:
    """Makes ``env_id`` for recording: through its embodiment plug-in (its pixel-observation keyword arguments and
    recording wrappers; :meth:`~worldsim.embodiments.EmbodimentPlugin.make_recording_env`) when one serves it, else
    ``gym.make(env_id, render_mode="rgb_array", **kwargs)``."""
    from worldsim.embodiments import embodiment_for_env

    plugin = embodiment_for_env(env_id)
    if plugin is not None:
        return plugin.make_recording_env(env_id, **kwargs)
    import_env_package(env_id)
    return gym.make(env_id, **{"render_mode": "rgb_array", **kwargs})


def camera_images(observation: Any) -> dict[str, np.ndarray] | None:
    """The camera images of a multi-camera observation: ``{"observation.images.<camera>": (H, W, 3) uint8}`` in the
    observation's key order, or None when ``observation`` is not a dict with such keys.

    Raises:
        ValueError: a camera image that is not `(H, W, 3)` (the message names the key).
    """
    if not isinstance(observation, dict):
        return None
    images = {key: np.asarray(value) for key, value in observation.items()
              if isinstance(key, str) and key.startswith(CAMERA_PREFIX)}
    for key, image in images.items():
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"observation[{key!r}] must be an (H, W, 3) image, got shape {image.shape}")
    return images or None


def _pixels(observation: Any, env: gym.Env) -> np.ndarray:
    """The frame of one observation: an `(H, W, 3)` observation itself, a multi-camera observation's views side by
    side in key order (:func:`camera_images`, :func:`~worldsim.data.cameras.compose_views`: `(H, V * W, 3)`, the
    frame a world model of composed views sees), ``observation["pixels"]``, else ``env.render()``.

    Raises:
        ValueError: no frame (``render()`` returns None), or camera views of different sizes.
    """
    if isinstance(observation, np.ndarray) and observation.ndim == 3 and observation.shape[-1] == 3:
        return observation
    cameras = camera_images(observation)
    if cameras:
        return compose_views(list(cameras.values()))
    if isinstance(observation, dict) and "pixels" in observation:
        return np.asarray(observation["pixels"])
    frame = env.render()
    if frame is None:
        raise ValueError("the env has no pixel observation and render() returned None; make it with render_mode='rgb_array'")
    return np.asarray(frame)


def record_episode(env: gym.Env, policy, seed: int, max_steps: int | None = None, task: str = "",
                   reset_options: dict | None = None, embodiment=None) -> Episode:
    """Runs one episode and returns it with frames, actions, rewards and (where the env's plug-in records them,
    :meth:`~worldsim.embodiments.EmbodimentPlugin.recorded_state`) states.

    ``reset_options`` go to ``env.reset`` (e.g. an env's ``{"reset_to_state": [...]}``).

    Frames are the observations *before* each action (the observation after the last action is dropped, as in
    LeRobot datasets), so ``frames[t + 1]`` is the result of ``action[t]``. Actions are stored in the flat layout of
    :mod:`worldsim.data.spaces` (discrete parts as indices).

    A dict observation with ``observation.images.<camera>`` keys (:func:`camera_images`) gives a multi-camera
    episode: ``Episode.images`` holds every camera, `(T, H, W, 3)` uint8 each, and ``frames`` the first. The
    episode's task is ``reset``'s ``info["task"]`` when the env names one (a non-empty string), else ``task``.

    Raises:
        ValueError: the env gives no frame (no image observation and ``render()`` returns None), or a camera's
            image is not `(H, W, 3)`.
    """
    space = space_to_json(env.action_space)
    observation, info = env.reset(seed=seed, options=reset_options)
    if isinstance(info.get("task"), str) and info["task"]:
        task = info["task"]
    if hasattr(policy, "reset"):
        policy.reset(seed)
    cameras = camera_images(observation)
    views: dict[str, list] = {key: [] for key in cameras or {}}
    frames, actions, rewards, terminated, truncated, success, states, env_states = [], [], [], [], [], [], [], []
    for step in itertools.count():
        if views:
            step_images = camera_images(observation) or {}
            if list(step_images) != list(views):
                raise ValueError(f"step {step}: the observation's cameras {list(step_images)} differ from the "
                                 f"reset's {list(views)}")
            for key, image in step_images.items():
                views[key].append(image)
        else:
            frames.append(_pixels(observation, env))
        state = None if embodiment is None else embodiment.recorded_state(info)
        if state is not None:
            states.append(state[0])
            env_states.append(state[1])
        action = policy(observation, info)
        observation, reward, term, trunc, info = env.step(action)
        if max_steps is not None and step + 1 >= max_steps:
            trunc = True
        actions.append(flatten_action(space, action))
        rewards.append(float(reward))
        terminated.append(bool(term))
        truncated.append(bool(trunc))
        success.append(bool(info.get("is_success", info.get("success", False))))
        if term or trunc:
            break
    images = {key: np.stack(view).astype(np.uint8) for key, view in views.items()} or None
    return Episode(
        frames=None if images else np.stack(frames).astype(np.uint8),
        images=images,
        action=np.stack(actions),
        reward=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
        success=np.asarray(success),
        state=np.stack(states) if states else None,
        environment_state=np.stack(env_states) if env_states else None,
        task=task,
    )


def policy_label(policy: str, kwargs: dict) -> str:
    """The name an episode records for its policy: ``policy`` itself, or ``policy[key=value,...]`` with the
    episode's keyword arguments (``zoo:<member>`` records the member's name alone)."""
    if policy.startswith("zoo:"):  # a zoo member is its name (its only keyword, image_size, is not behaviour)
        return policy[len("zoo:"):]
    if not kwargs:
        return policy
    return f"{policy}[{','.join(f'{key}={value}' for key, value in sorted(kwargs.items()))}]"


def _policy_kwargs_for(policy_kwargs: dict, episode: int) -> dict:
    return {key: value[episode % len(value)] if isinstance(value, (list, tuple)) else value
            for key, value in policy_kwargs.items()}


def collect(
    env_id: str,
    policy: str,
    num_episodes: int,
    out: str | Path,
    seed: int = 0,
    max_steps: int | None = None,
    policy_kwargs: dict | None = None,
    env_kwargs: dict | None = None,
    progress: bool = True,
    start: str | None = None,
) -> Path:
    """Records ``num_episodes`` episodes of ``env_id`` under ``policy`` into a LeRobot v3.0 dataset at ``out``.

    Args:
        env_id: a registered Gymnasium id (its package is imported for you).
        policy: a policy name for :func:`~worldsim.data.policies.make_policy`.
        num_episodes: how many episodes.
        out: dataset folder to create (must not exist).
        seed: episode ``i`` resets the env and the policy with ``seed + i``.
        max_steps: cut episodes after this many steps (the env's own time limit applies too).
        policy_kwargs: keyword arguments for the policy; a list value is cycled over episodes (episode ``i``
            uses ``value[i % len(value)]``), so one call can mix noise levels.
        env_kwargs: keyword arguments for ``gym.make``.
        start: a named start-state distribution of the env's embodiment plug-in
            (:meth:`~worldsim.embodiments.EmbodimentPlugin.start_distributions`; default: the env's own reset),
            drawn with ``seed + i``.

    Returns:
        The dataset folder.

    Raises:
        FileExistsError: ``out`` exists. ValueError: ``num_episodes < 1``, a bad policy name, or an unknown start
            (or one made for another env).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    from worldsim.embodiments import embodiment_for_env

    plugin = embodiment_for_env(env_id)
    starts = {} if plugin is None else plugin.start_distributions()
    if start is not None and start not in starts:
        raise ValueError(f"unknown start {start!r} for {env_id}; known: {sorted(starts) or 'none'}")
    policy_kwargs = dict(policy_kwargs or {})
    env = make_recording_env(env_id, **(env_kwargs or {}))
    writer = LeRobotDatasetWriter(
        out,
        fps=int(env.metadata.get("render_fps", 10)),
        robot_type=plugin.name if plugin is not None else env_id.split("/")[-1].lower(),
        env_id=env_id,
        action_space=space_to_json(env.action_space),
    )
    try:
        bar = tqdm(range(num_episodes), desc=f"collect {env_id}", unit="ep", disable=not progress)
        for index in bar:
            agent = make_policy(policy, env.action_space, embodiment=plugin,
                                **_policy_kwargs_for(policy_kwargs, index))
            options = starts[start](np.random.default_rng(seed + index), env) if start else None
            episode = record_episode(env, agent, seed + index, max_steps, "" if plugin is None else plugin.task,
                                     options, embodiment=plugin)
            episode.policy = policy_label(policy, _policy_kwargs_for(policy_kwargs, index))
            writer.add_episode(episode)
            bar.set_postfix(frames=writer.total_frames, last_len=len(episode.frames))
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        env.close()
