"""A zoo of PushT policies of graded skill that act from pixels, so they run the same in the real env and in imagination.

Every policy sees only frames `(N, H, W, 3)` uint8 (any resolution) and finds the agent disc and the T block by
colour (:mod:`worldsim.embodiments.pusht.perception`), so a policy evaluated in the real ``gym_pusht/PushT-v0`` and in a world
model meets exactly the same interface and the same perception. Actions are agent targets in workspace pixels
(0-512), as in PushT.

The skilled policy is a *centroid pusher*: it walks around the block to the side away from the goal, then pushes
the block's centroid toward the goal's. It ignores the block's orientation, so it raises coverage but rarely
reaches PushT's 95% success threshold. The zoo varies its skill in graded ways: how close behind the block it lines
up and how far it may move per step (closer and faster push more within an episode, slower pushes less), action
noise, reaction delay, wandering and a wrong goal; and it adds policies that ignore the block (a wanderer, random
targets, standing still). Over 64 steps from the real env's seeds 0-49 their real values (mean max coverage / 0.95)
run from about 0.09 (standing still) to about 0.39 (the close, fast pusher): see docs/results.md.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from worldsim.embodiments.pusht.perception import PUSHT_WORKSPACE, locate_agent, locate_block
from worldsim.utils.batch_random import BatchRandom

GOAL = np.array([256.0, 256.0])


class CentroidPusher:
    """Pixel-based PushT pusher with tunable flaws.

    Args:
        noise_std: Gaussian noise on every target (workspace px).
        reaction_delay: acts on the frame from this many steps ago.
        wander_prob: per-step probability of wandering to a random target for ``wander_steps`` steps.
        goal: the point the block centroid is pushed to (PushT's goal centre is (256, 256)).
        standoff: how far behind the block the agent lines up (px).
        max_step: largest target move per step (px), so the agent does not fly through the block.
        seed: RNG seed of the noise and wandering (``reset`` restarts it).

    ``reset(num_envs, seeds=None)`` then ``act(frames (N, H, W, 3) uint8) -> (N, 2) float32``. With ``seeds`` (each
    env's episode seed, as ``worldsim rank`` passes them) every env draws its own stream, the same alone or in a
    batch; without, the batch shares one generator (:class:`~worldsim.utils.batch_random.BatchRandom`).
    """

    def __init__(self, noise_std: float = 0.0, reaction_delay: int = 0, wander_prob: float = 0.0,
                 goal=(256.0, 256.0), standoff: float = 100.0, max_step: float = 40.0, wander_steps: int = 5,
                 seed: int = 0):
        if noise_std < 0 or reaction_delay < 0 or not 0 <= wander_prob <= 1:
            raise ValueError(f"need noise_std >= 0, reaction_delay >= 0, wander_prob in [0, 1]; got {noise_std}, "
                             f"{reaction_delay}, {wander_prob}")
        self.noise_std, self.reaction_delay, self.wander_prob = noise_std, int(reaction_delay), wander_prob
        self.goal, self.standoff, self.max_step = np.asarray(goal, np.float64), standoff, max_step
        self.wander_steps, self.seed = wander_steps, seed
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Starts ``num_envs`` episodes, one random stream per env with ``seeds``.

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)
        self.history: deque = deque(maxlen=self.reaction_delay + 1)
        self.wander_left = np.zeros(num_envs, dtype=np.int64)
        self.wander_target = np.zeros((num_envs, 2))

    def _targets(self, frames: np.ndarray) -> np.ndarray:
        agent = locate_agent(frames)
        block, _ = locate_block(frames)
        target = np.where(np.isnan(agent), PUSHT_WORKSPACE / 2, agent)
        for index in range(len(frames)):
            a, b = target[index], block[index]
            if np.isnan(b).any():
                continue
            to_goal = self.goal - b
            distance = np.linalg.norm(to_goal)
            if distance < 8.0:
                continue
            direction = to_goal / distance
            side = np.array([-direction[1], direction[0]])
            behind = np.clip(b - direction * self.standoff, 15.0, PUSHT_WORKSPACE - 15.0)
            along = np.dot(a - b, direction)  # > 0: the agent is on the goal side of the block
            lateral = np.dot(a - b, side)
            depth = min(np.dot(behind - b, direction), -20.0)  # shallower when a wall is behind the block
            if along > 0.6 * depth:
                # not behind the block yet: go to the back corner on the agent's side, clear of the block
                goal_point = b + (1.0 if lateral >= 0 else -1.0) * side * 1.4 * self.standoff + direction * depth
            elif abs(lateral) > 25.0:
                goal_point = behind  # behind it: slide over onto the line through the centroid
            else:
                goal_point = b + direction * 40.0  # lined up: push through the centroid toward the goal
            step = goal_point - a
            norm = np.linalg.norm(step)
            target[index] = a + (step if norm <= self.max_step else step * self.max_step / norm)
        return target

    def act(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        self.history.append(frames)
        target = self._targets(self.history[0])
        wandering = self.wander_left > 0
        start = ~wandering & (self.rng.random(self.rng.rows(len(frames))) < self.wander_prob)
        self.wander_target[start] = self.rng.uniform(0, PUSHT_WORKSPACE, np.flatnonzero(start), (2,))
        self.wander_left[start] = self.wander_steps
        active = self.wander_left > 0
        target[active] = self.wander_target[active]
        self.wander_left[active] -= 1
        if self.noise_std:
            target = target + self.rng.normal(0.0, self.noise_std, self.rng.rows(len(frames)), (2,))
        return np.clip(target, 0.0, PUSHT_WORKSPACE).astype(np.float32)


class Wanderer:
    """Ignores the block: a smooth random walk of the agent target (steps of ``step`` px)."""

    def __init__(self, step: float = 25.0, seed: int = 0):
        self.step, self.seed = step, seed
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Starts ``num_envs`` episodes, one random stream per env with ``seeds`` (as :class:`CentroidPusher`).

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)
        self.heading = self.rng.uniform(0, 2 * np.pi, np.arange(num_envs))

    def act(self, frames: np.ndarray) -> np.ndarray:
        agent = locate_agent(frames)
        agent = np.where(np.isnan(agent), PUSHT_WORKSPACE / 2, agent)
        self.heading = self.heading + self.rng.normal(0.0, 0.5, self.rng.rows(len(frames)))
        target = agent + self.step * np.stack([np.cos(self.heading), np.sin(self.heading)], axis=-1)
        return np.clip(target, 0.0, PUSHT_WORKSPACE).astype(np.float32)


class RandomTargets:
    """Uniformly random agent targets over the workspace."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Starts ``num_envs`` episodes, one random stream per env with ``seeds`` (as :class:`CentroidPusher`).

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return self.rng.uniform(0.0, PUSHT_WORKSPACE, self.rng.rows(len(frames)), (2,)).astype(np.float32)


class StandStill:
    """Holds the agent where it was first seen."""

    def reset(self, num_envs: int) -> None:
        self.hold = None

    def act(self, frames: np.ndarray) -> np.ndarray:
        if self.hold is None:
            agent = locate_agent(frames)
            self.hold = np.where(np.isnan(agent), PUSHT_WORKSPACE / 2, agent).astype(np.float32)
        return self.hold.copy()


def pusht_zoo(seed: int = 0) -> dict:
    """The PushT zoo: ``{name: policy}``, 13 policies from a close, fast centroid pusher down to standing still.

    The first 9 were the zoo until 2026-11-23; the 4 pushers of other standoff and speed were added then to spread
    the zoo's skill (the first 9 spanned 0.09-0.23 in real value, six of them within 0.05 of each other).
    """
    return {
        "pusher-close-fast": CentroidPusher(standoff=60.0, max_step=60.0, seed=seed),
        "pusher-close": CentroidPusher(standoff=60.0, seed=seed),
        "pusher-fast": CentroidPusher(max_step=80.0, seed=seed),
        "pusher": CentroidPusher(seed=seed),
        "pusher-slow": CentroidPusher(max_step=20.0, seed=seed),
        "pusher-noise20": CentroidPusher(noise_std=20.0, seed=seed),
        "pusher-noise60": CentroidPusher(noise_std=60.0, seed=seed),
        "pusher-delay4": CentroidPusher(reaction_delay=4, noise_std=10.0, seed=seed),
        "pusher-wander0.3": CentroidPusher(wander_prob=0.3, seed=seed),
        "pusher-wrong-goal": CentroidPusher(goal=(120.0, 420.0), seed=seed),
        "wanderer": Wanderer(seed=seed),
        "random": RandomTargets(seed=seed),
        "still": StandStill(),
    }


class NoisyPusherChunks:
    """A stochastic PushT chunk policy: the centroid pusher's next target, reached along a noisy straight path.

    Each call returns a different `(chunk_length, 2)` float32 chunk of agent targets (workspace px, 0-512), like
    samples of a diffusion policy: a straight line from the agent to the centroid pusher's target plus Gaussian
    noise of ``noise_std`` px on the end point. Some samples push the block, others miss it.

    Args:
        noise_std: spread of the chunk's end point (px).
        chunk_length: actions per chunk.
        seed: RNG seed (``reset`` restarts it).

    Raises:
        ValueError: ``noise_std < 0`` or ``chunk_length < 1``.
    """

    def __init__(self, noise_std: float = 120.0, chunk_length: int = 8, seed: int = 0):
        if noise_std < 0 or chunk_length < 1:
            raise ValueError(f"need noise_std >= 0 and chunk_length >= 1, got {noise_std} and {chunk_length}")
        self.noise_std, self.chunk_length, self.seed = noise_std, int(chunk_length), seed
        self.pusher = CentroidPusher(max_step=40.0 * chunk_length)
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.pusher.reset(1)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        frame = np.asarray(observation)[None]
        agent = locate_agent(frame)[0]
        agent = np.where(np.isnan(agent), PUSHT_WORKSPACE / 2, agent)
        end = self.pusher._targets(frame)[0] + self.rng.normal(0.0, self.noise_std, 2)
        fractions = np.linspace(1.0 / self.chunk_length, 1.0, self.chunk_length)[:, None]
        return np.clip(agent + (end - agent) * fractions, 0.0, PUSHT_WORKSPACE).astype(np.float32)
