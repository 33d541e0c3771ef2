"""Device/IP, fresh and on-demand features, and the training frame of each service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cashback.contract import spec
from cashback.errors import CashbackError
from cashback.settings import FeatureSettings
from features.catalog import SERVICES, service_features
from features.customer_frame import FeatureSources
from features.fresh import fresh_features, on_demand_features, on_demand_row
from features.network import network_features
from features.training import training_frame

CONFIG = FeatureSettings()
CLOSE = datetime(2025, 6, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def _claim(claim: str, customer: str, when: datetime, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "claim_id": claim, "customer_id": customer, "txn_id": f"t-{claim}", "exposure_id": None,
        "ts": when, "amount": 50.0, "cashback_amount": 1.0, "payout_method": "wallet",
        "device_id": "d1", "ip_hash": "ip1", "receipt_hash": f"r-{claim}",
    }  # fmt: skip
    return row | extra


def _claims(rows: list[dict[str, object]]) -> pl.LazyFrame:
    return pl.DataFrame(rows, schema=spec("claims").schema).lazy()


def _customers(signups: dict[str, datetime]) -> pl.LazyFrame:
    return pl.DataFrame(
        [
            {"customer_id": c, "signup_ts": s, "region": None, "age_band": None,
             "acquisition_channel": "organic"}
            for c, s in signups.items()
        ],
        schema=spec("customers").schema,
    ).lazy()  # fmt: skip


def _device_at(claims: pl.LazyFrame, customers: pl.LazyFrame, close: datetime) -> dict[str, object]:
    rows = pl.LazyFrame({"device_id": ["d1"], "close_ts": [close]}).with_columns(
        pl.col("close_ts").cast(pl.Datetime("us", "UTC"))
    )
    return network_features(claims, customers, rows, "device").collect().row(0, named=True)


def test_device_features_count_accounts_and_claims_strictly_before_the_close() -> None:
    # given three accounts on one device, the youngest signed up 5 days before the close
    customers = _customers(
        {
            "c1": CLOSE - timedelta(days=400),
            "c2": CLOSE - timedelta(days=60),
            "c3": CLOSE - timedelta(days=5),
            "c4": CLOSE - timedelta(days=1),
        }
    )
    claims = _claims(
        [
            _claim("k1", "c1", CLOSE - timedelta(days=20)),
            _claim("k2", "c2", CLOSE - timedelta(days=3)),
            _claim("k3", "c3", CLOSE - timedelta(hours=2)),
            _claim("k4", "c3", CLOSE - US),
            _claim("k5", "c4", CLOSE),  # at the close: belongs to the next day
            _claim("k6", "c1", CLOSE - timedelta(days=31)),  # outside 30 days
        ]
    )
    f = _device_at(claims, customers, CLOSE)
    assert f["device_customers_30d"] == 3
    assert f["device_claims_24h"] == 2
    assert f["device_claims_7d"] == 3
    assert f["device_youngest_account_days"] == pytest.approx(5.0)
    # and the next day the claim at the close counts
    assert _device_at(claims, customers, CLOSE + timedelta(days=1))["device_customers_30d"] == 4


def test_fresh_features_are_exact_at_the_claim_time_and_include_the_claim() -> None:
    t = datetime(2025, 6, 1, 15, tzinfo=UTC)
    history = [
        _claim("k1", "c1", t - timedelta(hours=1) - US, receipt_hash="r-x"),  # just outside
        _claim("k2", "c1", t - timedelta(minutes=30), device_id="d2"),
        _claim("k3", "c2", t - timedelta(minutes=10), ip_hash="ip9"),
    ]
    now = _claim("k4", "c1", t, receipt_hash="r-x")
    later = _claim("k5", "c1", t + timedelta(minutes=1))  # after t: invisible
    claims = _claims([*history, now, later])
    rows = _claims([now])
    f = fresh_features(claims, rows).collect().row(0, named=True)
    assert f["customer_claims_1h"] == 2  # k2 and this one
    assert f["device_claims_1h"] == 2  # k3 on d1 and this one
    assert f["ip_claims_1h"] == 2  # k2 on ip1 and this one
    assert f["minutes_since_last_claim"] == pytest.approx(30.0)
    assert f["receipt_seen_before"] is True


def test_a_first_claim_has_no_previous_claim_and_an_unseen_receipt() -> None:
    first = _claim("k1", "c1", CLOSE)
    f = fresh_features(_claims([first]), _claims([first])).collect().row(0, named=True)
    assert f["customer_claims_1h"] == 1
    assert f["minutes_since_last_claim"] is None
    assert f["receipt_seen_before"] is False


@pytest.mark.parametrize("basket", [40.0, None, 0.0])
def test_on_demand_features_agree_between_the_batch_and_the_serving_paths(
    basket: float | None,
) -> None:
    claim = _claim(
        "k1", "c1", datetime(2025, 6, 1, 21, 30, tzinfo=UTC), amount=80.0, cashback_amount=2.4
    )
    frame = _claims([claim]).with_columns(pl.lit(basket, dtype=pl.Float64).alias("avg_basket_90d"))
    batch = on_demand_features(frame).collect().row(0, named=True)
    single = on_demand_row(claim, basket)
    assert {k: batch[k] for k in single} == single
    assert single["hour_of_day"] == 21
    assert single["cashback_share"] == pytest.approx(0.03)


def test_unknown_service_and_missing_columns_are_clear_errors(default_world: Path) -> None:
    sources = FeatureSources.from_directory(default_world)
    rows = sources.claims.head(5)
    with pytest.raises(CashbackError, match="unknown feature service 'fraud_v9'; known: fraud_v1"):
        training_frame(sources, rows, "fraud_v9", CONFIG)
    with pytest.raises(CashbackError, match="missing: device_id"):
        training_frame(sources, rows.drop("device_id"), "fraud_v1", CONFIG)


@pytest.mark.xdist_group("simulated_worlds")
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_training_frame_returns_each_services_features_for_the_rows_in_order(
    service: str, default_world: Path
) -> None:
    sources = FeatureSources.from_directory(default_world)
    rows = sources.claims.filter(pl.col("ts").dt.month() == 8).head(3000).collect()
    frame = training_frame(sources, rows.lazy(), service, CONFIG).collect()
    features = service_features(service, CONFIG)
    assert frame["claim_id"].to_list() == rows["claim_id"].to_list()
    assert frame.columns == [*rows.columns, "close_ts", *features]
    assert frame.height == rows.height
    assert frame["purchases_365d"].null_count() == 0
