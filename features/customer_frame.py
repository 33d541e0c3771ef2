"""Customer features for requested (customer, time) rows: the point-in-time contract.

A row at time t gets the batch features of the last daily close at or before t (00:00 UTC
of t's day): only events strictly before that close count. Features are computed for the
requested rows only, never for every customer on every day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cashback.contract import spec
from cashback.settings import FeatureSettings
from cashback.tables import present_tables, read_table
from features.behaviour import behaviour_features
from features.cashback_features import cashback_features
from features.lifecycle import lifecycle_stage, rfm_boundaries, rfm_inputs, rfm_sample, rfm_scores

KEY = "customer_id"
CLOSE = "close_ts"


@dataclass(frozen=True)
class FeatureSources:
    """The contract tables features are computed from."""

    transactions: pl.LazyFrame
    customers: pl.LazyFrame
    claims: pl.LazyFrame
    exposures: pl.LazyFrame
    offers: pl.DataFrame

    @classmethod
    def from_directory(cls, directory: Path) -> FeatureSources:
        """Scan the tables of a data directory (read through the contract).

        Transactions and customers are required; a program without claims, exposures or
        offers (e.g. an imported purchase log) gets them empty, so its cashback and network
        features are zero.
        """
        present = set(present_tables(directory))

        def optional(name: str) -> pl.LazyFrame:
            return read_table(directory, name) if name in present else spec(name).empty().lazy()

        return cls(
            transactions=read_table(directory, "transactions"),
            customers=read_table(directory, "customers"),
            claims=optional("claims"),
            exposures=optional("exposures"),
            offers=optional("offers").collect(),
        )

    def before(self, cutoff: pl.Expr | object) -> FeatureSources:
        """The same sources with only events strictly before `cutoff` (for replay tests)."""
        expr = cutoff if isinstance(cutoff, pl.Expr) else pl.lit(cutoff)
        return FeatureSources(
            transactions=self.transactions.filter(pl.col("ts") < expr),
            customers=self.customers,
            claims=self.claims.filter(pl.col("ts") < expr),
            exposures=self.exposures.filter(pl.col("ts") < expr),
            offers=self.offers,
        )


def close_of(ts: pl.Expr) -> pl.Expr:
    """The last daily close at or before each time (00:00 UTC of its day)."""
    return ts.dt.truncate("1d")


def customer_features(
    sources: FeatureSources, rows: pl.LazyFrame, config: FeatureSettings
) -> pl.LazyFrame:
    """Behaviour, cashback, lifecycle and RFM features for (customer_id, close_ts) rows.

    Args:
        sources: the contract tables.
        rows: requested rows with `customer_id` and `close_ts` (other columns kept).
        config: feature settings.

    Returns:
        `rows` in their order with every customer feature attached.
    """
    keys = rows.select(KEY, CLOSE).unique().sort(KEY, CLOSE)
    behaviour = behaviour_features(sources.transactions, sources.customers, keys, config)
    cashback = cashback_features(sources.claims, sources.exposures, sources.offers, keys)
    closes = keys.select(CLOSE).unique()
    sample = rfm_sample(sources.customers, config.rfm_sample_customers).join(closes, how="cross")
    boundaries = rfm_boundaries(rfm_inputs(sources.transactions, sample))
    features = (
        behaviour.join(cashback, on=[KEY, CLOSE], how="left")
        .with_columns(lifecycle_stage(config))
        .pipe(rfm_scores, boundaries)
    )
    return rows.join(features, on=[KEY, CLOSE], how="left", maintain_order="left")


def features_at(
    sources: FeatureSources, rows: pl.LazyFrame, config: FeatureSettings, *, ts: str = "ts"
) -> pl.LazyFrame:
    """Customer features for (customer_id, ts) rows, as serving would have seen them at ts."""
    return customer_features(sources, rows.with_columns(close_of(pl.col(ts)).alias(CLOSE)), config)
