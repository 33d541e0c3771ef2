"""Sample ratio mismatch: a known imbalance is flagged, a fair split is not."""

from __future__ import annotations

import pytest
from scipy import stats

from models.experiments.srm import check_srm


def test_a_known_imbalance_is_flagged() -> None:
    # given 5,000 vs 5,500 customers in a 50/50 design
    # when checking the sample ratio
    srm = check_srm([5000, 5500], [0.5, 0.5])
    # then chi-square = 2 x 250^2 / 5250 with 1 df, p about 1e-6: a mismatch
    assert srm.expected == (5250.0, 5250.0)
    assert srm.statistic == pytest.approx(2 * 250**2 / 5250)
    assert srm.df == 1
    assert srm.p_value == pytest.approx(stats.chi2.sf(2 * 250**2 / 5250, 1))
    assert srm.p_value < 1e-5
    assert srm.mismatch


def test_a_split_matching_uneven_weights_is_not_flagged() -> None:
    # given 1,010 / 2,980 / 6,010 customers for weights 1 : 3 : 6 (not normalized)
    srm = check_srm([1010, 2980, 6010], [1, 3, 6])
    # then the expected counts follow the weights and no mismatch is flagged
    assert srm.expected == pytest.approx((1000.0, 3000.0, 6000.0))
    reference = stats.chisquare([1010, 2980, 6010], [1000, 3000, 6000])
    assert srm.p_value == pytest.approx(reference.pvalue)
    assert srm.df == 2
    assert not srm.mismatch


def test_the_threshold_decides_the_flag() -> None:
    # given a mild imbalance (p about 0.0031)
    srm = check_srm([5000, 5300], [0.5, 0.5])
    # then it is not a mismatch at 0.001, but is at 0.01
    assert 0.001 < srm.p_value < 0.01
    assert not srm.mismatch
    assert check_srm([5000, 5300], [0.5, 0.5], threshold=0.01).mismatch


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([10, 10], [0.5]), ([10, 10], [0.5, 0.0]), ([-1, 10], [0.5, 0.5]), ([0, 0], [1, 1])],
)
def test_inconsistent_inputs_are_refused(observed: list[int], weights: list[float]) -> None:
    # given counts and weights that do not describe a design, when checking, then refused
    with pytest.raises(ValueError, match=r"count|weight"):
        check_srm(observed, weights)
