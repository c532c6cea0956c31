"""Frame and latent sizes: an int for a square frame, or a pair ``(height, width)`` for any other.

A frame that shows several camera views side by side (:mod:`worldsim.data.cameras`) is not square; every size in
worldsim (a model's ``image_size``, a transformer's latent ``sample_size``, an outcome head's input) may be either
form, and code that needs both sides reads them with :func:`size_pair`.
"""

from __future__ import annotations

import numpy as np


def size_pair(size, what: str = "size") -> tuple[int, int]:
    """``(height, width)`` of a size given as a positive int (square) or a pair of positive ints.

    Args:
        size: an int (Python or numpy), or a list / tuple ``[height, width]`` (as JSON configs store it).
        what: the name of the value, for the error message.

    Returns:
        ``(height, width)`` ints.

    Raises:
        ValueError: anything else (the message names ``what`` and the value).
    """
    def positive(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value > 0

    if positive(size):
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(positive(side) for side in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"{what} must be a positive int or a pair [height, width] of them, got {size!r}")


def size_config(size) -> int | list[int]:
    """The JSON form of a size: an int when square, else ``[height, width]``.

    Raises:
        ValueError: as :func:`size_pair`.
    """
    height, width = size_pair(size)
    return height if height == width else [height, width]
