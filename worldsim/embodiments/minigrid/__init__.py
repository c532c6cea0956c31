"""The MiniGrid embodiment plug-in: ``MiniGrid-Empty-8x8-v0`` rendered as 64 x 64 frames (8 x 8 cells of 8 px).

The agent (a red triangle) turns left (0), turns right (1) or steps forward (2); pickup, drop, toggle and done (3-6)
change nothing in the empty room. Reaching the green goal at cell (6, 6) ends the episode with reward
``1 - 0.9 * steps / 256``; an episode's value here is success (1 if the goal is reached within the horizon, else 0).

What the plug-in adds to the generic core (:class:`~worldsim.embodiments.base.EmbodimentPlugin`):

- starts: MiniGrid-Empty always starts at (1, 1) facing east, so :meth:`MiniGridEmbodiment.reset_start` draws a
  random free cell and direction per seed (:class:`~worldsim.embodiments.minigrid.env.MiniGridStateWrapper`), which
  also snapshots and restores the agent's state and puts the rendered frame into ``info["pixels"]``;
- recording: :meth:`MiniGridEmbodiment.make_recording_env` delays the goal's termination by one step
  (:class:`~worldsim.embodiments.minigrid.env.GoalFrameWrapper`) so datasets hold frames with the agent on the goal,
  and :meth:`MiniGridEmbodiment.label_frames` labels exactly those frames as success;
- frame-only perception (:mod:`~worldsim.embodiments.minigrid.perception`), a zoo of graded policies, a steering
  chunk policy and a data-collection mix (:mod:`~worldsim.embodiments.minigrid.policies`).

>>> from worldsim.embodiments import make_embodiment                        # doctest: +SKIP
>>> plugin = make_embodiment("minigrid")                                     # doctest: +SKIP
>>> env = plugin.make_env()                                                  # doctest: +SKIP
>>> observation, info = plugin.reset_start(env, seed=7)                      # doctest: +SKIP
>>> planner = plugin.follow_policy(); planner.reset(1)                       # doctest: +SKIP
>>> env.step(planner.act(info["pixels"][None])[0])                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from worldsim.constants import REWARD, SUCCESS
from worldsim.embodiments.base import EmbodimentPlugin, find_wrapper
from worldsim.embodiments.minigrid.env import GoalFrameWrapper, MiniGridStateWrapper
from worldsim.embodiments.minigrid.perception import (agent_direction, locate_agent, locate_controlled, locate_goal,
                                                      on_goal)
from worldsim.embodiments.minigrid.policies import (DONE, Bouncer, NoisyPlannerChunks, RandomActions,
                                                    ShortestPathPlanner, Spinner, StandStill, WallFollower,
                                                    ZooCollectionPolicy, collection_policies, minigrid_zoo)


def _state_wrapper(env: gym.Env) -> MiniGridStateWrapper:
    """The :class:`MiniGridStateWrapper` in ``env``'s wrapper chain.

    Raises:
        ValueError: there is none (the env was not made by :meth:`MiniGridEmbodiment.make_env`).
    """
    return find_wrapper(env, MiniGridStateWrapper, "make it with MiniGridEmbodiment().make_env()")


class MiniGridEmbodiment(EmbodimentPlugin):
    """MiniGrid-Empty-8x8 as a worldsim embodiment (see the module docstring).

    An episode's value is success: :meth:`step_value` is 1 on the step that reaches the goal and 0 otherwise,
    aggregated by ``max``.
    """

    name = "minigrid"
    env_ids = ("MiniGrid-Empty-8x8-v0",)
    env_package = "minigrid"
    install_hint = "pip install 'worldsim[minigrid]'"
    # 8 x 8 cells of 8 px: a 64 x 64 full-grid render, without the agent's view highlight (a large region that
    # changes with every turn and would drown the small agent triangle in the autoencoder's loss)
    env_kwargs = {"tile_size": 8, "highlight": False}
    task = "Reach the green goal square (turn left, turn right, forward; the other actions do nothing here)."
    value_aggregation = "max"
    value_description = "success: reaching the green goal within the horizon (1 or 0)"
    success_threshold = 0.5
    headline_metric = "agent_cell_error"
    metric_labels = {
        "agent_cell_error": ("agent-cell error (cells, L1)", "{:.2f}"),
        "agent_direction_error": ("agent-direction error (fraction of frames)", "{:.2f}"),
    }
    data_policy = "minigrid-zoo"
    # the wandering planner from MiniGrid's own start, with twice the collection mix's idle actions and a seed far
    # from the collector's: long episodes in a setting the training data did not use as such
    demo_policy = ("minigrid-zoo", {"member": "planner-eps0.75", "idle_prob": 0.1, "seed": 1_000_003})
    steering_noise = 0.5  # probability that a chunk's action is replaced by a random move

    # ------------------------------------------------------------------ the real env
    def make_env(self, env_id: str | None = None, **kwargs) -> gym.Env:
        """The real env with ``render_mode="rgb_array"``, wrapped in :class:`MiniGridStateWrapper` (placed starts,
        state snapshots, ``info["pixels"]``).

        Raises:
            ImportError: ``minigrid`` is not installed.
            gymnasium.error.Error: Gymnasium cannot make ``env_id``.
        """
        return MiniGridStateWrapper(super().make_env(env_id, **kwargs))

    def make_recording_env(self, env_id: str | None = None, **kwargs) -> gym.Env:
        """:meth:`make_env` wrapped in :class:`GoalFrameWrapper`, for recording datasets: the episode ends one step
        after the goal is reached, so the frame with the agent on the goal is recorded.

        Raises:
            ImportError: ``minigrid`` is not installed.
        """
        return GoalFrameWrapper(self.make_env(env_id, **kwargs))

    def reset_start(self, env: gym.Env, seed: int) -> tuple[Any, dict]:
        """Start number ``seed``: a random free cell and direction drawn from the seed (every seed a different draw).

        Raises:
            ValueError: ``env`` was not made by :meth:`make_env`.
        """
        _state_wrapper(env)
        return env.reset(seed=int(seed), options={"random_start": True})

    def context_action(self, env: gym.Env, observation: Any, info: dict) -> np.int64:
        """``done`` (6): nothing moves while the shared context frames play."""
        return np.int64(DONE)

    def get_state(self, env: gym.Env) -> dict[str, Any]:
        """``{"agent_pos", "agent_dir", "step_count"}`` (:meth:`MiniGridStateWrapper.get_state`).

        Raises:
            ValueError: ``env`` was not made by :meth:`make_env`.
        """
        return _state_wrapper(env).get_state()

    def set_state(self, env: gym.Env, state: dict[str, Any]) -> np.ndarray:
        """Restores a :meth:`get_state` snapshot and returns the frame there, `(H, W, 3)` uint8.

        Raises:
            ValueError: ``env`` was not made by :meth:`make_env`, or an invalid state.
        """
        return _state_wrapper(env).set_state(state)

    # ------------------------------------------------------------------ values and labels
    def step_value(self, reward: float, terminated: bool, info: dict) -> float:
        """1.0 on the step that reaches the goal (MiniGrid's only positive reward), else 0.0."""
        return 1.0 if float(reward) > 0.0 else 0.0

    def label_frames(self, dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Outcome-head labels: 1 for frames produced by a goal-reaching transition, else 0.

        Frame ``i > 0`` of an episode shows the agent on the goal exactly when transition ``i - 1`` reached it
        (``next.success`` or a positive ``next.reward``); datasets recorded with :meth:`make_recording_env` hold
        such frames. Reward, termination and success are all that 0/1 value: a frame cannot show MiniGrid's
        time-dependent reward, and the episode's value is success.

        Args:
            dataset: a LeRobot dataset (``columns``, ``frame_index``, ``episode_index``, ``root``), rows ordered by
                episode and frame.

        Returns:
            rows `(M,)` int64 (every frame with ``frame_index > 0``) and ``{"reward", "termination", "success"}``
            each `(M,)` float32 in {0, 1}.

        Raises:
            ValueError: the dataset has neither ``next.reward`` nor ``next.success``, or its rows are not ordered by
                episode and frame.
        """
        columns = dataset.columns
        if REWARD not in columns and SUCCESS not in columns:
            raise ValueError(f"{dataset.root}: no {REWARD!r} or {SUCCESS!r} column; MiniGrid labels need one")
        frame_index, episode_index = np.asarray(dataset.frame_index), np.asarray(dataset.episode_index)
        rows = np.flatnonzero(frame_index > 0)
        previous = rows - 1
        if not (np.all(episode_index[previous] == episode_index[rows])
                and np.all(frame_index[previous] == frame_index[rows] - 1)):
            raise ValueError(f"{dataset.root}: rows are not ordered by episode and frame")

        def column(name: str) -> np.ndarray:
            if name not in columns:
                return np.zeros(len(rows), np.float32)
            return np.asarray(columns[name], dtype=np.float32).reshape(-1)[previous]

        reached = ((column(SUCCESS) > 0.5) | (column(REWARD) > 0.0)).astype(np.float32)
        return rows.astype(np.int64), {"reward": reached, "termination": reached.copy(), "success": reached.copy()}

    # ------------------------------------------------------------------ frame metrics
    def frame_metrics(self, imagined: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
        """Where imagined frames put the agent, against the real frames.

        Args:
            imagined, real: `(N, T, H, W, 3)` uint8 frames of 8 x 8 cells.

        Returns:
            ``{"agent_cell_error": (N, T) float64`` L1 distance in cells between the agent's cells (NaN where either
            frame shows no agent), ``"agent_direction_error": (N, T) float64`` 1 where the imagined direction differs
            (an imagined frame without an agent counts as differing), 0 where it agrees, NaN where the real frame
            shows no agent``}``; the mean of the second is the fraction of frames with the wrong direction.

        Raises:
            ValueError: the two arrays differ in shape or are not `(N, T, H, W, 3)` with ``H == W`` a multiple of 8.
        """
        imagined, real = np.asarray(imagined), np.asarray(real)
        if imagined.shape != real.shape or imagined.ndim != 5:
            raise ValueError(f"imagined and real must both be (N, T, H, W, 3); got {imagined.shape} and {real.shape}")
        cell_error = np.abs(locate_agent(imagined) - locate_agent(real)).sum(axis=-1)
        imagined_direction, real_direction = agent_direction(imagined), agent_direction(real)
        direction_error = np.where(real_direction < 0, np.nan, (imagined_direction != real_direction).astype(float))
        return {"agent_cell_error": cell_error, "agent_direction_error": direction_error}

    def locate_controlled(self, frames: np.ndarray) -> np.ndarray:
        """The agent triangle's centre: `(..., H, W, 3)` uint8 -> `(..., 2)` (x, y) in [0, 1] frame units, NaN where
        absent (:func:`~worldsim.embodiments.minigrid.perception.locate_controlled`).

        Raises:
            ValueError: frames of the wrong shape.
        """
        return locate_controlled(frames)

    # ------------------------------------------------------------------ policies
    def policy_zoo(self, seed: int = 0) -> dict[str, Any]:
        """The zoo of :func:`~worldsim.embodiments.minigrid.policies.minigrid_zoo`, best first."""
        return minigrid_zoo(seed)

    def collection_policies(self) -> dict[str, Callable]:
        """``{"minigrid-zoo", "minigrid-planner"}``
        (:func:`~worldsim.embodiments.minigrid.policies.collection_policies`); they read ``info["pixels"]``, so record
        with :meth:`make_recording_env`."""
        return collection_policies()

    def start_distributions(self) -> dict[str, Callable]:
        """``{"minigrid-random-start": (rng, env) -> {"random_start": True}}``: a random free cell and direction,
        drawn with the env's RNG from the episode's reset seed."""
        return {"minigrid-random-start": lambda rng, env: {"random_start": True}}

    def steering_policy(self, noise: float | None, chunk_length: int, seed: int) -> NoisyPlannerChunks:
        """The planner's next ``chunk_length`` actions, each replaced by a random move with probability ``noise``
        (None: :attr:`steering_noise`; :class:`~worldsim.embodiments.minigrid.policies.NoisyPlannerChunks`).

        Raises:
            ValueError: ``noise`` outside [0, 1] or ``chunk_length < 1``.
        """
        return NoisyPlannerChunks(noise=self.steering_noise if noise is None else noise, chunk_length=chunk_length,
                                  seed=seed)

    def follow_policy(self) -> ShortestPathPlanner:
        """The steering policy's mode: the noise-free :class:`ShortestPathPlanner`."""
        return ShortestPathPlanner()


PLUGIN = MiniGridEmbodiment
"""The plug-in class the registry finds by this package's name."""

__all__ = ["PLUGIN", "Bouncer", "GoalFrameWrapper", "MiniGridEmbodiment", "MiniGridStateWrapper", "NoisyPlannerChunks",
           "RandomActions", "ShortestPathPlanner", "Spinner", "StandStill", "WallFollower", "ZooCollectionPolicy",
           "agent_direction", "collection_policies", "locate_agent", "locate_controlled", "locate_goal",
           "minigrid_zoo", "on_goal"]
