"""PushT-specific measurements on frames: where the blue agent disc and the grey T block are.

The agent is drawn in RoyalBlue (65, 105, 225) and the block in LightSlateGray (119, 136, 153) on white, with the
goal in LightGreen; each is found by colour, so imagined frames and real frames are measured the same way.
"""

from __future__ import annotations

import numpy as np

PUSHT_WORKSPACE = 512.0


def _centroid(weights: np.ndarray, min_mass: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = weights.shape[-2:]
    mass = weights.sum(axis=(-2, -1))
    rows = (weights * np.arange(height)[:, None]).sum(axis=(-2, -1))
    cols = (weights * np.arange(width)[None, :]).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        # pixel centres -> workspace coordinates: x from columns, y from rows
        x = (cols / mass + 0.5) * PUSHT_WORKSPACE / width
        y = (rows / mass + 0.5) * PUSHT_WORKSPACE / height
    position = np.stack([x, y], axis=-1)
    position[mass < min_mass] = np.nan
    return position, mass


def agent_mask(frames: np.ndarray) -> np.ndarray:
    """Blueness weight per pixel: `(..., H, W)` float32 in [0, 1], high on the agent disc."""
    rgb = np.asarray(frames, dtype=np.float32)
    blueness = rgb[..., 2] - 0.5 * (rgb[..., 0] + rgb[..., 1])
    return np.clip((blueness - 40.0) / 60.0, 0.0, 1.0)


def locate_agent(frames: np.ndarray) -> np.ndarray:
    """Finds the agent disc by colour.

    Args:
        frames: `np.ndarray` `(..., H, W, 3)` uint8 RGB PushT frames (any resolution).

    Returns:
        `np.ndarray` `(..., 2)` float64: agent (x, y) in workspace pixels (0-512, the units of PushT actions and
        ``info["pos_agent"]``); NaN where no agent-coloured pixels are found.
    """
    frames = np.asarray(frames)
    min_mass = 0.5 * (frames.shape[-2] / 96.0) ** 2  # about half a pixel's worth at 96 x 96
    position, _ = _centroid(agent_mask(frames), min_mass)
    return position


def block_mask(frames: np.ndarray) -> np.ndarray:
    """Grey-block weight per pixel: `(..., H, W)` float32 in [0, 1] (LightSlateGray, not white, not coloured)."""
    rgb = np.asarray(frames, dtype=np.float32)
    target = np.array([119.0, 136.0, 153.0])
    distance = np.linalg.norm(rgb - target, axis=-1)
    return np.clip(1.0 - (distance - 20.0) / 40.0, 0.0, 1.0)


def locate_block(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finds the T block by colour.

    Returns:
        (position, area): `(..., 2)` centroid in workspace pixels (NaN if absent) and `(...,)` the block's area as a
        fraction of the frame, so a block that blurs away or vanishes shows as a falling area.
    """
    frames = np.asarray(frames)
    weights = block_mask(frames)
    position, mass = _centroid(weights, min_mass=2.0 * (frames.shape[-2] / 96.0) ** 2)
    return position, mass / (frames.shape[-3] * frames.shape[-2])


def pusht_coverage(block_pose: np.ndarray) -> np.ndarray:
    """Goal coverage of the T block for block poses, computed exactly as gym-pusht computes its reward.

    Args:
        block_pose: `(N, 3)` float: block x, y (workspace px) and angle (rad), as in ``info["block_pose"]`` and
            columns 2-4 of worldsim's PushT ``observation.environment_state``.

    Returns:
        `(N,)` float64 in [0, 1]: area of block and goal overlap / goal area. PushT's reward is
        ``clip(coverage / 0.95, 0, 1)`` and success is ``coverage > 0.95``.

    Raises:
        ValueError: ``block_pose`` is not `(N, 3)`.
    """
    from worldsim.embodiments.pusht import PushTEmbodiment

    poses = np.asarray(block_pose, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 3:
        raise ValueError(f"block_pose must be (N, 3) x, y, angle; got {poses.shape}")
    env = PushTEmbodiment().make_env().unwrapped
    env.reset(seed=0)
    coverage = np.empty(len(poses))
    for index, (x, y, angle) in enumerate(poses):
        # angle first: pymunk rotates about the centre of gravity, which would move a position set before it
        env.block.angle = float(angle)
        env.block.position = (float(x), float(y))
        coverage[index] = env._get_coverage()  # gym-pusht has no public per-pose coverage
    env.close()
    return coverage
