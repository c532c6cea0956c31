"""MiniGrid policies that act from frames alone, so they run the same in the real env and in a world model.

Every policy here sees only frames (:mod:`worldsim.embodiments.minigrid.perception` finds the agent, its direction,
the goal and the walls by colour) and returns MiniGrid actions: 0 turn left, 1 turn right, 2 forward, 3 pickup,
4 drop, 5 toggle, 6 done (3-6 change nothing in MiniGrid-Empty).

- Batched zoo policies (``reset(num_envs)``, with ``seeds=None`` where they draw random actions; ``act(frames
  (N, H, W, 3) uint8) -> (N,) int64``; :mod:`worldsim.evaluation.policy_adapters`): :class:`ShortestPathPlanner`
  (breadth-first search over the cells that are not walls, with random actions mixed in and an optional wrong
  goal), :class:`WallFollower`, :class:`Bouncer`, :class:`RandomActions`, :class:`Spinner` and
  :class:`StandStill`; :func:`minigrid_zoo` names them, best first.
- :class:`NoisyPlannerChunks`: the stochastic chunk policy ``worldsim steer-eval`` steers.
- :class:`ZooCollectionPolicy`: a zoo member (or a mix of them, one per episode) as a data-collection policy
  ``(observation, info) -> action`` that reads the frame from ``info["pixels"]``
  (:class:`~worldsim.embodiments.minigrid.env.MiniGridStateWrapper`).

Every policy with randomness takes a ``seed``; ``reset`` restarts its RNG, so a run is reproducible.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from worldsim.embodiments.minigrid.perception import DIRECTION_VECTORS, GRID_CELLS, agent_pose, locate_goal, wall_cells
from worldsim.utils.batch_random import BatchRandom

LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)
NUM_ACTIONS = 7
#: the actions that move the agent (random actions are drawn from these)
MOVES = (LEFT, RIGHT, FORWARD)
#: the actions that do nothing in MiniGrid-Empty (pickup, drop, toggle, done)
IDLE_ACTIONS = (PICKUP, DROP, TOGGLE, DONE)
#: MiniGrid-Empty-8x8's goal cell (col, row) and the opposite corner, the wrong goal of ``planner-wrong-goal``
EMPTY_GOAL, OPPOSITE_CORNER = (6, 6), (1, 6)


# ---------------------------------------------------------------------------------------------- perception & planning
def _check_frames(frames: Any) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got shape {frames.shape}")
    return frames


def _free_cells(frames: np.ndarray) -> np.ndarray:
    """`(N, 8, 8)` bool ``[row, col]``: cells that are not walls; the border always counts as wall (MiniGrid grids are
    walled in), so a faint imagined wall cannot open the way out."""
    free = ~wall_cells(frames)
    free[..., [0, -1], :] = False
    free[..., :, [0, -1]] = False
    return free


@lru_cache(maxsize=4096)
def _distances(free_bytes: bytes, goal_col: int, goal_row: int) -> np.ndarray:
    """Breadth-first steps from every cell to the goal over free cells: `(8, 8)` float64 ``[row, col]``, inf where the
    goal cannot be reached (read-only: it is cached)."""
    free = np.frombuffer(free_bytes, dtype=bool).reshape(GRID_CELLS, GRID_CELLS)
    distance = np.full((GRID_CELLS, GRID_CELLS), np.inf)
    distance[goal_row, goal_col] = 0.0
    queue = deque([(goal_col, goal_row)])
    while queue:
        col, row = queue.popleft()
        for dx, dy in DIRECTION_VECTORS:
            next_col, next_row = col + dx, row + dy
            if 0 <= next_col < GRID_CELLS and 0 <= next_row < GRID_CELLS and free[next_row, next_col] \
                    and distance[next_row, next_col] == np.inf:
                distance[next_row, next_col] = distance[row, col] + 1.0
                queue.append((next_col, next_row))
    distance.flags.writeable = False
    return distance


def _plan_action(cell: tuple[int, int], direction: int, distance: np.ndarray) -> int:
    """The planner's action at ``cell`` facing ``direction``: forward if the cell ahead is one step nearer the goal,
    else turn towards such a cell (right before left; right to turn around), ``DONE`` on the goal, -1 if the goal
    cannot be reached."""
    col, row = cell
    here = distance[row, col]
    if not np.isfinite(here):
        return -1
    if here == 0:
        return DONE
    nearer = set()
    for heading, (dx, dy) in enumerate(DIRECTION_VECTORS):
        next_col, next_row = col + dx, row + dy
        if 0 <= next_col < GRID_CELLS and 0 <= next_row < GRID_CELLS and distance[next_row, next_col] == here - 1:
            nearer.add(heading)
    if direction in nearer:
        return FORWARD
    if (direction + 1) % 4 in nearer:
        return RIGHT
    if (direction - 1) % 4 in nearer:
        return LEFT
    return RIGHT


def _is_free(free: np.ndarray, cell: tuple[int, int], direction: int) -> bool:
    """Whether the cell next to ``cell`` in ``direction`` is inside the grid and free (`(8, 8)` ``free[row, col]``)."""
    col, row = cell[0] + DIRECTION_VECTORS[direction][0], cell[1] + DIRECTION_VECTORS[direction][1]
    return bool(0 <= col < GRID_CELLS and 0 <= row < GRID_CELLS and free[row, col])


def _advance(cell: tuple[int, int], direction: int, action: int, free: np.ndarray) -> tuple[tuple[int, int], int]:
    """MiniGrid's dynamics on a grid of free cells: the agent's cell and direction after ``action``."""
    if action == LEFT:
        return cell, (direction - 1) % 4
    if action == RIGHT:
        return cell, (direction + 1) % 4
    if action == FORWARD and _is_free(free, cell, direction):
        return (int(cell[0] + DIRECTION_VECTORS[direction][0]), int(cell[1] + DIRECTION_VECTORS[direction][1])), \
            direction
    return cell, direction


def _check_cell(cell: Any, what: str) -> tuple[int, int]:
    try:
        values = np.asarray(cell, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if values.shape != (2,) or not np.all(np.mod(values, 1) == 0) or not np.all((values >= 0) & (values < GRID_CELLS)):
        raise ValueError(f"{what} must be a (col, row) cell with ints in 0..{GRID_CELLS - 1}, got {cell!r}")
    return int(values[0]), int(values[1])


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------- zoo policies
class ShortestPathPlanner:
    """Walks the shortest path to the goal it sees (or to a fixed cell), with random actions mixed in.

    Each step it finds the agent's cell and direction and the goal in the frame, runs a breadth-first search over
    the cells that are not walls (MiniGrid-Empty has no obstacles, so the path is a Manhattan path), and goes
    forward when the cell ahead is one step nearer, else turns towards such a cell. On the goal it plays ``DONE``.

    Args:
        random_prob: per-step probability of a uniformly random action among left, right, forward instead
            (in [0, 1]).
        goal: a fixed (col, row) cell to walk to instead of the goal seen in the frame (a "wrong goal" variant);
            None: the perceived goal.
        seed: RNG seed of the random actions (``reset`` restarts it).

    ``reset(num_envs, seeds=None)`` then ``act(frames (N, H, W, 3) uint8) -> (N,) int64`` in 0..6. Where the agent,
    its direction or the goal is not found, or the goal cannot be reached, the action is random.

    Raises:
        ValueError: ``random_prob`` outside [0, 1], ``goal`` not a cell, a non-int ``seed``; ``act``: frames not
            `(N, H, W, 3)` with ``H == W`` a multiple of 8.

    >>> planner = ShortestPathPlanner(random_prob=0.25, seed=0)      # doctest: +SKIP
    >>> planner.reset(num_envs=len(frames)); planner.act(frames)     # doctest: +SKIP
    array([2, 1, ...])
    """

    def __init__(self, random_prob: float = 0.0, goal: tuple[int, int] | None = None, seed: int = 0):
        if not 0.0 <= random_prob <= 1.0:
            raise ValueError(f"random_prob must be in [0, 1], got {random_prob!r}")
        self.random_prob = float(random_prob)
        self.goal = None if goal is None else _check_cell(goal, "goal")
        self.seed = _check_seed(seed)
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Restarts the RNG; ``num_envs`` is how many envs the next ``act`` calls hold. With ``seeds`` (each env's
        episode seed, as ``worldsim rank`` passes them) every env draws its own stream, the same alone or in a batch
        (:class:`~worldsim.utils.batch_random.BatchRandom`); without, the batch shares one generator.

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)
        self.num_envs = int(num_envs)

    def plan(self, frames: np.ndarray) -> np.ndarray:
        """The noise-free planner action per frame: `(N, H, W, 3)` uint8 -> `(N,)` int64, -1 where perception or
        planning fails.

        Raises:
            ValueError: frames of the wrong shape.
        """
        frames = _check_frames(frames)
        (agents, directions), free = agent_pose(frames), _free_cells(frames)
        goals = locate_goal(frames) if self.goal is None else np.tile(np.asarray(self.goal, float), (len(frames), 1))
        actions = np.full(len(frames), -1, dtype=np.int64)
        for index in range(len(frames)):
            if directions[index] < 0 or np.isnan(agents[index]).any() or np.isnan(goals[index]).any():
                continue
            distance = _distances(free[index].tobytes(), int(goals[index][0]), int(goals[index][1]))
            actions[index] = _plan_action((int(agents[index][0]), int(agents[index][1])), int(directions[index]),
                                          distance)
        return actions

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Actions for a batch: `(N, H, W, 3)` uint8 -> `(N,)` int64 in 0..6.

        Raises:
            ValueError: frames of the wrong shape.
        """
        actions = self.plan(frames)
        rows = self.rng.rows(len(actions))
        explore = self.rng.random(rows) < self.random_prob
        random = self.rng.choice(MOVES, rows).astype(np.int64)
        return np.where(explore | (actions < 0), random, actions)



