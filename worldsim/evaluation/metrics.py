"""Image fidelity metrics on uint8 frames (PSNR by formula, SSIM from scikit-image)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio per frame, in dB, for uint8 frames.

    Args:
        prediction, target: `np.ndarray` `(..., H, W, 3)` uint8 of the same shape.

    Returns:
        `np.ndarray` `(...)` float64; identical frames give ``inf`` (capped at 100 dB).

    Raises:
        ValueError: shapes differ.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} != target shape {target.shape}")
    mse = np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(255.0**2 / mse), 100.0)


def ssim(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Structural similarity per frame (``skimage.metrics.structural_similarity`` over RGB channels).

    Args:
        prediction, target: `np.ndarray` `(..., H, W, 3)` uint8 of the same shape.

    Returns:
        `np.ndarray` `(...)` float64 in [-1, 1].
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} != target shape {target.shape}")
    lead = prediction.shape[:-3]
    flat_p = prediction.reshape(-1, *prediction.shape[-3:])
    flat_t = target.reshape(-1, *target.shape[-3:])
    values = [structural_similarity(p, t, channel_axis=-1, data_range=255) for p, t in zip(flat_p, flat_t)]
    return np.asarray(values, dtype=np.float64).reshape(lead)
