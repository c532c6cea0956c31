"""Policy-ranking metrics on small cases checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from worldsim.evaluation.ranking_metrics import agreement_intervals, bootstrap_mean_interval, mmrv, ranking_agreement


def test_mmrv_is_zero_for_the_same_order_whatever_the_scale():
    assert mmrv([0.1, 0.2, 0.9], [0.3, 0.5, 0.6]) == 0.0


def test_mmrv_by_hand_and_argument_order():
    real = [0.1, 0.5, 0.6]
    imagined = [0.2, 0.9, 0.4]  # policies 1 and 2 swapped (real gap 0.1); 0 stays lowest
    # i=0: no violation -> 0; i=1: violates with 2 -> |0.5-0.6| = 0.1; i=2: same pair -> 0.1
    assert mmrv(imagined, real) == pytest.approx((0 + 0.1 + 0.1) / 3)
    # swapping the arguments takes the gaps from the imagined values instead: |0.9 - 0.4| = 0.5
    assert mmrv(real, imagined) == pytest.approx((0 + 0.5 + 0.5) / 3)


def test_mmrv_takes_the_largest_violation_per_policy():
    real = [0.0, 0.4, 1.0]
    imagined = [3.0, 2.0, 1.0]  # fully reversed
    # i=0: max(|0-0.4|, |0-1|) = 1; i=1: max(0.4, 0.6) = 0.6; i=2: max(1, 0.6) = 1
    assert mmrv(imagined, real) == pytest.approx((1.0 + 0.6 + 1.0) / 3)


def test_ranking_agreement_values():
    result = ranking_agreement([1, 2, 3, 4], [10, 20, 30, 40])
    assert result["pearson"] == pytest.approx(1.0)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["kendall"] == pytest.approx(1.0)
    assert result["mmrv"] == 0.0 and result["num_policies"] == 4
    reversed_ = ranking_agreement([4, 3, 2, 1], [10, 20, 30, 40])
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["kendall"] == pytest.approx(-1.0)
    # one adjacent swap among 4: Kendall (C - D) / 6 = (5 - 1) / 6
    swapped = ranking_agreement([1, 3, 2, 4], [10, 20, 30, 40])
    assert swapped["kendall"] == pytest.approx(4 / 6)
    assert swapped["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    # a tie in imagination counts once per pair, against the policy that is really worse:
    # i=0: max(|1-2|, |1-3|) = 2; i=1: |2-3| = 1; i=2: 0
    constant = ranking_agreement([1, 1, 1], [1, 2, 3])
    assert math.isnan(constant["spearman"]) and constant["mmrv"] == pytest.approx((2 + 1 + 0) / 3)


@pytest.mark.parametrize("imagined, real, message", [
    ([1, 2], [1, 2, 3], "match"),
    ([1], [1], "at least 2"),
    ([1, float("nan")], [1, 2], "finite"),
    ([[1, 2]], [[1, 2]], "1-D"),
])
def test_ranking_metrics_reject_bad_input(imagined, real, message):
    with pytest.raises(ValueError, match=message):
        mmrv(imagined, real)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = rng.uniform(size=20)
    large = rng.uniform(size=2000)
    mean, low, high = bootstrap_mean_interval(small)
    assert low < mean < high
    _, low_large, high_large = bootstrap_mean_interval(large)
    assert high_large - low_large < (high - low) / 3
    assert bootstrap_mean_interval([1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert bootstrap_mean_interval(small, seed=3) == bootstrap_mean_interval(small, seed=3)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_interval(small, confidence=1.5)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_interval([])


def test_agreement_intervals_resample_states_paired():
    # imagination equal to reality on every state: every resample ranks perfectly
    real = np.array([[0.1, 0.2, 0.3, 0.2], [0.5, 0.4, 0.6, 0.5], [0.9, 0.8, 0.7, 0.9]])
    perfect = agreement_intervals(real, real, num_resamples=200)
    for name in ("pearson", "spearman", "kendall"):
        assert perfect[name]["low"] == pytest.approx(1.0) and perfect[name]["high"] == pytest.approx(1.0), name
    assert perfect["mmrv"] == {"low": 0.0, "high": 0.0}
    # policies 0 and 1 swapped in imagination on every state: every resample has exactly that one violation, whose
    # MMRV is (|gap| + |gap|) / 3 policies of that resample's real means; Spearman is 0.5 every time
    swapped = real[[1, 0, 2]]
    intervals = agreement_intervals(swapped, real, num_resamples=200)
    assert intervals["spearman"]["low"] == pytest.approx(0.5) and intervals["spearman"]["high"] == pytest.approx(0.5)
    gaps = np.abs(real[1] - real[0])  # the real gap is 0.3-0.4 on every state
    assert 2 * gaps.min() / 3 - 1e-9 <= intervals["mmrv"]["low"] <= intervals["mmrv"]["high"] <= 2 * gaps.max() / 3 + 1e-9
    # noisy imagination: the interval holds the full-sample estimate and is reproducible with a seed
    rng = np.random.default_rng(0)
    skill = np.linspace(0, 1, 6)[:, None]
    real_noisy = skill + rng.normal(0, 0.5, (6, 40))
    imagined_noisy = skill + rng.normal(0, 0.5, (6, 40))
    point = ranking_agreement(imagined_noisy.mean(1), real_noisy.mean(1))
    noisy = agreement_intervals(imagined_noisy, real_noisy, num_resamples=300, seed=1)
    for name in ("pearson", "spearman", "kendall", "mmrv"):
        assert noisy[name]["low"] <= point[name] <= noisy[name]["high"], name
    assert noisy["spearman"]["high"] - noisy["spearman"]["low"] > 0.1
    assert agreement_intervals(imagined_noisy, real_noisy, num_resamples=50, seed=2) == \
        agreement_intervals(imagined_noisy, real_noisy, num_resamples=50, seed=2)


@pytest.mark.parametrize("imagined, real, message", [
    (np.zeros((3, 4)), np.zeros((3, 5)), "shapes"),
    (np.zeros(4), np.zeros(4), "shapes"),
    (np.zeros((1, 4)), np.zeros((1, 4)), "at least 2 policies"),
    (np.full((2, 4), np.nan), np.zeros((2, 4)), "finite"),
])
def test_agreement_intervals_reject_bad_input(imagined, real, message):
    with pytest.raises(ValueError, match=message):
        agreement_intervals(imagined, real)