def _observe(frames: np.ndarray, num_envs: int):
    """Checked frames, the agents' ``(cells, directions)`` and the free cells, for a batch of ``num_envs`` envs.

    Raises:
        ValueError: frames of the wrong shape, or a batch size other than ``num_envs`` (``reset``'s).
    """
    frames = _check_frames(frames)
    if len(frames) != num_envs:
        raise ValueError(f"got {len(frames)} frames but reset() was called for {num_envs} envs")
    return frames, agent_pose(frames), _free_cells(frames)

class WallFollower:
    """Goes straight to a wall, then follows it with the wall on its ``hand`` side; ignores the goal.

    The classic hand-on-the-wall rule: while following, turn towards the hand side when that cell is free (and step
    into it), else go forward when free, else turn away. Starting in the open it first walks straight until a wall
    is ahead, then turns away from the hand so the wall is on that side.

    Args:
        hand: ``"right"`` (right-hand rule) or ``"left"``.
        seed: RNG seed of the random actions played where perception fails.

    ``reset(num_envs, seeds=None)`` then ``act(frames (N, H, W, 3) uint8) -> (N,) int64`` in 0..2.

    Raises:
        ValueError: an unknown ``hand`` or a non-int ``seed``; ``act``: frames of the wrong shape.
    """

    def __init__(self, hand: str = "right", seed: int = 0):
        if hand not in ("right", "left"):
            raise ValueError(f"hand must be 'right' or 'left', got {hand!r}")
        self.hand, self.seed = hand, _check_seed(seed)
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Restarts the RNG (one stream per env with ``seeds``, as :meth:`ShortestPathPlanner.reset`) and every env's
        phase (seeking a wall).

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)
        self.following = np.zeros(num_envs, dtype=bool)
        self.turned = np.zeros(num_envs, dtype=bool)  # just turned towards the hand: step forward next

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Actions for a batch: `(N, H, W, 3)` uint8 -> `(N,)` int64 in 0..2.

        Raises:
            ValueError: frames of the wrong shape, or a batch size other than ``reset``'s.
        """
        frames, (agents, directions), free = _observe(frames, len(self.following))
        actions = self.rng.choice(MOVES, self.rng.rows(len(frames))).astype(np.int64)
        toward, away = (RIGHT, LEFT) if self.hand == "right" else (LEFT, RIGHT)
        side = 1 if self.hand == "right" else -1
        for index in range(len(frames)):
            if directions[index] < 0 or np.isnan(agents[index]).any():
                continue
            col, row, direction = int(agents[index][0]), int(agents[index][1]), int(directions[index])
            ahead_free = _is_free(free[index], (col, row), direction)
            hand_free = _is_free(free[index], (col, row), (direction + side) % 4)
            if not self.following[index]:
                self.following[index] = not ahead_free
                actions[index] = FORWARD if ahead_free else away
            elif hand_free and not self.turned[index]:
                actions[index], self.turned[index] = toward, True
            else:
                actions[index], self.turned[index] = (FORWARD if ahead_free else away), False
        return actions


class Bouncer:
    """Goes forward until the cell ahead is a wall, then turns; ignores the goal.

    With ``turn="left"`` it turns left at a wall, which in a convex room such as MiniGrid-Empty makes it circle the
    room along the walls exactly like the right-hand :class:`WallFollower`; with ``turn="around"`` it turns left
    twice and bounces back and forth along one line, reaching the goal only when that line passes it (the zoo's
    ``bouncer``).

    Args:
        turn: ``"left"`` or ``"around"``.
        seed: RNG seed of the random actions played where perception fails.

    ``reset(num_envs, seeds=None)`` then ``act(frames (N, H, W, 3) uint8) -> (N,) int64`` in 0..2.

    Raises:
        ValueError: an unknown ``turn`` or a non-int ``seed``; ``act``: frames of the wrong shape, or a batch size
            other than ``reset``'s.
    """

    def __init__(self, turn: str = "left", seed: int = 0):
        if turn not in ("left", "around"):
            raise ValueError(f"turn must be 'left' or 'around', got {turn!r}")
        self.turn, self.seed = turn, _check_seed(seed)
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Restarts the RNG (one stream per env with ``seeds``, as :meth:`ShortestPathPlanner.reset`) and every env's
        turn.

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)
        self.turning = np.zeros(num_envs, dtype=bool)  # half-way through turning around

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Actions for a batch: `(N, H, W, 3)` uint8 -> `(N,)` int64 in 0..2.

        Raises:
            ValueError: frames of the wrong shape, or a batch size other than ``reset``'s.
        """
        frames, (agents, directions), free = _observe(frames, len(self.turning))
        actions = self.rng.choice(MOVES, self.rng.rows(len(frames))).astype(np.int64)
        found = directions >= 0
        index = np.flatnonzero(found)
        ahead = agents[index].astype(np.int64) + DIRECTION_VECTORS[directions[index]]  # (K, 2) col, row
        inside = np.all((ahead >= 0) & (ahead < GRID_CELLS), axis=-1)
        ahead = np.clip(ahead, 0, GRID_CELLS - 1)
        ahead_free = inside & free[index, ahead[:, 1], ahead[:, 0]]
        finishing = self.turning[index]  # the second left turn of a turn-around
        actions[index] = np.where(ahead_free & ~finishing, FORWARD, LEFT)
        self.turning[index] = (self.turn == "around") & ~ahead_free & ~finishing
        self.turning[~found] = False
        return actions


