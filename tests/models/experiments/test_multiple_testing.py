"""Holm and Benjamini-Hochberg adjustments against statsmodels' multipletests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.experiments.multiple_testing import Method, adjust_p_values
from tests.models.experiments.references import run_reference

METHODS: tuple[tuple[Method, str], ...] = (("holm", "holm"), ("bh", "fdr_bh"))

MULTIPLETESTS = """
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    result = {}
    for name, p_values in payload["cases"].items():
        for method in ("holm", "fdr_bh"):
            reject, adjusted, _, _ = multipletests(np.asarray(p_values), alpha=payload["alpha"],
                                                   method=method)
            result[f"{name}/{method}"] = {"adjusted": adjusted.tolist(),
                                          "reject": reject.tolist()}
"""


def test_holm_and_bh_match_statsmodels(tmp_path: Path) -> None:
    # given p-values of 4 metrics x 3 variants, and edge cases (ties, 0, 1, a single one)
    rng = np.random.default_rng(4)
    cases = {
        "metrics_x_variants": np.r_[rng.uniform(0, 0.05, 5), rng.uniform(0, 1, 7)].reshape(4, 3),
        "ties": np.array([0.01, 0.01, 0.04, 0.04, 0.04, 0.2, 1.0, 0.0]),
        "single": np.array([0.03]),
        "many_small": rng.uniform(0, 0.01, 40),
    }
    alpha = 0.05
    # when adjusting them here and with statsmodels
    payload = {"alpha": alpha, "cases": {k: v.ravel().tolist() for k, v in cases.items()}}
    reference = run_reference(MULTIPLETESTS, payload, tmp_path)
    for name, p_values in cases.items():
        for method, theirs in METHODS:
            ours = adjust_p_values(p_values, method=method, alpha=alpha)
            expected = reference[f"{name}/{theirs}"]
            # then adjusted p-values and rejections agree, in the input's shape
            assert ours.adjusted.shape == p_values.shape
            np.testing.assert_allclose(ours.adjusted.ravel(), expected["adjusted"], atol=1e-12)
            np.testing.assert_array_equal(ours.rejected.ravel(), expected["reject"])


def test_holm_by_hand() -> None:
    # given three p-values
    result = adjust_p_values([0.01, 0.04, 0.03], method="holm")
    # then they are multiplied by 3, 2, 1 in ascending order, with a running maximum
    np.testing.assert_allclose(result.adjusted, [0.03, 0.06, 0.06])
    np.testing.assert_array_equal(result.rejected, [True, False, False])


def test_bh_by_hand() -> None:
    # given four p-values
    result = adjust_p_values([0.01, 0.02, 0.03, 0.5], method="bh")
    # then p_(i) m / i, with a running minimum from the largest
    np.testing.assert_allclose(result.adjusted, [0.04, 0.04, 0.04, 0.5])
    assert result.rejected.sum() == 3


@pytest.mark.parametrize("p_values", [[], [0.1, 1.2], [np.nan, 0.1], [-0.1]])
def test_p_values_outside_0_1_are_refused(p_values: list[float]) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values(p_values, method="bh")


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        adjust_p_values([0.1], method="bonferroni")  # type: ignore[arg-type]
