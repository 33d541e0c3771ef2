"""Response to the rate from randomized exposures: inverse propensity weights undo the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from models.segments.response import randomized_exposures, rate_response

START = datetime(2025, 1, 6, tzinfo=UTC)
CLOSE = datetime(2025, 12, 1, tzinfo=UTC)
LIFT = 10.0  # spend per exposure added by the 5 % rate, for every customer


def _world() -> tuple[pl.LazyFrame, pl.LazyFrame, pl.DataFrame]:
    """Big spenders mostly get 5 %, small spenders mostly 0 %: the policy is confounded.

    Each customer has ten weekly exposures: nine at its policy rate (propensity 0.9), one
    explored (propensity 0.1), one purchase in each. A big spender spends 100 (+10 at 5 %),
    a small one 20 (+10 at 5 %). So spend at 5 % is 70 and at 0 % 60 over the population,
    while the raw mean by rate compares mostly big spenders with mostly small ones.
    """
    exposures, purchases, segments = [], [], []
    for kind, base, policy in (("big", 100.0, 0.05), ("small", 20.0, 0.0)):
        other = 0.0 if policy else 0.05
        for c in range(10):
            customer = f"{kind}-{c}"
            segments.append({"customer_id": customer, "segment": "shoppers"})
            for week in range(10):
                explored = week == c % 10
                rate = other if explored else policy
                ts = START + timedelta(days=7 * week, hours=c)
                exposures.append(
                    {
                        "exposure_id": f"{customer}-{week}",
                        "customer_id": customer,
                        "ts": ts,
                        "valid_until": ts + timedelta(days=7),
                        "rate": rate,
                        "propensity": 0.1 if explored else 0.9,
                    }
                )
                amount = base + (LIFT if rate > 0 else 0.0)
                purchases.append({"customer_id": customer, "ts": ts + timedelta(days=1),
                                  "amount": amount})  # fmt: skip
    # not randomized (an experiment arm), running past the close, and an inactive customer:
    # all left out
    for exposure_id, customer, ts, propensity in (
        ("arm", "big-0", START + timedelta(days=200), 1.0),
        ("late", "big-1", CLOSE - timedelta(days=2), 0.9),
        ("idle", "idle-0", START, 0.1),
    ):
        exposures.append({"exposure_id": exposure_id, "customer_id": customer, "ts": ts,
                          "valid_until": ts + timedelta(days=7), "rate": 0.05,
                          "propensity": propensity})  # fmt: skip
        purchases.append({"customer_id": customer, "ts": ts + timedelta(hours=1),
                          "amount": 5000.0})  # fmt: skip
    segments.append({"customer_id": "idle-0", "segment": "inactive"})
    return pl.LazyFrame(purchases), pl.LazyFrame(exposures), pl.DataFrame(segments)


def test_given_a_confounded_policy_then_weighted_spend_by_rate_is_the_true_one() -> None:
    purchases, exposures, segments = _world()

    # when the randomized exposures are weighted by their inverse propensity
    randomized = randomized_exposures(purchases, exposures, segments, CLOSE)
    by_rate, by_segment = rate_response(randomized)

    # then only the 200 explored-or-policy exposures of active customers count
    assert randomized.height == 200
    spend = dict(zip(by_rate["rate"], by_rate["spend_per_exposure"], strict=True))
    assert spend[0.0] == pytest.approx(60.0)
    assert spend[0.05] == pytest.approx(70.0)
    # while the raw mean by rate is far off (big spenders mostly at 5 %)
    raw = randomized.group_by("rate").agg(pl.col("spend").mean()).sort("rate")["spend"]
    assert raw[1] - raw[0] > 50
    # and the slope is the true 10 per 5 points, relative to the mean spend of 65
    row = by_segment.row(0, named=True)
    assert row["segment"] == "shoppers"
    assert row["randomized_exposures"] == 200
    assert row["rate_response_per_point"] == pytest.approx(2.0)
    assert row["rate_response_relative"] == pytest.approx(2.0 / 65.0)


def test_given_no_randomized_exposures_then_the_response_is_empty() -> None:
    purchases, exposures, segments = _world()
    randomized = randomized_exposures(
        purchases, exposures.with_columns(pl.lit(1.0).alias("propensity")), segments, CLOSE
    )
    by_rate, by_segment = rate_response(randomized)
    assert by_rate.height == 0
    assert by_segment.height == 0
    assert by_segment.columns == [
        "segment",
        "randomized_exposures",
        "rate_response_per_point",
        "rate_response_relative",
    ]