class RandomActions:
    """Uniformly random moves (left, right, forward).

    Args:
        seed: RNG seed (``reset`` restarts it).

    ``reset(num_envs, seeds=None)`` then ``act(frames (N, H, W, 3) uint8) -> (N,) int64`` in 0..2.

    Raises:
        ValueError: a non-int ``seed``.
    """

    def __init__(self, seed: int = 0):
        self.seed = _check_seed(seed)
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Restarts the RNG (one stream per env with ``seeds``, as :meth:`ShortestPathPlanner.reset`).

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Actions for a batch: `(N, ...)` frames -> `(N,)` int64 in 0..2."""
        return self.rng.choice(MOVES, self.rng.rows(len(frames))).astype(np.int64)


class Spinner:
    """Turns left forever: moves, but never leaves its cell.

    ``reset(num_envs)`` then ``act(frames (N, ...)) -> (N,) int64`` all ``LEFT`` (0).
    """

    def reset(self, num_envs: int) -> None:
        """Nothing to reset."""

    def act(self, frames: np.ndarray) -> np.ndarray:
        """`(N, ...)` frames -> `(N,)` int64 zeros (turn left)."""
        return np.full(len(frames), LEFT, dtype=np.int64)


class StandStill:
    """Plays ``DONE`` (6) forever: nothing moves.

    ``reset(num_envs)`` then ``act(frames (N, ...)) -> (N,) int64`` all 6.
    """

    def reset(self, num_envs: int) -> None:
        """Nothing to reset."""

    def act(self, frames: np.ndarray) -> np.ndarray:
        """`(N, ...)` frames -> `(N,)` int64 sixes (done)."""
        return np.full(len(frames), DONE, dtype=np.int64)


def minigrid_zoo(seed: int = 0) -> dict[str, Any]:
    """The MiniGrid zoo: ``{name: policy}``, 12 frame-only policies from the shortest-path planner down to standing
    still, best first by real success rate.

    Measured in the real env from 50 random starts (``reset_start`` seeds 1000-1049), success within 16 / 24 / 32
    steps: planner 1.00 / 1.00 / 1.00, planner-eps0.1 1.00 / 1.00 / 1.00, planner-eps0.25 0.98 / 1.00 / 1.00,
    planner-eps0.5 0.68 / 0.94 / 0.98, wall-follower 0.48 / 0.90 / 1.00, planner-eps0.75 0.42 / 0.60 / 0.70,
    planner-eps0.9 0.16 / 0.32 / 0.40, bouncer 0.10, random 0.08 / 0.10 / 0.14, planner-wrong-goal 0.04, spinner and
    still 0. Success is all or nothing and the room is small, so the zoo is most graded at short horizons (16).

    Args:
        seed: seed of every member's RNG.

    Returns:
        Batched policies with ``reset(num_envs)`` and ``act(frames (N, H, W, 3) uint8) -> (N,) int64``.
    """
    return {
        "planner": ShortestPathPlanner(seed=seed),
        "planner-eps0.1": ShortestPathPlanner(random_prob=0.1, seed=seed),
        "planner-eps0.25": ShortestPathPlanner(random_prob=0.25, seed=seed),
        "planner-eps0.5": ShortestPathPlanner(random_prob=0.5, seed=seed),
        "wall-follower": WallFollower(seed=seed),
        "planner-eps0.75": ShortestPathPlanner(random_prob=0.75, seed=seed),
        "planner-eps0.9": ShortestPathPlanner(random_prob=0.9, seed=seed),
        "bouncer": Bouncer(turn="around", seed=seed),
        "random": RandomActions(seed=seed),
        "planner-wrong-goal": ShortestPathPlanner(goal=OPPOSITE_CORNER, seed=seed),
        "spinner": Spinner(),
        "still": StandStill(),
    }


# ---------------------------------------------------------------------------------------------- steering
class NoisyPlannerChunks:
    """The stochastic chunk policy of ``worldsim steer-eval``: the planner's next actions, each replaced by a random
    move with probability ``noise``.

    A chunk is planned on the grid seen in the frame: the planner's action is taken (or, with probability ``noise``,
    a uniformly random move among left, right, forward), the agent is advanced by MiniGrid's rules on that grid, and
    the next action is planned from there, so every chunk is a coherent action sequence. The RNG advances with every
    call, so calls give different chunks; its mode (``noise=0``) is :class:`ShortestPathPlanner`.

    Args:
        noise: per-action replacement probability in [0, 1].
        chunk_length: actions per chunk (>= 1).
        seed: RNG seed (``reset`` restarts it).

    ``__call__(frame (H, W, 3) uint8) -> (chunk_length,) int64`` in 0..6; where the agent or goal is not found the
    whole chunk is random moves.

    Raises:
        ValueError: ``noise`` outside [0, 1], ``chunk_length < 1``, a non-int ``seed``; ``__call__``: a frame that
            is not `(H, W, 3)` with ``H == W`` a multiple of 8.
    """

    def __init__(self, noise: float = 0.5, chunk_length: int = 4, seed: int = 0):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise!r}")
        if not isinstance(chunk_length, (int, np.integer)) or chunk_length < 1:
            raise ValueError(f"chunk_length must be an int >= 1, got {chunk_length!r}")
        self.noise, self.chunk_length, self.seed = float(noise), int(chunk_length), _check_seed(seed)
        self.reset()

    def reset(self) -> None:
        """Restarts the RNG."""
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8, got shape {frame.shape}")
        frames = frame[None]
        agents, directions = agent_pose(frames)
        agent, direction = agents[0], int(directions[0])
        goal, free = locate_goal(frames)[0], _free_cells(frames)[0]
        replace = self.rng.random(self.chunk_length) < self.noise
        random = self.rng.choice(MOVES, self.chunk_length).astype(np.int64)
        if direction < 0 or np.isnan(agent).any() or np.isnan(goal).any():
            return random
        distance = _distances(free.tobytes(), int(goal[0]), int(goal[1]))
        cell = (int(agent[0]), int(agent[1]))
        chunk = np.empty(self.chunk_length, dtype=np.int64)
        for step in range(self.chunk_length):
            action = _plan_action(cell, direction, distance)
            chunk[step] = random[step] if replace[step] or action < 0 else action
            cell, direction = _advance(cell, direction, int(chunk[step]), free)
        return chunk


# ---------------------------------------------------------------------------------------------- data collection
#: zoo members mixed by :class:`ZooCollectionPolicy` by default (``still`` and ``spinner`` would fill whole episodes
#: with one frame; the idle actions they show are mixed in by ``idle_prob`` instead)
DEFAULT_COLLECTION_MIX = ("planner", "planner-eps0.1", "planner-eps0.25", "planner-eps0.5", "wall-follower",
                          "planner-eps0.75", "planner-eps0.9", "bouncer", "random", "planner-wrong-goal")


class ZooCollectionPolicy:
    """A zoo member, or one drawn per episode from a mix, as a ``worldsim collect`` policy.

    MiniGrid's observation is a dict (a partial egocentric view), so the policy reads the rendered frame from
    ``info["pixels"]``, which :class:`~worldsim.embodiments.minigrid.env.MiniGridStateWrapper` (and so
    :meth:`MiniGridEmbodiment.make_env` / ``make_recording_env``) puts there on every reset and step.

    Args:
        action_space: the env's action space (checked to be ``Discrete`` with at least 7 actions when given).
        member: a zoo member's name (:func:`minigrid_zoo`), or None to draw one per episode from ``members``.
        seed: base seed; episode ``reset(s)`` seeds the member choice and the member's RNG from ``(seed, s)``.
        members: the names drawn from when ``member`` is None (default :data:`DEFAULT_COLLECTION_MIX`).
        idle_prob: per-step probability of replacing the action with a random idle action (pickup, drop, toggle,
            done), so the data shows that they change nothing (``done`` plays the world model's context frames).

    ``reset(seed: int | None)`` at each episode's start, then ``policy(observation, info) -> np.int64`` in 0..6;
    :attr:`current` names the member playing the episode.

    Raises:
        ValueError: an unknown member name, an empty mix, ``idle_prob`` outside [0, 1], an action space without
            MiniGrid's 7 actions; ``__call__``: ``info`` without ``"pixels"``.
    """

    def __init__(self, action_space: Any = None, member: str | None = None, seed: int = 0,
                 members: Sequence[str] | None = None, idle_prob: float = 0.05):
        import gymnasium as gym

        if action_space is not None and not (isinstance(action_space, gym.spaces.Discrete)
                                             and action_space.n >= NUM_ACTIONS and action_space.start == 0):
            raise ValueError(f"ZooCollectionPolicy plays MiniGrid's {NUM_ACTIONS} actions; got action space "
                             f"{action_space}")
        known = list(minigrid_zoo())
        names = [member] if member is not None else list(members if members is not None else DEFAULT_COLLECTION_MIX)
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"unknown or no MiniGrid zoo members {unknown or names}; known: {known}")
        if not 0.0 <= idle_prob <= 1.0:
            raise ValueError(f"idle_prob must be in [0, 1], got {idle_prob!r}")
        self.names, self.seed, self.idle_prob = names, _check_seed(seed), float(idle_prob)
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        """Starts an episode: draws the member (from ``(self.seed, seed)``; ``seed=None`` continues the RNG) and
        restarts its RNG."""
        self.rng = np.random.default_rng([self.seed, int(seed)]) if seed is not None else \
            getattr(self, "rng", np.random.default_rng(self.seed))
        self.current = self.names[int(self.rng.integers(len(self.names)))]
        self.policy = minigrid_zoo(seed=int(self.rng.integers(2 ** 31)))[self.current]
        self.policy.reset(1)

    def __call__(self, observation: Any, info: dict) -> np.int64:
        if "pixels" not in info:
            raise ValueError("ZooCollectionPolicy reads the frame from info['pixels']; make the env with "
                             "MiniGridEmbodiment().make_env() or make_recording_env() (MiniGridStateWrapper)")
        action = self.policy.act(np.asarray(info["pixels"])[None])[0]
        if self.rng.random() < self.idle_prob:
            action = self.rng.choice(IDLE_ACTIONS)
        return np.int64(action)


def collection_policies() -> dict[str, Any]:
    """Data-collection policies for ``worldsim collect --policy``: ``{name: factory(action_space, **kwargs)}``.

    ``"minigrid-zoo"`` mixes the zoo (one member per episode, :class:`ZooCollectionPolicy`); pass ``member=NAME`` for
    one member. ``"minigrid-planner"`` is the planner with 25% random moves.
    """

    def planner(action_space: Any = None, **kwargs) -> ZooCollectionPolicy:
        return ZooCollectionPolicy(action_space, **{"member": "planner-eps0.25", **kwargs})

    return {"minigrid-zoo": ZooCollectionPolicy, "minigrid-planner": planner}


__all__ = ["Bouncer", "DEFAULT_COLLECTION_MIX", "NoisyPlannerChunks", "RandomActions", "ShortestPathPlanner",
           "Spinner", "StandStill", "WallFollower", "ZooCollectionPolicy", "collection_policies", "minigrid_zoo"]
