"""The training frame: for requested entity rows at times t, exactly what serving saw at t.

Batch features come from the last daily close at or before t; fresh claim features are exact
at t; on-demand features are computed from the request and the batch features. Only the
requested rows are computed.
"""

from __future__ import annotations

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import FeatureSettings
from features.catalog import (
    FRESH,
    ON_DEMAND,
    OUTPUT_SERVICES,
    service_features,
    service_views,
    views,
)
from features.customer_frame import CLOSE, FeatureSources, close_of, customer_features
from features.fresh import FRESH_FEATURES, fresh_features, on_demand_features
from features.network import ENTITIES, network_features

CLAIM_COLUMNS = ("device_id", "ip_hash", "receipt_hash", "amount", "cashback_amount")


def _require(rows: pl.LazyFrame, columns: list[str], service: str) -> None:
    present = set(rows.collect_schema().names())
    missing = [c for c in columns if c not in present]
    if missing:
        msg = (
            f"feature service {service} needs entity rows with {', '.join(columns)}; "
            f"missing: {', '.join(missing)}"
        )
        raise CashbackError(msg)


def training_frame(
    sources: FeatureSources,
    entity_rows: pl.LazyFrame,
    service: str,
    config: FeatureSettings,
) -> pl.LazyFrame:
    """Point-in-time features of a service for each entity row.

    Args:
        sources: the contract tables.
        entity_rows: rows with `customer_id` and `ts` (UTC); for services with claim
            features also `device_id`, `ip_hash`, `receipt_hash`, `amount` and
            `cashback_amount` (a claims table works as is). Other columns are kept.
        service: a feature service name (fraud_v1, churn_v1, rates_v1, segments_v1).
        config: feature settings.

    Returns:
        The rows, in order, with `close_ts` and the service's features.

    Raises:
        CashbackError: for an unknown service or rows lacking a needed column.
    """
    groups = service_views(service)
    if service in OUTPUT_SERVICES:
        msg = (
            f"feature service {service} serves model outputs: read it from the online store "
            "(it has no point-in-time history to train on)"
        )
        raise CashbackError(msg)
    claim_level = FRESH in groups or ON_DEMAND in groups
    _require(entity_rows, ["customer_id", "ts", *(CLAIM_COLUMNS if claim_level else ())], service)
    # the requested rows are materialized once: every feature group below starts from them,
    # independently, so no group's plan is computed twice
    rows = entity_rows.with_columns(close_of(pl.col("ts")).alias(CLOSE)).collect().lazy()
    frame = customer_features(sources, rows, config)
    for entity, key in ENTITIES.items():
        if f"{entity}_network" in groups:
            keys = rows.select(key, CLOSE).unique()
            network = network_features(sources.claims, sources.customers, keys, entity)
            frame = frame.join(network, on=[key, CLOSE], how="left", maintain_order="left")
    if FRESH in groups:
        fresh = fresh_features(sources.claims, rows.with_row_index("__row")).select(
            "__row", *FRESH_FEATURES
        )
        frame = (
            frame.with_row_index("__row")
            .join(fresh, on="__row", how="left", maintain_order="left")
            .drop("__row")
        )
    if ON_DEMAND in groups:
        frame = on_demand_features(frame)
    wanted = service_features(service, config)
    every_feature = {f for v in views(config).values() for f in v.features}
    extra = [c for c in frame.collect_schema().names() if c in every_feature and c not in wanted]
    return frame.drop(extra)
