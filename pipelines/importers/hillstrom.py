"""Hillstrom (MineThatData e-mail challenge, 2008): customers, one experiment, outcomes.

64,000 customers who had bought in the last twelve months were randomly sent a men's
e-mail, a women's e-mail or nothing; visits, conversions and spend were then tracked for
two weeks. Columns: recency, history_segment, history, mens, womens, zip_code, newbie,
channel, segment, visit, conversion, spend.

- customers: customer_id = the row number (1-based) as text. signup_ts = CAMPAIGN_START
  minus `recency` months: recency counts the months since the last purchase, so the
  customer existed by then (the latest possible sign-up). region = zip_code as in the
  file (Urban, Surburban [sic], Rural); age_band null; acquisition_channel = channel
  lowercased (phone, web, multichannel).
- experiments: one, EXPERIMENT_ID, layer 'email', completed, from CAMPAIGN_START to
  CAMPAIGN_END. Variants control (No E-Mail), womens (Womens E-Mail) and mens (Mens
  E-Mail), the control first; weights are the observed shares rounded to four decimals so
  that they sum to 1; a variant's policy is the segment's label in the file.
- assignments: every customer, at CAMPAIGN_START.
- outcomes: visit and conversion (0/1) and spend (dollars) over the two weeks; plus
  `history`, the dollars spent in the year before the campaign: a pre-experiment
  covariate (for CUPED or uplift models), not an effect of the e-mail.

The file has no dates: CAMPAIGN_START is a documented stand-in (the data set was published
in March 2008) and CAMPAIGN_END is two weeks later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from cashback.settings import Settings
from pipelines.importers import (
    ROW,
    Imported,
    Parsed,
    Variant,
    assignments_frame,
    experiment_frame,
    first_failure,
    outcomes_frame,
    raise_first_failure,
    read_csv,
    require_columns,
    require_rows,
)

COLUMNS = (
    "recency",
    "history",
    "zip_code",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
)
EXPERIMENT_ID = "hillstrom_email"
LAYER = "email"
CAMPAIGN_START = datetime(2008, 3, 1, tzinfo=UTC)
CAMPAIGN_END = CAMPAIGN_START + timedelta(days=14)
VARIANTS = {"No E-Mail": "control", "Womens E-Mail": "womens", "Mens E-Mail": "mens"}
CHANNELS = ("Phone", "Web", "Multichannel")
OUTCOME_METRICS = ("visit", "conversion", "spend", "history")


def load(path: Path, settings: Settings) -> Imported:  # noqa: ARG001 (importer signature)
    """Read the Hillstrom CSV and derive customers, the experiment and its results.

    Args:
        path: the file.
        settings: unused (the signature of every importer).

    Returns:
        customers, experiments, assignments and outcomes, and notes.

    Raises:
        CashbackError: when the file is missing, empty, not CSV, lacks a column or has a
            value that does not parse.
    """
    rows = read_csv(path)
    require_columns(path, rows.collect_schema().names(), COLUMNS)
    checks = _checks()
    parsed = rows.pipe(_parse)
    failures, customers, assignments, outcomes, counts = pl.collect_all(
        [
            first_failure(parsed, checks),
            parsed.pipe(_customers),
            assignments_frame(parsed, EXPERIMENT_ID, CAMPAIGN_START),
            outcomes_frame(parsed, EXPERIMENT_ID, {m: pl.col(f"__{m}") for m in OUTCOME_METRICS}),
            parsed.group_by("variant").agg(pl.len()),
        ]
    )
    raise_first_failure(path, failures, checks)
    require_rows(path, assignments.height)
    units = dict(zip(counts["variant"], counts["len"], strict=True))
    variants = [Variant(name, segment, units.get(name, 0)) for segment, name in VARIANTS.items()]
    experiment = experiment_frame(
        EXPERIMENT_ID, layer=LAYER, variants=variants, start=CAMPAIGN_START, end=CAMPAIGN_END
    )
    return Imported(
        tables={
            "customers": customers,
            "experiments": experiment,
            "assignments": assignments,
            "outcomes": outcomes,
        },
        notes=(
            (
                f"experiment {EXPERIMENT_ID}: the file has no dates; the campaign is dated "
                f"{CAMPAIGN_START:%Y-%m-%d} (a stand-in) and sign-ups are recency months before it"
            ),
            (
                "outcomes metric 'history' is the spend of the year before the campaign "
                "(a pre-experiment covariate)"
            ),
        ),
    )


def _number(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _parse(rows: pl.LazyFrame) -> pl.LazyFrame:
    recency = pl.col("recency").str.strip_chars().cast(pl.Int64, strict=False)
    return rows.with_columns(
        (pl.col(ROW) + 1).cast(pl.String).alias("customer_id"),
        pl.when(recency >= 0).then(recency).alias("months"),
        pl.col("channel")
        .str.strip_chars()
        .replace_strict({c: c.lower() for c in CHANNELS}, default=None)
        .alias("acquisition_channel"),
        pl.col("segment").str.strip_chars().replace_strict(VARIANTS, default=None).alias("variant"),
        *(_number(metric).alias(f"__{metric}") for metric in OUTCOME_METRICS),
    )


def _checks() -> list[Parsed]:
    numbers = [Parsed(m, pl.col(m), pl.col(f"__{m}"), "a number") for m in OUTCOME_METRICS]
    return [
        Parsed("recency", pl.col("recency"), pl.col("months"), "a whole number of months"),
        Parsed("zip_code", pl.col("zip_code"), pl.col("zip_code"), "a zip code class"),
        Parsed(
            "channel",
            pl.col("channel"),
            pl.col("acquisition_channel"),
            f"one of {', '.join(CHANNELS)}",
        ),
        Parsed("segment", pl.col("segment"), pl.col("variant"), f"one of {', '.join(VARIANTS)}"),
        *numbers,
    ]


def _customers(rows: pl.LazyFrame) -> pl.LazyFrame:
    signup = pl.lit(CAMPAIGN_START).dt.offset_by(pl.format("-{}mo", pl.col("months")))
    return rows.sort(ROW).select(
        "customer_id",
        signup.alias("signup_ts"),
        pl.col("zip_code").str.strip_chars().alias("region"),
        pl.lit(None, pl.String).alias("age_band"),
        "acquisition_channel",
    )
