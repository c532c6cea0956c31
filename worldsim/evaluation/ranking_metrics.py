"""Agreement between imagined and real policy values: correlations, MMRV and bootstrap intervals.

A policy evaluator is useful when it ranks policies the way reality does. Following SIMPLER (Li et al. 2024,
"Evaluating Real-World Robot Manipulation Policies in Simulation"), we report Pearson's r, Spearman's rho and
Kendall's tau (all from :mod:`scipy.stats`) and the Mean Maximum Rank Violation (MMRV), which weighs every ranking
mistake by how far apart the two policies really are, so swapping two near-equal policies costs little and
swapping a strong and a weak one costs a lot.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _values(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-policy values, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _pair(imagined, real) -> tuple[np.ndarray, np.ndarray]:
    imagined, real = _values("imagined", imagined), _values("real", real)
    if imagined.shape != real.shape:
        raise ValueError(f"imagined has {imagined.size} policies but real has {real.size}; they must match")
    if imagined.size < 2:
        raise ValueError(f"need at least 2 policies to compare rankings, got {imagined.size}")
    return imagined, real


def mmrv(imagined, real) -> float:
    """Mean Maximum Rank Violation (SIMPLER's definition), lower is better, 0 for a perfect ranking.

    ``MMRV = 1/N * sum_i max_j |real_i - real_j| * 1[(imagined_i < imagined_j) != (real_i < real_j)]``: for each
    policy i, the largest real-value gap to any policy j that the imagined values order the other way round.
    The argument order matters: the *real* values give the magnitude of a violation, so
    ``mmrv(imagined, real) != mmrv(real, imagined)`` in general.

    Args:
        imagined: `(N,)` per-policy values estimated in imagination (any real unit, e.g. mean max coverage).
        real: `(N,)` the same policies' values measured in the real env, same unit.

    Returns:
        MMRV in the unit of ``real``.

    Raises:
        ValueError: shapes differ, fewer than 2 policies, or a value is not finite.
    """
    imagined, real = _pair(imagined, real)
    imagined_less = imagined[:, None] < imagined[None, :]
    real_less = real[:, None] < real[None, :]
    violation = imagined_less != real_less
    gaps = np.abs(real[:, None] - real[None, :]) * violation
    return float(gaps.max(axis=1).mean())


def ranking_agreement(imagined, real) -> dict:
    """Pearson, Spearman, Kendall (scipy.stats) and MMRV between imagined and real per-policy values.

    Args:
        imagined: `(N,)` per-policy values in imagination.
        real: `(N,)` per-policy values in the real env.

    Returns:
        ``{"pearson", "spearman", "kendall", "mmrv", "num_policies"}``; a correlation is NaN when either side is
        constant (scipy's convention), MMRV is always defined.

    Raises:
        ValueError: as :func:`mmrv`.
    """
    imagined, real = _pair(imagined, real)
    constant = np.ptp(imagined) == 0 or np.ptp(real) == 0
    nan = float("nan")
    return {
        "pearson": nan if constant else float(stats.pearsonr(imagined, real).statistic),
        "spearman": nan if constant else float(stats.spearmanr(imagined, real).statistic),
        "kendall": nan if constant else float(stats.kendalltau(imagined, real).statistic),
        "mmrv": mmrv(imagined, real),
        "num_policies": int(imagined.size),
    }


def bootstrap_mean_interval(samples, confidence: float = 0.95, num_resamples: int = 2000,
                            seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-episode values with a percentile bootstrap interval (scipy.stats.bootstrap).

    Args:
        samples: `(n,)` per-episode values (e.g. max coverage in [0, 1], or success in {0, 1}).
        confidence: interval level in (0, 1).
        num_resamples: bootstrap resamples.
        seed: resampling seed (the interval is deterministic for a given seed).

    Returns:
        ``(mean, low, high)``; with a single sample or identical samples the interval collapses to the mean.

    Raises:
        ValueError: empty or non-finite samples, or ``confidence`` outside (0, 1).
    """
    values = _values("samples", samples)
    if values.size == 0:
        raise ValueError("samples is empty; need at least one per-episode value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(values.mean())
    if values.size == 1 or np.ptp(values) == 0:
        return mean, mean, mean
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=num_resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


AGREEMENT_METRICS = ("pearson", "spearman", "kendall", "mmrv")


def agreement_intervals(imagined_values, real_values, confidence: float = 0.95, num_resamples: int = 1000,
                        seed: int = 0) -> dict:
    """Paired percentile-bootstrap intervals of the ranking agreement, resampling initial states (Efron 1979).

    A ranking measured on 50 initial states is itself an estimate: another 50 states would give other per-policy
    means and another Spearman. Each resample draws initial states with replacement, the *same* states for every
    policy and for both worlds (the evaluation is paired: policy ``p`` on state ``s`` in imagination and in the real
    env), recomputes the per-policy means and then :func:`ranking_agreement`. Percentile intervals.

    Args:
        imagined_values: `(P, S)` per-policy, per-initial-state values in imagination (e.g. max predicted reward).
        real_values: `(P, S)` the same policies on the same states in the real env, same unit.
        confidence: interval level in (0, 1).
        num_resamples: bootstrap resamples (each costs a few scipy correlations: about 1 ms).
        seed: resampling seed (intervals are deterministic for a given seed).

    Returns:
        ``{metric: {"low": float, "high": float}}`` for ``pearson``, ``spearman``, ``kendall`` and ``mmrv``.
        Resamples where a side is constant (correlation undefined) are left out of the correlations' intervals;
        an interval is NaN when every resample was.

    Raises:
        ValueError: the arrays are not 2-D of the same shape, have fewer than 2 policies or 2 states, hold a
            non-finite value, or ``confidence`` is outside (0, 1).
    """
    imagined = np.asarray(imagined_values, dtype=np.float64)
    real = np.asarray(real_values, dtype=np.float64)
    if imagined.ndim != 2 or imagined.shape != real.shape:
        raise ValueError(f"imagined_values and real_values must both be (policies, states); got shapes "
                         f"{imagined.shape} and {real.shape}")
    if imagined.shape[0] < 2 or imagined.shape[1] < 2:
        raise ValueError(f"need at least 2 policies and 2 initial states, got shape {imagined.shape}")
    if not (np.all(np.isfinite(imagined)) and np.all(np.isfinite(real))):
        raise ValueError("imagined_values and real_values must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    # scipy.stats.bootstrap resamples 1-D observations; here one observation is a state's whole (P,) column in
    # both worlds, so the paired resampling is drawn directly: the same state indices for every policy and world
    rng = np.random.default_rng(seed)
    num_states = imagined.shape[1]
    distribution = np.empty((len(AGREEMENT_METRICS), num_resamples))
    for draw in range(num_resamples):
        states = rng.integers(0, num_states, num_states)
        agreement = ranking_agreement(imagined[:, states].mean(axis=1), real[:, states].mean(axis=1))
        distribution[:, draw] = [agreement[name] for name in AGREEMENT_METRICS]
    tail = (1.0 - confidence) / 2 * 100
    intervals = {}
    for row, name in zip(distribution, AGREEMENT_METRICS):
        finite = row[np.isfinite(row)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        intervals[name] = {"low": float(low), "high": float(high)}
    return intervals
