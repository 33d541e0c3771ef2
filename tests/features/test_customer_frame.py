"""Customer features are point in time: the close before t, nothing at or after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cashback.contract import spec
from cashback.settings import FeatureSettings
from features.customer_frame import FeatureSources, customer_features, features_at

pytestmark = pytest.mark.xdist_group("simulated_worlds")
CONFIG = FeatureSettings()
CLOSE = datetime(2025, 6, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def _txn(
    txn: str, customer: str, when: datetime, amount: float, **extra: object
) -> dict[str, object]:
    row = {
        "txn_id": txn,
        "customer_id": customer,
        "merchant_id": "m1",
        "ts": when,
        "amount": amount,
        "category": "fashion",
        "channel": "online",
        "original_txn_id": None,
    }
    return row | extra


def _sources(
    transactions: list[dict[str, object]], claims: list[dict[str, object]] | None = None
) -> FeatureSources:
    customers = pl.DataFrame(
        [
            {"customer_id": c, "signup_ts": datetime(2024, 1, 1, tzinfo=UTC), "region": None,
             "age_band": None, "acquisition_channel": "organic"}
            for c in ("c1", "c2")
        ],
        schema=spec("customers").schema,
    )  # fmt: skip
    offers = pl.DataFrame(
        [
            {"offer_id": "deferred-30", "kind": "flat", "rate": 0.05, "tiers": None,
             "category": None, "start_ts": None, "end_ts": None, "payout": "deferred",
             "validation_days": 30},
        ],
        schema=spec("offers").schema,
    )  # fmt: skip
    exposures = pl.DataFrame(
        [
            {"exposure_id": "e1", "customer_id": "c1", "ts": datetime(2025, 5, 1, tzinfo=UTC),
             "valid_until": datetime(2025, 5, 8, tzinfo=UTC), "offer_id": "deferred-30",
             "rate": 0.05, "policy_version": "p", "experiment_id": None, "variant": None,
             "propensity": 1.0},
        ],
        schema=spec("exposures").schema,
    )  # fmt: skip
    return FeatureSources(
        transactions=pl.DataFrame(transactions, schema=spec("transactions").schema).lazy(),
        customers=customers.lazy(),
        claims=pl.DataFrame(claims or [], schema=spec("claims").schema).lazy(),
        exposures=exposures.lazy(),
        offers=offers,
    )


def _at(sources: FeatureSources, when: datetime, customer: str = "c1") -> dict[str, object]:
    rows = pl.LazyFrame({"customer_id": [customer], "ts": [when]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))
    )
    return features_at(sources, rows, CONFIG).collect().row(0, named=True)


def test_an_event_at_or_after_the_close_changes_no_feature_as_of_that_day() -> None:
    # given a customer with one purchase ten days before the close
    base = [_txn("t1", "c1", CLOSE - timedelta(days=10), 50.0)]
    before = _at(_sources(base), CLOSE + timedelta(hours=15))
    # when purchases happen exactly at the close and later that day
    later = [
        *base,
        _txn("t2", "c1", CLOSE, 70.0),
        _txn("t3", "c1", CLOSE + timedelta(hours=14), 90.0),
    ]
    after = _at(_sources(later), CLOSE + timedelta(hours=15))
    # then every feature as of that afternoon is unchanged
    assert after == before
    assert after["purchases_30d"] == 1
    assert after["spend_30d"] == 50.0


def test_an_event_just_before_a_close_counts_from_that_close_on() -> None:
    # given a purchase one microsecond before the close
    sources = _sources([_txn("t1", "c1", CLOSE - US, 80.0)])
    # then it is invisible the day before and visible as of the close
    day_before = _at(sources, CLOSE - timedelta(hours=1))
    as_of_close = _at(sources, CLOSE)
    assert day_before["purchases_7d"] == 0
    assert as_of_close["purchases_7d"] == 1
    assert as_of_close["spend_7d"] == 80.0
    assert as_of_close["days_since_last_purchase"] == pytest.approx(1e-6 / 86_400)


def test_windows_count_only_their_days_and_returns_feed_the_return_rate() -> None:
    sources = _sources(
        [
            _txn("t1", "c1", CLOSE - timedelta(days=100), 100.0, category="home"),
            _txn("t2", "c1", CLOSE - timedelta(days=20), 60.0),
            _txn("t3", "c1", CLOSE - timedelta(days=5), 40.0, channel="app"),
            _txn("r1", "c1", CLOSE - timedelta(days=3), -10.0, original_txn_id="t3"),
        ]
    )
    f = _at(sources, CLOSE)
    assert (f["purchases_7d"], f["purchases_30d"], f["purchases_90d"], f["purchases_365d"]) == (
        1,
        2,
        2,
        3,
    )
    assert f["spend_365d"] == 200.0
    assert f["avg_basket_30d"] == pytest.approx(50.0)
    assert f["categories_365d"] == 2
    assert f["return_rate_30d"] == pytest.approx(10 / 100)
    assert f["share_fashion_90d"] == pytest.approx(1.0)
    assert f["share_app_90d"] == pytest.approx(0.5)
    assert f["days_since_last_purchase"] == pytest.approx(5.0)
    # trend: 100 spent in the last 30 days, nothing in the 30 before
    assert f["spend_trend_30d"] is None


def _claim(
    claim: str, when: datetime, cashback: float, exposure: str | None, method: str = "wallet"
) -> dict[str, object]:
    return {
        "claim_id": claim, "customer_id": "c1", "txn_id": "t1", "exposure_id": exposure,
        "ts": when, "amount": 100.0, "cashback_amount": cashback, "payout_method": method,
        "device_id": "d1", "ip_hash": None, "receipt_hash": None,
    }  # fmt: skip


def test_deferred_cashback_is_pending_until_its_validation_period_ends() -> None:
    purchase = [_txn("t1", "c1", datetime(2025, 5, 2, tzinfo=UTC), 100.0)]
    claims = [
        _claim("k1", datetime(2025, 5, 2, 1, tzinfo=UTC), 5.0, "e1"),
        _claim("k2", datetime(2025, 5, 3, tzinfo=UTC), 1.0, None, method="points"),
    ]
    sources = _sources(purchase, claims)
    inside = _at(sources, datetime(2025, 5, 20, tzinfo=UTC))
    after = _at(sources, datetime(2025, 6, 5, tzinfo=UTC))
    assert inside["deferred_pending"] == 5.0
    assert after["deferred_pending"] == 0.0
    assert inside["claims_30d"] == 2
    assert inside["cashback_30d"] == 6.0
    assert inside["share_wallet_365d"] == pytest.approx(5 / 6)
    assert inside["last_rate"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("purchases_days_ago", "signup_days_ago", "stage"),
    [
        ([3], 10, "new"),
        ([], 100, "inactive"),
        ([200], 400, "inactive"),
        (list(range(100, 170, 7)), 400, "at_risk"),
        ([2, 9, 16, 23, 30], 400, "regular"),
    ],
)
def test_lifecycle_stage_follows_the_documented_rules(
    purchases_days_ago: list[int], signup_days_ago: int, stage: str
) -> None:
    sources = _sources(
        [
            _txn(f"t{i}", "c1", CLOSE - timedelta(days=d), 10.0)
            for i, d in enumerate(purchases_days_ago)
        ]
    )
    customers = sources.customers.with_columns(
        pl.lit(CLOSE - timedelta(days=signup_days_ago))
        .cast(pl.Datetime("us", "UTC"))
        .alias("signup_ts")
    )
    sources = FeatureSources(
        sources.transactions, customers, sources.claims, sources.exposures, sources.offers
    )
    assert _at(sources, CLOSE)["lifecycle"] == stage


def test_features_match_an_independent_computation_on_the_simulated_world(
    default_world: Path,
) -> None:
    # given random (customer, time) rows at random times of day
    sources = FeatureSources.from_directory(default_world)
    rng = np.random.default_rng(0)
    customers = sources.customers.select("customer_id").collect()["customer_id"]
    picks = customers.gather(rng.integers(0, customers.len(), 40))
    start = datetime(2025, 3, 1, tzinfo=UTC)
    times = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 250 * 86_400, 40)]
    rows = pl.LazyFrame({"customer_id": picks, "ts": times}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))
    )
    # when the features are computed for those rows
    got = features_at(sources, rows, CONFIG).collect()
    # then spend and purchases over 30 days equal a plain filter of the events before the close
    txns = sources.transactions.filter(pl.col("amount") > 0).collect()
    for row in got.iter_rows(named=True):
        close = row["close_ts"]
        window = txns.filter(
            pl.col("customer_id") == row["customer_id"],
            pl.col("ts") < close,
            pl.col("ts") >= close - timedelta(days=30),
        )
        assert row["purchases_30d"] == window.height
        assert row["spend_30d"] == pytest.approx(window["amount"].sum(), abs=1e-6)


def test_rfm_quintiles_rank_customers_within_their_close(default_world: Path) -> None:
    sources = FeatureSources.from_directory(default_world)
    rows = sources.customers.select("customer_id").with_columns(
        pl.lit(datetime(2025, 9, 1, tzinfo=UTC)).cast(pl.Datetime("us", "UTC")).alias("close_ts")
    )
    f = customer_features(sources, rows, CONFIG).collect()
    active = f.filter(pl.col("purchases_365d") > 0)
    # every score appears about a fifth of the time among buyers, and 0 only for non-buyers
    shares = active.group_by("rfm_m").len().with_columns(pl.col("len") / active.height)
    assert set(shares["rfm_m"]) == {1, 2, 3, 4, 5}
    assert shares["len"].min() > 0.15
    assert (f.filter(pl.col("purchases_365d") == 0)["rfm_m"] == 0).all()
    # higher monetary scores mean higher spend
    means = active.group_by("rfm_m").agg(pl.col("spend_365d").mean()).sort("rfm_m")
    assert means["spend_365d"].is_sorted()
