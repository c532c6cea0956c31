"""Frame-only perception for MiniGrid's 8 x 8 grids: where the agent is, which way it faces, where the goal is.

MiniGrid renders every cell as a square tile of ``H / 8`` pixels (``tile_size=8``: a 64 x 64 frame). The agent is a
red (255, 0, 0) triangle pointing in its direction (0 east, 1 south, 2 west, 3 north), the goal a green (0, 255, 0)
tile, walls grey (100, 100, 100) tiles and the floor black with grey grid lines. Everything here is measured from
the pixels alone, with soft colour weights and mass thresholds rather than exact colour matches, so real frames and
slightly blurry imagined frames are measured the same way (the approach of :mod:`worldsim.evaluation.pusht`):

- *redness* ``R - (G + B) / 2`` and *greenness* ``G - (R + B) / 2`` map to [0, 1] weights through a ramp, so
  anti-aliased and blurred edges count partly and grey (walls, grid lines) counts not at all;
- the agent's (goal's) cell is the cell holding the most red (green) weight, if that is enough for a triangle (most
  of a tile);
- the direction comes from the triangle's shape: its red mass is heavier on its base, so the red centroid inside
  the agent's cell is offset from the cell centre *opposite* to where the triangle points.

Cells are ``(col, row)`` = MiniGrid's ``agent_pos`` ``(x, y)``; maps of cells are indexed ``[row, col]`` like images.
"""

from __future__ import annotations

import numpy as np

#: cells per side of the grids this module reads (MiniGrid-Empty-8x8 including its border walls)
GRID_CELLS = 8
#: ``agent_dir`` -> (dx, dy) of the cell ahead, in cells (x right, y down), as MiniGrid's ``DIR_TO_VEC``
DIRECTION_VECTORS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)

_WALL_GREY = np.array([100.0, 100.0, 100.0], dtype=np.float32)
# chroma ramps: a pixel's weight rises from 0 at _RAMP_START to 1 at _RAMP_START + _RAMP_WIDTH (0-255 units)
_RAMP_START, _RAMP_WIDTH = 60.0, 100.0
# least mass, as a fraction of a cell's area, for the agent (a triangle covers about 0.2 of its tile), the goal
# (about 0.8 of its tile shows even with the agent on it) and a wall (the whole tile)
_AGENT_MIN_FRACTION, _GOAL_MIN_FRACTION, _WALL_MIN_FRACTION = 0.04, 0.3, 0.5


def cell_size(frames: np.ndarray) -> int:
    """Pixels per cell side of MiniGrid frames of 8 x 8 cells.

    Args:
        frames: `(..., H, W, 3)` uint8 RGB.

    Returns:
        ``H // 8`` (8 for 64 x 64 frames).

    Raises:
        ValueError: ``frames`` is not `(..., H, W, 3)` with ``H == W`` a positive multiple of 8.
    """
    shape = np.shape(frames)
    if len(shape) < 3 or shape[-1] != 3 or shape[-3] != shape[-2] or shape[-3] % GRID_CELLS or shape[-3] == 0:
        raise ValueError(f"MiniGrid frames must be (..., H, W, 3) with H == W a positive multiple of {GRID_CELLS} "
                         f"({GRID_CELLS} cells per side), got shape {shape}")
    return shape[-3] // GRID_CELLS


def _chroma_weight(frames: np.ndarray, channel: int) -> np.ndarray:
    """`(..., H, W)` float32 in [0, 1]: how much each pixel is of the primary colour ``channel`` (0 red, 1 green)."""
    rgb = np.asarray(frames, dtype=np.float32)
    chroma = rgb[..., channel] - 0.5 * (rgb.sum(axis=-1) - rgb[..., channel])
    return np.clip((chroma - _RAMP_START) / _RAMP_WIDTH, 0.0, 1.0)


def red_weight(frames: np.ndarray) -> np.ndarray:
    """Per-pixel weight of the agent's red: `(..., H, W, 3)` uint8 -> `(..., H, W)` float32 in [0, 1]."""
    return _chroma_weight(frames, 0)


def green_weight(frames: np.ndarray) -> np.ndarray:
    """Per-pixel weight of the goal's green: `(..., H, W, 3)` uint8 -> `(..., H, W)` float32 in [0, 1]."""
    return _chroma_weight(frames, 1)


def _cell_tiles(weights: np.ndarray, cell: int) -> np.ndarray:
    """`(..., H, W)` -> `(..., 8, 8, cell, cell)`: the pixels of each cell, cells indexed ``[row, col]``."""
    lead = weights.shape[:-2]
    tiles = weights.reshape(*lead, GRID_CELLS, cell, GRID_CELLS, cell)
    return np.swapaxes(tiles, -3, -2)


