"""PushT states: what the collector records, and putting the env in a given state."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def recorded_state(info: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The state worldsim's collector stores per frame, from gym-pusht's ``info``.

    Returns:
        ``(observation.state (2,) agent x, y; observation.environment_state (5,) agent x, y, block x, y, angle)``,
        float32 in workspace px and rad, or None when ``info`` lacks ``pos_agent`` / ``block_pose``.
    """
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


def near_goal_start(rng: np.random.Generator, env: gym.Env) -> dict:
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
