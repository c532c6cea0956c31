"""The scripted PushT pusher used to record training data: it reads the env state from ``info``, not the frame."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldsim.embodiments.pusht.perception import PUSHT_WORKSPACE

# gym-pusht's goal pose is fixed at (256, 256, pi / 4).
PUSHT_GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])


def _wrap_angle(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


@dataclass
class PushTScriptedPolicy:
    """A scripted PushT pusher: walks behind the T block and pushes it towards the goal pose.

    It reads the env state from ``info`` (``pos_agent``, ``block_pose``, ``goal_pose`` as returned by
    gym-pusht), so it works with any observation type. Strategy: while the block is far from the goal, push
    through its centre towards the goal; once close, rotate it by pushing an end of its top bar. The agent
    detours around the block on its way to the contact point. Noise makes the data cover both purposeful
    pushing and wandering.

    Args:
        noise_std: standard deviation of Gaussian noise added to each target, in workspace pixels (0-512).
        wander_prob: per-step probability of starting a wander segment towards a random point.
        wander_steps: length of a wander segment, in env steps.
        max_step: largest distance between the agent and its target, in workspace pixels; keeps motion
            smooth (the PD controller of PushT otherwise jumps across the workspace).
        reaction_delay: the action executed at step t is the one computed at step t - reaction_delay.

    Returns (from ``__call__``):
        `np.ndarray` of shape `(2,)`, float32: the agent's target position in [0, 512].
    """

    noise_std: float = 0.0
    wander_prob: float = 0.0
    wander_steps: int = 10
    max_step: float = 40.0
    reaction_delay: int = 0

    def __post_init__(self):
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0 <= self.wander_prob <= 1:
            raise ValueError(f"wander_prob must be in [0, 1], got {self.wander_prob}")
        if self.max_step <= 0:
            raise ValueError(f"max_step must be > 0, got {self.max_step}")
        if self.reaction_delay < 0:
            raise ValueError(f"reaction_delay must be >= 0, got {self.reaction_delay}")
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._wander_left = 0
        self._wander_target = np.zeros(2)
        self._queue: deque = deque()

    def _contact_plan(self, block_pose: np.ndarray, goal_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (contact point, push direction) in workspace pixels."""
        position, angle = block_pose[:2], block_pose[2]
        # Centre of mass of the T (top bar 120x30 at y in [0, 30], stem 30x90 at y in [30, 120]).
        com = position + _rotate(np.array([0.0, 37.5]), angle)
        error = goal_pose[:2] - com
        distance = np.linalg.norm(error)
        angle_error = _wrap_angle(goal_pose[2] - angle)
        if distance > 20 or abs(angle_error) < 0.2:
            direction = error / max(distance, 1e-6)
            return com - direction * 25.0, direction
        # Rotate: push one end of the top bar perpendicular to the arm from the centre of mass.
        arm_end = position + _rotate(np.array([55.0, 15.0]), angle)
        arm = arm_end - com
        perpendicular = np.array([-arm[1], arm[0]]) / max(np.linalg.norm(arm), 1e-6)
        direction = perpendicular * np.sign(angle_error)
        return arm_end, direction

    def _plan(self, info: dict) -> np.ndarray:
        agent = np.asarray(info["pos_agent"], dtype=np.float64)
        block_pose = np.asarray(info["block_pose"], dtype=np.float64)
        goal_pose = np.asarray(info.get("goal_pose", PUSHT_GOAL_POSE), dtype=np.float64)
        if self._wander_left == 0 and self._rng.random() < self.wander_prob:
            self._wander_left = self.wander_steps
            self._wander_target = self._rng.uniform(40, PUSHT_WORKSPACE - 40, size=2)
        if self._wander_left > 0:
            self._wander_left -= 1
            target = self._wander_target
        else:
            contact, direction = self._contact_plan(block_pose, goal_pose)
            approach = contact - direction * 45.0
            if np.linalg.norm(agent - approach) < 20.0:
                target = contact + direction * 30.0  # push through the contact point
            else:
                target = approach
                com = block_pose[:2] + _rotate(np.array([0.0, 37.5]), block_pose[2])
                # Detour when the straight path to the approach point passes through the block.
                segment = approach - agent
                t = np.clip(np.dot(com - agent, segment) / max(np.dot(segment, segment), 1e-6), 0.0, 1.0)
                closest = agent + t * segment
                if np.linalg.norm(closest - com) < 70.0:
                    side = np.array([-segment[1], segment[0]]) / max(np.linalg.norm(segment), 1e-6)
                    if np.dot(agent - com, side) < 0:
                        side = -side
                    target = com + side * 95.0
        target = target + self._rng.normal(0.0, self.noise_std, size=2) if self.noise_std > 0 else target
        step = target - agent
        length = np.linalg.norm(step)
        if length > self.max_step:
            target = agent + step / length * self.max_step
        return np.clip(target, 0.0, PUSHT_WORKSPACE).astype(np.float32)

    def __call__(self, observation: Any, info: dict) -> np.ndarray:
        if "pos_agent" not in info or "block_pose" not in info:
            raise KeyError(
                "PushTScriptedPolicy needs info['pos_agent'] and info['block_pose'] (gym_pusht/PushT-v0); "
                f"got info keys {sorted(info)}"
            )
        action = self._plan(info)
        if self.reaction_delay == 0:
            return action
        self._queue.append(action)
        if len(self._queue) <= self.reaction_delay:
            return self._queue[0]
        return self._queue.popleft()