def _best_cell(mass: np.ndarray, min_mass: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heaviest cell of `(..., 8, 8)` masses: flat index `(...)` int64, its (col, row) `(..., 2)` float64 (NaN
    where its mass is under ``min_mass``) and whether it was found `(...)` bool."""
    flat = mass.reshape(*mass.shape[:-2], GRID_CELLS * GRID_CELLS)
    index = flat.argmax(axis=-1)
    found = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0] >= min_mass
    cells = np.stack([index % GRID_CELLS, index // GRID_CELLS], axis=-1).astype(np.float64)
    cells[~found] = np.nan
    return index, cells, found


def _agent(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Agent cell `(..., 2)` (NaN if absent), found `(...)` bool, and the red centroid's offset from the cell centre
    `(..., 2)` (dx, dy) in cells, plus the centroid in [0, 1] frame units `(..., 2)` (both NaN if absent)."""
    cell = cell_size(frames)
    tiles = _cell_tiles(red_weight(frames), cell)  # (..., 8, 8, cell, cell)
    index, cells, found = _best_cell(tiles.sum(axis=(-2, -1)), _AGENT_MIN_FRACTION * cell * cell)
    flat_tiles = tiles.reshape(*tiles.shape[:-4], GRID_CELLS * GRID_CELLS, cell, cell)
    tile = np.take_along_axis(flat_tiles, index[..., None, None, None], axis=-3)[..., 0, :, :]  # (..., cell, cell)
    mass = tile.sum(axis=(-2, -1))
    centre = (cell - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = ((tile * np.arange(cell)).sum(axis=(-2, -1)) / mass - centre) / cell
        dy = ((tile * np.arange(cell)[:, None]).sum(axis=(-2, -1)) / mass - centre) / cell
    offset = np.stack([dx, dy], axis=-1)
    offset[~found] = np.nan
    centroid = (cells + 0.5 + offset) / GRID_CELLS
    return cells, found, offset, centroid


def locate_agent(frames: np.ndarray) -> np.ndarray:
    """The agent's cell: the cell holding the most red, if it holds enough for the agent triangle.

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells (``H == W``, a multiple of 8).

    Returns:
        `(..., 2)` float64 (col, row) in cells, integer-valued (MiniGrid's ``agent_pos``); NaN where no agent is
        found.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    return _agent(np.asarray(frames))[0]


def agent_pose(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The agent's cell and direction in one pass (:func:`locate_agent` and :func:`agent_direction`).

    The direction comes from the triangle's shape: its red mass is heavier on its base, so its centroid inside the
    agent's cell lies off the cell centre on the side opposite to the tip; the larger component of that offset gives
    the direction.

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        cells `(..., 2)` float64 (col, row), integer-valued, NaN where no agent is found; directions `(...)` int64
        MiniGrid ``agent_dir`` (0 east, 1 south, 2 west, 3 north), -1 where no agent is found.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    cells, found, offset, _ = _agent(np.asarray(frames))
    dx, dy = np.nan_to_num(offset[..., 0]), np.nan_to_num(offset[..., 1])
    horizontal = np.where(dx < 0, 0, 2)  # base on the left: pointing east
    vertical = np.where(dy < 0, 1, 3)  # base on top: pointing south
    direction = np.where(np.abs(dx) >= np.abs(dy), horizontal, vertical).astype(np.int64)
    return cells, np.where(found, direction, -1)


def agent_direction(frames: np.ndarray) -> np.ndarray:
    """The way the agent triangle points, from its shape (see :func:`agent_pose`).

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        `(...)` int64 MiniGrid ``agent_dir`` (0 east, 1 south, 2 west, 3 north); -1 where no agent is found.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    return agent_pose(frames)[1]


def locate_goal(frames: np.ndarray) -> np.ndarray:
    """The goal's cell: the cell holding the most green (with the agent on it, the one with green and red).

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        `(..., 2)` float64 (col, row) in cells, integer-valued; NaN where no cell is mostly green.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    frames = np.asarray(frames)
    cell = cell_size(frames)
    mass = _cell_tiles(green_weight(frames), cell).sum(axis=(-2, -1))
    return _best_cell(mass, _GOAL_MIN_FRACTION * cell * cell)[1]


def on_goal(frames: np.ndarray) -> np.ndarray:
    """Whether the agent stands on the goal (its red triangle drawn on the green cell).

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        `(...)` bool; False where the agent or the goal is not found.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    frames = np.asarray(frames)
    return np.all(locate_agent(frames) == locate_goal(frames), axis=-1)  # NaN compares unequal


def wall_cells(frames: np.ndarray) -> np.ndarray:
    """Which cells are walls: mostly MiniGrid's wall grey (100, 100, 100), by colour distance.

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        `(..., 8, 8)` bool indexed ``[row, col]``.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    frames = np.asarray(frames)
    cell = cell_size(frames)
    distance = np.linalg.norm(np.asarray(frames, dtype=np.float32) - _WALL_GREY, axis=-1)
    weight = np.clip(1.0 - (distance - 20.0) / 40.0, 0.0, 1.0)
    return _cell_tiles(weight, cell).sum(axis=(-2, -1)) >= _WALL_MIN_FRACTION * cell * cell


def locate_controlled(frames: np.ndarray) -> np.ndarray:
    """The agent triangle's centre (its red centroid inside the agent's cell) for ``worldsim sensitivity``.

    The centroid sits about 0.16 of a cell off the cell centre, on the triangle's base side, so turning in place
    moves it too.

    Args:
        frames: `(..., H, W, 3)` uint8 RGB MiniGrid frames of 8 x 8 cells.

    Returns:
        `(..., 2)` float64 (x, y) in [0, 1] frame units; NaN where no agent is found.

    Raises:
        ValueError: ``frames`` has the wrong shape (:func:`cell_size`).
    """
    return _agent(np.asarray(frames))[3]


__all__ = ["DIRECTION_VECTORS", "GRID_CELLS", "agent_direction", "agent_pose", "cell_size", "green_weight",
           "locate_agent", "locate_controlled", "locate_goal", "on_goal", "red_weight", "wall_cells"]
