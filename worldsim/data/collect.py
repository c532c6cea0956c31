"""Recording episodes from any Gymnasium env with pixel observations (or ``render()``).

>>> from worldsim.data.collect import collect  # doctest: +SKIP
>>> collect("gym_pusht/PushT-v0", "pusht-scripted", num_episodes=200, out="data/pusht")  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldsim.data.lerobot import Episode, LeRobotDatasetWriter
from worldsim.data.policies import make_policy
from worldsim.data.spaces import flatten_action, space_to_json

# Per-env defaults: constructor kwargs, embodiment name and task text.
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "gym_pusht/PushT-v0": {
        "kwargs": {"obs_type": "pixels", "observation_width": 96, "observation_height": 96},
        "robot_type": "pusht",
        "task": "Push the T-shaped block onto the green target.",
    },
    "ALE/Breakout-v5": {
        # sticky actions off: the recorded action is the one that moved the paddle
        "kwargs": {"repeat_action_probability": 0.0},
        "robot_type": "breakout",
        "task": "Break the bricks with the ball; move the paddle (NOOP, FIRE, RIGHT, LEFT).",
    },
    "MiniGrid-Empty-8x8-v0": {
        # 8 x 8 cells of 8 px: a 64 x 64 full-grid render, without the agent's view highlight (a large region that
        # changes with every turn and would drown the small agent triangle in the autoencoder's loss)
        "kwargs": {"tile_size": 8, "highlight": False},
        "robot_type": "minigrid",
        "task": "Reach the green goal square (turn left, turn right, forward; the other actions do nothing here).",
    },
}


def import_env_package(env_id: str) -> None:
    """Imports the package that registers ``env_id`` (``gym_pusht/PushT-v0`` -> ``gym_pusht``, ``ALE/...`` ->
    ``ale_py``, ``MiniGrid-...`` -> ``minigrid``), if any.

    Raises:
        ImportError: the package is not installed (the message names the extra that installs it).
    """
    namespace = env_id.split("/")[0] if "/" in env_id else None
    package, extra = namespace, {"gym_pusht": "pusht"}.get(namespace or "")
    if namespace == "ALE":
        package, extra = "ale_py", "atari"
    elif env_id.startswith("MiniGrid-"):
        package, extra = "minigrid", "minigrid"
    if not package:
        return
    try:
        module = __import__(package)
    except ImportError as error:
        hint = f" (pip install 'worldsim[{extra}]')" if extra else ""
        raise ImportError(f"env {env_id!r} needs the package {package!r}{hint}") from error
    if package == "ale_py":
        gym.register_envs(module)


def make_recording_env(env_id: str, **kwargs) -> gym.Env:
    """Makes ``env_id`` with the preset keyword arguments for pixel observations (overridden by ``kwargs``)."""
    import_env_package(env_id)
    preset = dict(ENV_PRESETS.get(env_id, {}).get("kwargs", {}))
    preset.update(kwargs)
    preset.setdefault("render_mode", "rgb_array")
    return gym.make(env_id, **preset)


def _pixels(observation: Any, env: gym.Env) -> np.ndarray:
    if isinstance(observation, np.ndarray) and observation.ndim == 3 and observation.shape[-1] == 3:
        return observation
    if isinstance(observation, dict) and "pixels" in observation:
        return np.asarray(observation["pixels"])
    frame = env.render()
    if frame is None:
        raise ValueError("the env has no pixel observation and render() returned None; make it with render_mode='rgb_array'")
    return np.asarray(frame)


def _pusht_state(info: dict) -> tuple[np.ndarray, np.ndarray] | None:
    if "pos_agent" not in info or "block_pose" not in info:
        return None
    agent = np.asarray(info["pos_agent"], dtype=np.float32)
    return agent, np.concatenate([agent, np.asarray(info["block_pose"], dtype=np.float32)])


def pusht_state_options(env: gym.Env, agent, block) -> dict:
    """``env.reset`` options that put a gym-pusht env's agent at ``agent`` and its T block at ``block``.

    gym-pusht's ``reset_to_state`` sets the block's position before its angle and pymunk rotates about the centre of
    gravity, so the requested position is corrected once by probing ``env`` (the shift depends only on the angle).
    The probe resets ``env``; velocities start at zero.

    Args:
        env: a ``gym_pusht/PushT-v0`` env (reset by the probe).
        agent: `(2,)` agent x, y (workspace px, 0-512).
        block: `(3,)` block x, y (px) and angle (rad).

    Returns:
        ``{"reset_to_state": [agent x, agent y, block x, block y, block angle]}`` with the corrected position.
    """
    agent, block = np.asarray(agent, dtype=np.float64), np.asarray(block, dtype=np.float64)
    _, info = env.reset(options={"reset_to_state": np.concatenate([agent, block]).tolist()})
    corrected = block.copy()
    corrected[:2] += block[:2] - np.asarray(info["block_pose"][:2])
    return {"reset_to_state": np.concatenate([agent, corrected]).tolist()}


def _pusht_near_goal(rng: np.random.Generator, env: gym.Env) -> dict:
    """PushT start with the T block on the goal pose, perturbed (std 1.5 px, 0.02 rad), the agent well away from it.

    Many of these starts cover the goal by more than 95%: the only way to record frames of success, since a LeRobot
    row never holds the frame in which an episode terminates (placed with :func:`pusht_state_options`).
    """
    goal = np.array([256.0, 256.0, np.pi / 4])
    block = goal + rng.normal(0.0, [1.5, 1.5, 0.02])
    while True:
        agent = rng.uniform(50.0, 462.0, 2)
        if np.linalg.norm(agent - block[:2]) > 150.0:
            break
    return pusht_state_options(env, agent, block)


START_STATES = {"pusht-near-goal": ("gym_pusht/PushT-v0", _pusht_near_goal)}
"""Named start-state distributions for :func:`collect` (``--start``): name -> (env id, (rng, env) -> reset
options)."""


def record_episode(env: gym.Env, policy, seed: int, max_steps: int | None = None, task: str = "",
                   reset_options: dict | None = None) -> Episode:
    """Runs one episode and returns it with frames, actions, rewards and (PushT) env states.

    ``reset_options`` go to ``env.reset`` (e.g. PushT's ``{"reset_to_state": [...]}``).

    Frames are the observations *before* each action (the observation after the last action is dropped, as in
    LeRobot datasets), so ``frames[t + 1]`` is the result of ``action[t]``. Actions are stored in the flat layout of
    :mod:`worldsim.data.spaces` (discrete parts as indices).
    """
    space = space_to_json(env.action_space)
    observation, info = env.reset(seed=seed, options=reset_options)
    if hasattr(policy, "reset"):
        policy.reset(seed)
    frames, actions, rewards, terminated, truncated, success, states, env_states = [], [], [], [], [], [], [], []
    for step in itertools.count():
        frames.append(_pixels(observation, env))
        state = _pusht_state(info)
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
    return Episode(
        frames=np.stack(frames).astype(np.uint8),
        action=np.stack(actions),
        reward=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
        success=np.asarray(success),
        state=np.stack(states) if states else None,
        environment_state=np.stack(env_states) if env_states else None,
        task=task,
    )


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
        env_id: a registered Gymnasium id (``gym_pusht/PushT-v0``; its package is imported for you).
        policy: a policy name for :func:`~worldsim.data.policies.make_policy`.
        num_episodes: how many episodes.
        out: dataset folder to create (must not exist).
        seed: episode ``i`` resets the env and the policy with ``seed + i``.
        max_steps: cut episodes after this many steps (the env's own time limit applies too).
        policy_kwargs: keyword arguments for the policy; a list value is cycled over episodes (episode ``i``
            uses ``value[i % len(value)]``), so one call can mix noise levels.
        env_kwargs: keyword arguments for ``gym.make``.
        start: a named start-state distribution from :data:`START_STATES` (default: the env's own reset), drawn
            with ``seed + i``.

    Returns:
        The dataset folder.

    Raises:
        FileExistsError: ``out`` exists. ValueError: ``num_episodes < 1``, a bad policy name, or an unknown start
            (or one made for another env).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if start is not None:
        if start not in START_STATES:
            raise ValueError(f"unknown start {start!r}; known: {sorted(START_STATES)}")
        if START_STATES[start][0] != env_id:
            raise ValueError(f"start {start!r} is for {START_STATES[start][0]}, not {env_id}")
    policy_kwargs = dict(policy_kwargs or {})
    env = make_recording_env(env_id, **(env_kwargs or {}))
    preset = ENV_PRESETS.get(env_id, {})
    writer = LeRobotDatasetWriter(
        out,
        fps=int(env.metadata.get("render_fps", 10)),
        robot_type=preset.get("robot_type", env_id.split("/")[-1].lower()),
        env_id=env_id,
        action_space=space_to_json(env.action_space),
    )
    try:
        bar = tqdm(range(num_episodes), desc=f"collect {env_id}", unit="ep", disable=not progress)
        for index in bar:
            agent = make_policy(policy, env.action_space, **_policy_kwargs_for(policy_kwargs, index))
            options = START_STATES[start][1](np.random.default_rng(seed + index), env) if start else None
            episode = record_episode(env, agent, seed + index, max_steps, preset.get("task", ""), options)
            writer.add_episode(episode)
            bar.set_postfix(frames=writer.total_frames, last_len=len(episode.frames))
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        env.close()
