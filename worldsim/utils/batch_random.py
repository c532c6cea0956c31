"""Random draws for a batch of envs: one generator shared by the batch, or one per env seeded by its episode.

A batched zoo policy (``reset(num_envs)``, ``act(observations (N, ...))``) draws its noise for all N envs at once.
With one shared generator, env ``i``'s draws depend on how many envs share the batch and on its position in it, so
the same start cannot draw the same noise in a real episode run alone and in an imagined batch. With ``seeds`` (one
per env, the episode's start seed, which ``worldsim rank`` passes), each env gets its own generator, seeded
``(seed, seeds[i])``: its draws are the same alone or in any batch (common random numbers, as numpy's
``SeedSequence`` spawns independent streams from a list of ints).

Imports nothing from worldsim above :mod:`worldsim.utils`.
"""

from __future__ import annotations

import numpy as np


def check_seeds(seeds, num_envs: int) -> list[int]:
    """Episode seeds for a batch, checked: ``num_envs`` ints >= 0 (Python or numpy integers, not bools).

    Returns:
        the seeds as a list of Python ints.

    Raises:
        ValueError: another count, or a seed that is not an int >= 0 (the message shows them).
    """
    seeds = list(seeds)
    if len(seeds) != num_envs or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                                         for s in seeds):
        raise ValueError(f"seeds must be {num_envs} ints >= 0 (one per env), got {seeds!r}")
    return [int(s) for s in seeds]


class BatchRandom:
    """Uniform and normal draws for a batch of envs.

    Args:
        seed: the policy's seed.
        num_envs: N, the batch size.
        seeds: N ints >= 0, each env's episode seed (one generator per env, seeded ``[seed, seeds[i]]``); None: one
            generator seeded ``seed`` shared by the batch, whose draws for all N envs are exactly those of
            ``numpy.random.default_rng(seed)`` drawing ``(N, *size)`` at once.

    Every draw takes ``rows``, the envs to draw for (an int array of indices into the batch, in order; all of them:
    :meth:`rows`), and returns ``(len(rows), *size)``: float64 for :meth:`random`, :meth:`uniform` and
    :meth:`normal`, int64 for :meth:`integers`, the options' dtype for :meth:`choice`.

    Raises:
        ValueError: ``num_envs`` < 1, or ``seeds`` not N ints >= 0 (the message shows them).
    """

    def __init__(self, seed: int, num_envs: int, seeds=None):
        num_envs = int(num_envs)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        if seeds is None:
            self.shared, self.generators = np.random.default_rng(seed), None
            return
        self.shared = None
        self.generators = [np.random.default_rng([int(seed), s]) for s in check_seeds(seeds, num_envs)]

    def rows(self, count: int) -> np.ndarray:
        """The rows of a batch of ``count`` observations, ``arange(count)``.

        Raises:
            ValueError: per-env generators (``seeds`` given) and ``count`` other than N: the streams belong to N envs.
        """
        if self.generators is not None and count != self.num_envs:
            raise ValueError(f"got {count} observations, but reset() seeded {self.num_envs} envs")
        return np.arange(count)

    def _draw(self, rows, size: tuple, method: str, *args) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.shared is not None:
            return getattr(self.shared, method)(*args, (len(rows), *size))
        if not len(rows):
            return np.zeros((0, *size))
        return np.stack([getattr(self.generators[row], method)(*args, size) for row in rows])

    def random(self, rows) -> np.ndarray:
        """Uniform in [0, 1), `(len(rows),)`."""
        return self._draw(rows, (), "random")

    def uniform(self, low: float, high: float, rows, size: tuple = ()) -> np.ndarray:
        """Uniform in [low, high), `(len(rows), *size)`."""
        return self._draw(rows, tuple(size), "uniform", low, high)

    def normal(self, loc: float, scale: float, rows, size: tuple = ()) -> np.ndarray:
        """Gaussian, `(len(rows), *size)`."""
        return self._draw(rows, tuple(size), "normal", loc, scale)

    def choice(self, options, rows) -> np.ndarray:
        """One of ``options`` (a 1-D array) per row, uniformly, `(len(rows),)` of its dtype."""
        return self._draw(rows, (), "choice", np.asarray(options))

    def integers(self, low: int, high: int, rows) -> np.ndarray:
        """Integers in [low, high), uniformly, `(len(rows),)` int64."""
        return self._draw(rows, (), "integers", low, high)
