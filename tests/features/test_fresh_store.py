"""The serving claim log gives exactly the training path's fresh features."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from features.customer_frame import FeatureSources
from features.fresh import FRESH_FEATURES, fresh_features
from features.fresh_store import FreshClaimLog

pytestmark = pytest.mark.xdist_group("simulated_worlds")


def test_claim_log_features_equal_the_batch_fresh_features(default_world: Path) -> None:
    # given every claim recorded in the log, and a sample that favours busy customers
    claims = FeatureSources.from_directory(default_world).claims.collect()
    log = FreshClaimLog()
    log.record(claims.iter_rows(named=True))
    sample = pl.concat(
        [claims.sample(200, seed=3), claims.filter(pl.col("customer_id").is_in(
            claims.group_by("customer_id").len().sort("len").tail(5)["customer_id"].implode()
        )).head(100)]
    )  # fmt: skip
    # when both paths compute the fresh features of the sample
    batch = fresh_features(claims.lazy(), sample.lazy()).collect()
    served = pl.DataFrame([log.features(c) for c in sample.iter_rows(named=True)])
    # then they are equal, feature by feature (floats to 1e-9: engines may round differently)
    for name in FRESH_FEATURES:
        assert served[name].to_list() == pytest.approx(batch[name].to_list(), abs=1e-9), name
    assert batch["customer_claims_1h"].max() > 1


def test_recording_is_idempotent_and_a_naive_time_is_refused() -> None:
    log = FreshClaimLog()
    claim = {"claim_id": "k1", "customer_id": "c1", "device_id": None, "ip_hash": None,
             "receipt_hash": "r1", "ts": datetime(2025, 6, 1, 12, tzinfo=UTC)}  # fmt: skip
    log.record([claim, claim])
    later = claim | {"claim_id": "k2", "ts": datetime(2025, 6, 1, 12, 30, tzinfo=UTC)}
    assert log.features(later)["customer_claims_1h"] == 2
    assert log.features(later)["device_claims_1h"] is None
    assert log.features(later)["receipt_seen_before"] is True
    with pytest.raises(ValueError, match="has no time zone"):
        log.features(claim | {"ts": datetime(2025, 6, 1, 12)})  # noqa: DTZ001
