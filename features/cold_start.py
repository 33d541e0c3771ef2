"""What an entity the online store does not know yet looks like, view by view.

A customer who signed up after the last close, or a device or IP without a claim in the
window, has no row online. Serving then uses the values the training path computes for such
an entity: a customer who signed up at the close with no history (new, nothing bought), a
device or IP with no claim.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import polars as pl

from cashback.contract import spec
from cashback.settings import FeatureSettings
from features.catalog import CLOSE, views
from features.customer_frame import FeatureSources, customer_features
from features.network import ENTITIES, network_features

REFERENCE_CLOSE = datetime(2025, 1, 1, tzinfo=UTC)  # any close: an empty history looks alike
TS = pl.Datetime("us", "UTC")


@cache
def cold_start(config: FeatureSettings) -> dict[str, dict[str, object]]:
    """Per view, the feature values of an entity the store has no row for."""
    customer = pl.DataFrame(
        [{"customer_id": "new", "signup_ts": REFERENCE_CLOSE, "region": None, "age_band": None,
          "acquisition_channel": "unknown"}],
        schema=spec("customers").schema,
    )  # fmt: skip
    empty = FeatureSources(
        transactions=spec("transactions").empty().lazy(),
        customers=customer.lazy(),
        claims=spec("claims").empty().lazy(),
        exposures=spec("exposures").empty().lazy(),
        offers=spec("offers").empty(),
    )
    rows = pl.LazyFrame(
        {"customer_id": ["new"], CLOSE: [REFERENCE_CLOSE]},
        schema={"customer_id": pl.String, CLOSE: TS},
    )
    values = customer_features(empty, rows, config).collect().row(0, named=True)
    catalog = views(config)
    out = {
        name: {f: values[f] for f in view.features}
        for name, view in catalog.items()
        if view.entity == "customer"
    }
    for entity, key in ENTITIES.items():
        rows = pl.LazyFrame(
            {key: ["none"], CLOSE: [REFERENCE_CLOSE]}, schema={key: pl.String, CLOSE: TS}
        )
        frame = network_features(empty.claims, empty.customers, rows, entity).collect()
        view = catalog[f"{entity}_network"]
        out[view.name] = {f: frame.row(0, named=True)[f] for f in view.features}
    return out
