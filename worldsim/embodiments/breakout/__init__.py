"""The Breakout embodiment (``ALE/Breakout-v5``, package ale-py, which ships the ROM): a paddle and a ball.

Action: ``Discrete(4)`` joystick (NOOP, FIRE, RIGHT, LEFT), 30 Hz, sticky actions off (the recorded action is the one
that moved the paddle). Reward: points per brick broken (1, 4 or 7 by the brick's row); an episode's value is its
return. Frames are 210 x 160.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldsim.embodiments.base import EmbodimentPlugin
from worldsim.utils.batch_random import BatchRandom

BREAKOUT_ENV = "ALE/Breakout-v5"


def _redness(frames: np.ndarray) -> np.ndarray:
    rgb = np.asarray(frames, dtype=np.float32)
    return rgb[..., 0] - 0.5 * (rgb[..., 1] + rgb[..., 2])


def locate_paddle(frames: np.ndarray) -> np.ndarray:
    """Breakout paddle centre: `(..., H, W, 3)` uint8 -> `(..., 1)` x in [0, 1] of the frame width (NaN if absent).

    The paddle is red (200, 72, 72) in the band of rows just above the bottom (0.86-0.96 of the height); the bricks
    of the same colour are far above it.
    """
    frames = np.asarray(frames)
    height, width = frames.shape[-3:-1]
    band = slice(int(0.86 * height), int(0.96 * height))
    weights = np.zeros(frames.shape[:-1], np.float32)
    weights[..., band, :] = np.clip((_redness(frames[..., band, :, :]) - 50.0) / 50.0, 0.0, 1.0)
    mass = weights.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = ((weights * np.arange(width)).sum(axis=(-2, -1)) / mass + 0.5) / width
    return np.where(mass < 0.5, np.nan, x)[..., None]


class RandomJoystick:
    """Uniformly random joystick actions (frame-only batched policy: ``reset(num_envs, seeds=None)``,
    ``act(frames (N, H, W, 3) uint8) -> (N,) int64`` in 0..3).

    With ``seeds`` (each env's episode seed, as ``worldsim rank`` passes them) every env draws its own stream, the
    same alone or in a batch; without, the batch shares one generator
    (:class:`~worldsim.utils.batch_random.BatchRandom`).
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.reset(1)

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Starts ``num_envs`` episodes.

        Raises:
            ValueError: ``num_envs`` < 1, or ``seeds`` not ``num_envs`` ints >= 0.
        """
        self.rng = BatchRandom(self.seed, num_envs, seeds)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, 4, self.rng.rows(len(frames))).astype(np.int64)


class Idle:
    """NOOP forever: the ball is never launched."""

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros(len(frames), dtype=np.int64)


class BreakoutEmbodiment(EmbodimentPlugin):
    """Breakout as a worldsim embodiment plug-in (see the module docstring)."""

    name = "breakout"
    env_ids = (BREAKOUT_ENV,)
    env_package = "ale_py"
    install_hint = "pip install 'worldsim[atari]'"
    env_kwargs = {"repeat_action_probability": 0.0}
    task = "Break the bricks with the ball; move the paddle (NOOP, FIRE, RIGHT, LEFT)."
    value_aggregation = "sum"
    value_description = "return over the horizon (points per brick)"
    headline_metric = "paddle_error"
    metric_labels = {"paddle_error": ("paddle x error (px of the frame width)", "{:.2f}")}

    def import_env_package(self) -> None:
        """Imports ale-py and registers its envs with Gymnasium."""
        super().import_env_package()
        import ale_py

        gym.register_envs(ale_py)

    def context_action(self, env: gym.Env, observation, info) -> np.int64:
        """NOOP."""
        return np.int64(0)

    def frame_metrics(self, imagined: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
        """``paddle_error``: the paddle's x in the imagined frame against the real one, in px of the frame width."""
        width = real.shape[-2]
        return {"paddle_error": np.abs(locate_paddle(imagined) - locate_paddle(real))[..., 0] * width}

    def locate_controlled(self, frames: np.ndarray) -> np.ndarray:
        """The paddle, `(..., 1)` x in [0, 1] frame units."""
        return locate_paddle(frames)

    def policy_zoo(self, seed: int = 0) -> dict:
        """Two frame-only baselines: random joystick and idle."""
        return {"random": RandomJoystick(seed), "idle": Idle()}


PLUGIN = BreakoutEmbodiment
"""The plug-in class the registry finds by this package's name."""

__all__ = ["PLUGIN", "BREAKOUT_ENV", "BreakoutEmbodiment", "Idle", "RandomJoystick", "locate_paddle"]
