"""Policy-ranking metrics on small cases checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from worldsim.evaluation.ranking_metrics import bootstrap_mean_interval, mmrv, ranking_agreement


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
