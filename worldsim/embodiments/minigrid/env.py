"""Wrappers that make MiniGrid usable by worldsim: chosen and random starts, state snapshots, the goal frame.

- :class:`MiniGridStateWrapper` places the agent on reset (a given cell and direction, or a seeded random one:
  MiniGrid-Empty always starts at (1, 1) facing east, which would make every ranking start the same), snapshots and
  restores the agent's state, and puts the rendered frame into ``info["pixels"]`` (MiniGrid's observation is a dict
  of a partial egocentric view, not the frame worldsim models).
- :class:`GoalFrameWrapper` delays the goal's termination by one step so that recorded data holds the frame with
  the agent on the goal.

>>> import gymnasium as gym, minigrid                                                    # doctest: +SKIP
>>> env = MiniGridStateWrapper(gym.make("MiniGrid-Empty-8x8-v0", tile_size=8, highlight=False,
...                                     render_mode="rgb_array"))                       # doctest: +SKIP
>>> observation, info = env.reset(seed=3, options={"random_start": True})              # doctest: +SKIP
>>> info["pixels"].shape                                                                # doctest: +SKIP
(64, 64, 3)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

_OPTION_KEYS = frozenset({"agent_pos", "agent_dir", "random_start"})


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_direction(direction: Any, what: str) -> int:
    if not _is_int(direction) or not 0 <= int(direction) <= 3:
        raise ValueError(f"{what} must be an int in 0..3 (0 east, 1 south, 2 west, 3 north), got {direction!r}")
    return int(direction)


def _check_position(position: Any, width: int, height: int, what: str) -> tuple[int, int]:
    values = np.asarray(position, dtype=object).reshape(-1) if position is not None else np.array([], dtype=object)
    if len(values) != 2 or not all(_is_int(value) for value in values):
        raise ValueError(f"{what} must be two ints (col, row), got {position!r}")
    col, row = int(values[0]), int(values[1])
    if not (0 <= col < width and 0 <= row < height):
        raise ValueError(f"{what} {position!r} is outside the {width} x {height} grid")
    return col, row


class MiniGridStateWrapper(gym.Wrapper):
    """Places the agent on reset, snapshots its state and adds the rendered frame to ``info``.

    The wrapped env must be a MiniGrid env made with ``render_mode="rgb_array"``.

    ``reset(seed=None, options=None)`` options (all optional):

    - ``{"agent_pos": (col, row), "agent_dir": d}``: put the agent on a free cell (no wall, no goal, no object) facing
      ``d`` (0 east, 1 south, 2 west, 3 north); either key alone changes only that part of the default start;
    - ``{"random_start": True}``: a free cell and a direction drawn uniformly with the env's RNG, so
      ``reset(seed=s, options={"random_start": True})`` gives the same start for the same ``s`` and different
      starts for different ``s``.

    Every ``reset`` and ``step`` puts ``env.render()`` into ``info["pixels"]``: `(H, W, 3)` uint8.

    Raises (``reset``):
        ValueError: an unknown option key; ``agent_pos`` not two ints inside the grid or not a free cell;
            ``agent_dir`` not an int in 0..3; ``random_start`` with ``agent_pos`` / ``agent_dir``; no free cell. The
            env is left usable (reset to its default start when the check needs the new grid).

    >>> env = MiniGridStateWrapper(gym.make("MiniGrid-Empty-8x8-v0", render_mode="rgb_array"))  # doctest: +SKIP
    >>> _, info = env.reset(options={"agent_pos": (3, 4), "agent_dir": 1})                   # doctest: +SKIP
    >>> env.get_state()                                                                       # doctest: +SKIP
    {'agent_pos': (3, 4), 'agent_dir': 1, 'step_count': 0}
    """

    def _frame(self) -> np.ndarray:
        frame = self.env.render()
        if frame is None:
            raise ValueError("MiniGridStateWrapper needs an env made with render_mode='rgb_array'; render() gave None")
        return np.asarray(frame)

    def _free_cells(self, allow_goal: bool = False) -> list[tuple[int, int]]:
        grid = self.env.unwrapped.grid
        cells = []
        for row in range(grid.height):
            for col in range(grid.width):
                item = grid.get(col, row)
                if item is None or (allow_goal and item.type == "goal"):
                    cells.append((col, row))
        return cells

    def _check_free(self, cell: tuple[int, int], allow_goal: bool, what: str) -> None:
        if cell not in self._free_cells(allow_goal):
            item = self.env.unwrapped.grid.get(*cell)
            raise ValueError(f"{what} {cell} is not a free cell (it holds a {item.type if item else 'nothing'}); "
                             f"the agent must start on an empty floor cell{' or the goal' if allow_goal else ''}")

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        options = dict(options or {})
        unknown = sorted(set(options) - _OPTION_KEYS)
        if unknown:
            raise ValueError(f"unknown MiniGrid reset options {unknown}; known: {sorted(_OPTION_KEYS)}")
        random_start = bool(options.get("random_start", False))
        if random_start and ("agent_pos" in options or "agent_dir" in options):
            raise ValueError("random_start cannot be combined with agent_pos / agent_dir, got options "
                             f"{options!r}")
        unwrapped = self.env.unwrapped
        direction = _check_direction(options["agent_dir"], "agent_dir") if "agent_dir" in options else None
        position = _check_position(options["agent_pos"], unwrapped.width, unwrapped.height, "agent_pos") \
            if "agent_pos" in options else None
        observation, info = self.env.reset(seed=seed)
        self._was_reset = True
        if random_start:
            cells = self._free_cells()
            if not cells:
                raise ValueError("random_start: the grid has no free cell")
            rng = unwrapped.np_random
            position = cells[int(rng.integers(len(cells)))]
            direction = int(rng.integers(4))
        if position is not None:
            self._check_free(position, allow_goal=False, what="agent_pos")
            unwrapped.agent_pos = position
        if direction is not None:
            unwrapped.agent_dir = direction
        if position is not None or direction is not None:
            observation = unwrapped.gen_obs()
        return observation, {**info, "pixels": self._frame()}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "pixels": self._frame()}

    def get_state(self) -> dict[str, Any]:
        """The agent's state.

        Returns:
            ``{"agent_pos": (col, row) ints, "agent_dir": int in 0..3, "step_count": int}`` (the grid is not
            included: MiniGrid-Empty's grid never changes).
        """
        unwrapped = self.env.unwrapped
        col, row = unwrapped.agent_pos
        return {"agent_pos": (int(col), int(row)), "agent_dir": int(unwrapped.agent_dir),
                "step_count": int(unwrapped.step_count)}

    def set_state(self, state: dict[str, Any]) -> np.ndarray:
        """Restores a :meth:`get_state` snapshot on the current grid (an env never reset is reset first, to build
        its grid).

        Args:
            state: ``{"agent_pos", "agent_dir", "step_count"}`` as from :meth:`get_state`; the agent may stand on
                the goal (a snapshot taken when it arrived).

        Returns:
            The frame there: `(H, W, 3)` uint8.

        Raises:
            ValueError: a missing key, or a position / direction / step count that is not valid (the env is
                unchanged).
        """
        missing = sorted({"agent_pos", "agent_dir", "step_count"} - set(state))
        if missing:
            raise ValueError(f"MiniGrid state is missing {missing}; got keys {sorted(state)}")
        if not getattr(self, "_was_reset", False):  # a fresh env has no grid yet: build it (Empty's is fixed)
            self.reset()
        unwrapped = self.env.unwrapped
        position = _check_position(state["agent_pos"], unwrapped.width, unwrapped.height, "state agent_pos")
        self._check_free(position, allow_goal=True, what="state agent_pos")
        direction = _check_direction(state["agent_dir"], "state agent_dir")
        step_count = state["step_count"]
        if not _is_int(step_count) or step_count < 0:
            raise ValueError(f"state step_count must be an int >= 0, got {step_count!r}")
        unwrapped.agent_pos, unwrapped.agent_dir, unwrapped.step_count = position, direction, int(step_count)
        return self._frame()


class GoalFrameWrapper(gym.Wrapper):
    """For recording data: reaching the goal terminates one step later, so the frame on the goal gets recorded.

    A LeRobot recorder stores the observation *before* each action and drops the one after the last action, and
    MiniGrid terminates on the very step that enters the goal, so without this wrapper no recorded frame would ever
    show the agent on the goal, and the outcome heads could not learn what success looks like. Here the goal step
    returns ``terminated=False`` (and ``truncated=False``) with its reward and ``info["is_success"] = True``; the
    next step, whatever its action, does not step the inner env: it returns the same observation and frame with
    ``terminated=True``, reward 0 and ``is_success`` False. Every other step passes through with ``is_success``
    False. Use it only for recording: it changes the episode's length and termination.

    Wrap an env whose ``info`` carries ``"pixels"`` (:class:`MiniGridStateWrapper`) to get the frame in ``info``.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._pending: tuple[Any, dict] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        self._pending = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._pending is not None:
            observation, info = self._pending
            self._pending = None
            return observation, 0.0, True, False, {**info, "is_success": False}
        observation, reward, terminated, truncated, info = self.env.step(action)
        if terminated and reward > 0:
            self._pending = (observation, info)
            return observation, reward, False, False, {**info, "is_success": True}
        return observation, reward, terminated, truncated, {**info, "is_success": False}


__all__ = ["GoalFrameWrapper", "MiniGridStateWrapper"]
