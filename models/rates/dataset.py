"""The rates training set: randomized exposures, their outcomes, and features at their start.

Only exposures logged by a randomizing policy (0 < propensity < 1) are learnt from: the
logging policy is confounded by segment, so each exposure is weighted by 1 / propensity,
which gives every rate the same weight in every context. Holdout and experiment exposures
(propensity 1) are left out. Features are the rates_v1 service's as of the exposure's start
(point in time), plus the offer's kind and payout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from cashback.contract import spec
from cashback.errors import CashbackError
from cashback.settings import FeatureSettings
from cashback.tables import present_tables, read_table
from cashback.vocab import OfferKind, Payout
from features.catalog import service_features
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.rates.outcomes import exposure_outcomes

SERVICE = "rates_v1"
OFFER_COLUMNS = tuple(
    [f"offer_{k.value}" for k in OfferKind] + [f"payout_{p.value}" for p in Payout]
)
DEFAULT_OFFER = {"offer_flat": 1.0, "payout_immediate": 1.0}
FRAUD_PRIOR_CASHBACK = 20.0  # shrinks a customer's fraud share towards the program's


@dataclass(frozen=True)
class RateData:
    """Exposures with outcomes and features, split by time.

    Attributes:
        train: exposures before the split.
        test: exposures from the split on (held out).
        split: the time of the split.
        features: model inputs (the service's features, then the offer columns).
    """

    train: pl.DataFrame
    test: pl.DataFrame
    split: datetime
    features: tuple[str, ...]


def model_features(config: FeatureSettings, excluded: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs of the rate models: rates_v1 features (minus excluded ones), offer columns."""
    names = [n for n in service_features(SERVICE, config) if not any(e in n for e in excluded)]
    return (*names, *OFFER_COLUMNS)


def _offer_columns(offers: pl.LazyFrame) -> pl.LazyFrame:
    return offers.select(
        "offer_id",
        *(
            (pl.col("kind") == k.value).cast(pl.Float64).alias(f"offer_{k.value}")
            for k in OfferKind
        ),
        *(
            (pl.col("payout") == p.value).cast(pl.Float64).alias(f"payout_{p.value}")
            for p in Payout
        ),
    )


def optional_table(directory: Path, name: str) -> pl.LazyFrame:
    """A contract table of the directory, or an empty one when the data have none."""
    if name in present_tables(directory):
        return read_table(directory, name)
    return spec(name).empty().lazy()


def rate_data(
    sources: FeatureSources,
    directory: Path,
    end: datetime,
    config: FeatureSettings,
    *,
    excluded: tuple[str, ...],
    test_share: float,
) -> RateData:
    """The randomized exposures with outcomes and features, split by time.

    Raises:
        CashbackError: without randomized exposures, or too few on one side of the split.
    """
    outcomes = exposure_outcomes(
        sources.exposures,
        sources.transactions,
        sources.claims,
        optional_table(directory, "claim_labels"),
        optional_table(directory, "merchants"),
        end,
    ).filter(pl.col("propensity") > 0, pl.col("propensity") < 1)
    frame = (
        training_frame(sources, outcomes, SERVICE, config)
        .join(_offer_columns(sources.offers.lazy()), on="offer_id", how="left")
        .with_columns(pl.col(OFFER_COLUMNS).fill_null(0.0))
        .sort("ts", "exposure_id")
        .collect()
    )
    if frame.height < 1_000:
        msg = (
            f"only {frame.height:,} complete randomized exposures (0 < propensity < 1): rates "
            "are learnt from exposures logged with exploration (simulate with exploration, or "
            "import exposures with their propensities)"
        )
        raise CashbackError(msg)
    split = frame["ts"][int(frame.height * (1 - test_share))]
    train, test = frame.filter(pl.col("ts") < split), frame.filter(pl.col("ts") >= split)
    return RateData(train, test, split, model_features(config, excluded))


def fraud_share(
    sources: FeatureSources, directory: Path, scores_dir: Path, before: datetime
) -> pl.DataFrame:
    """Each customer's expected share of cashback lost to fraud.

    From the fraud model's batch scores when `cashback fraud score` has run (the mean fraud
    probability of the customer's claims, weighted by cashback), else from fraud labels;
    either way shrunk towards the program's share by `FRAUD_PRIOR_CASHBACK` of cashback.

    Returns:
        customer_id, fraud_share, and the source in `fraud_source`.
    """
    claims = sources.claims.filter(pl.col("ts") < before).select(
        "claim_id", "customer_id", "cashback_amount"
    )
    files = sorted(scores_dir.glob("day=*.parquet")) if scores_dir.is_dir() else []
    if files:
        scored = pl.scan_parquet(files).select("claim_id", pl.col("probability").alias("p"))
        source = "fraud model"
    else:
        fraud = (
            optional_table(directory, "claim_labels")
            .filter(pl.col("label") == "fraud")
            .select("claim_id")
        )
        scored = fraud.unique().with_columns(pl.lit(1.0).alias("p"))
        source = "fraud labels"
    per_claim = claims.join(scored, on="claim_id", how="left").with_columns(
        pl.col("p").fill_null(0.0)
    )
    overall = per_claim.select(
        (pl.col("p") * pl.col("cashback_amount")).sum() / pl.col("cashback_amount").sum()
    )
    prior = FRAUD_PRIOR_CASHBACK
    shares = (
        per_claim.group_by("customer_id")
        .agg(
            (pl.col("p") * pl.col("cashback_amount")).sum().alias("lost"),
            pl.col("cashback_amount").sum().alias("paid"),
        )
        .join(overall.rename({"p": "overall"}), how="cross")
        .select(
            "customer_id",
            ((pl.col("lost") + prior * pl.col("overall")) / (pl.col("paid") + prior))
            .fill_nan(0.0)
            .alias("fraud_share"),
        )
        .collect()
    )
    return shares.with_columns(pl.lit(source).alias("fraud_source"))


def matrix(frame: pl.DataFrame, features: tuple[str, ...]) -> np.ndarray:
    """Model inputs as floats (the lifecycle stage as its code)."""
    from models.fraud.dataset import encode  # noqa: PLC0415

    return encode(frame, list(features))
