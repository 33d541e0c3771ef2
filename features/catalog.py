"""What features exist: views per entity, and one service per model version.

The schemas are read off the feature computations themselves (run lazily on empty tables),
so the Feast definitions, the batch tables and the training frame cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import polars as pl

from cashback.contract import spec
from cashback.errors import CashbackError
from cashback.settings import FeatureSettings
from features.behaviour import behaviour_features
from features.cashback_features import cashback_features
from features.fresh import FRESH_FEATURES, ON_DEMAND_FEATURES
from features.lifecycle import RFM_COLUMNS
from features.network import ENTITIES, network_features

CLOSE = "close_ts"
TS = pl.Datetime("us", "UTC")
FRESH = "claim_fresh"
ON_DEMAND = "claim_on_demand"
SCORES_VIEW = "customer_scores"


@dataclass(frozen=True)
class View:
    """A batch feature view: one entity, its key, and the features with their dtypes."""

    name: str
    entity: str
    key: str
    schema: pl.Schema

    @property
    def features(self) -> list[str]:
        """Feature names, in order."""
        return list(self.schema.names())


SERVICES: dict[str, tuple[str, ...]] = {
    "fraud_v1": (
        "customer_behaviour",
        "customer_cashback",
        "customer_lifecycle",
        "device_network",
        "ip_network",
        FRESH,
        ON_DEMAND,
    ),
    "churn_v1": ("customer_behaviour", "customer_cashback", "customer_lifecycle"),
    "rates_v1": ("customer_behaviour", "customer_cashback", "customer_lifecycle"),
    "segments_v1": ("customer_behaviour", "customer_lifecycle"),
}
# services that serve model outputs (read online; not computable from the events)
OUTPUT_SERVICES: dict[str, tuple[str, ...]] = {
    "customers_v1": ("customer_lifecycle", SCORES_VIEW),
}


def _empty(name: str) -> pl.LazyFrame:
    return spec(name).empty().lazy()


def _rows(key: str) -> pl.LazyFrame:
    return pl.LazyFrame(schema={key: pl.String, CLOSE: TS})


def _feature_schema(frame: pl.LazyFrame, drop: list[str]) -> pl.Schema:
    schema = frame.collect_schema()
    return pl.Schema({n: t for n, t in schema.items() if n not in drop})


@cache
def views(config: FeatureSettings) -> dict[str, View]:
    """Every batch feature view under these settings."""
    rows = _rows("customer_id")
    behaviour = behaviour_features(_empty("transactions"), _empty("customers"), rows, config)
    cashback = cashback_features(
        _empty("claims"), _empty("exposures"), spec("offers").empty(), rows
    )
    lifecycle = pl.Schema({"lifecycle": pl.String} | dict.fromkeys(RFM_COLUMNS, pl.Int64))
    keys = ["customer_id", CLOSE]
    out = {
        "customer_behaviour": View(
            "customer_behaviour", "customer", "customer_id", _feature_schema(behaviour, keys)
        ),
        "customer_cashback": View(
            "customer_cashback", "customer", "customer_id", _feature_schema(cashback, keys)
        ),
        "customer_lifecycle": View("customer_lifecycle", "customer", "customer_id", lifecycle),
    }
    for entity, key in ENTITIES.items():
        frame = network_features(_empty("claims"), _empty("customers"), _rows(key), entity)
        out[f"{entity}_network"] = View(
            f"{entity}_network", entity, key, _feature_schema(frame, [key, CLOSE])
        )
    return out


def output_views() -> dict[str, View]:
    """Views of model outputs (written by scoring jobs, not computed from the events).

    `customer_scores` (`cashback customers score`): the champion models' segment, churn
    probability, CLV and expected days to the next purchase, per customer.
    """
    scores = pl.Schema(
        {
            "segment": pl.String,
            "churn_probability": pl.Float64,
            "clv": pl.Float64,
            "next_purchase_days": pl.Float64,
        }
    )
    return {SCORES_VIEW: View(SCORES_VIEW, "customer", "customer_id", scores)}


def service_views(service: str) -> tuple[str, ...]:
    """The views (and fresh / on-demand groups) of a feature service.

    Raises:
        CashbackError: naming the known services when `service` is not one.
    """
    known = SERVICES | OUTPUT_SERVICES
    try:
        return known[service]
    except KeyError:
        msg = f"unknown feature service {service!r}; known: {', '.join(known)}"
        raise CashbackError(msg) from None


def service_features(service: str, config: FeatureSettings) -> list[str]:
    """Every feature name a service returns, in order."""
    names: list[str] = []
    all_views = views(config) | output_views()
    for view in service_views(service):
        if view == FRESH:
            names += FRESH_FEATURES
        elif view == ON_DEMAND:
            names += ON_DEMAND_FEATURES
        else:
            names += all_views[view].features
    return names
