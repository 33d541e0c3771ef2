"""Cookie Cats: a mobile game's A/B test of moving a gate from level 30 to level 40.

Columns: userid, version (gate_30, the control, or gate_40), sum_gamerounds (rounds played
in the first 14 days after install), retention_1 and retention_7 (played again 1 and 7
days after install: TRUE/FALSE).

- experiments: one, EXPERIMENT_ID, layer 'progression', completed, from TEST_START to
  TEST_END (14 days, the window of sum_gamerounds); variants gate_30 (the control, first)
  and gate_40, weights the observed shares rounded to four decimals so that they sum to 1.
- assignments: every userid (as text), at TEST_START.
- outcomes: sum_gamerounds, and retention_1 and retention_7 as 1.0/0.0.

No customers table: the game's players are not cashback customers. The file has no dates:
TEST_START is a documented stand-in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from cashback.settings import Settings
from pipelines.importers import (
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

COLUMNS = ("userid", "version", "sum_gamerounds", "retention_1", "retention_7")
EXPERIMENT_ID = "cookie_cats_gate"
LAYER = "progression"
TEST_START = datetime(2017, 1, 1, tzinfo=UTC)
TEST_END = TEST_START + timedelta(days=14)
VARIANTS = {"gate_30": "gate at level 30 (control)", "gate_40": "gate at level 40"}
BOOLEANS = {"TRUE": 1.0, "FALSE": 0.0, "True": 1.0, "False": 0.0, "1": 1.0, "0": 0.0}
OUTCOME_METRICS = ("sum_gamerounds", "retention_1", "retention_7")


def load(path: Path, settings: Settings) -> Imported:  # noqa: ARG001 (importer signature)
    """Read the Cookie Cats CSV and derive the experiment, assignments and outcomes.

    Args:
        path: the file.
        settings: unused (the signature of every importer).

    Returns:
        experiments, assignments and outcomes, and a note on the dates.

    Raises:
        CashbackError: when the file is missing, empty, not CSV, lacks a column or has a
            value that does not parse.
    """
    rows = read_csv(path)
    require_columns(path, rows.collect_schema().names(), COLUMNS)
    checks = _checks()
    parsed = rows.pipe(_parse)
    failures, assignments, outcomes, counts = pl.collect_all(
        [
            first_failure(parsed, checks),
            assignments_frame(parsed, EXPERIMENT_ID, TEST_START),
            outcomes_frame(parsed, EXPERIMENT_ID, {m: pl.col(f"__{m}") for m in OUTCOME_METRICS}),
            parsed.group_by("variant").agg(pl.len()),
        ]
    )
    raise_first_failure(path, failures, checks)
    require_rows(path, assignments.height)
    units = dict(zip(counts["variant"], counts["len"], strict=True))
    variants = [Variant(name, policy, units.get(name, 0)) for name, policy in VARIANTS.items()]
    experiment = experiment_frame(
        EXPERIMENT_ID, layer=LAYER, variants=variants, start=TEST_START, end=TEST_END
    )
    return Imported(
        tables={"experiments": experiment, "assignments": assignments, "outcomes": outcomes},
        notes=(
            (
                f"experiment {EXPERIMENT_ID}: the file has no dates; the test is dated "
                f"{TEST_START:%Y-%m-%d} (a stand-in)"
            ),
        ),
    )


def _parse(rows: pl.LazyFrame) -> pl.LazyFrame:
    version = pl.col("version").str.strip_chars()
    return rows.with_columns(
        pl.col("userid").str.strip_chars().alias("customer_id"),
        pl.when(version.is_in(list(VARIANTS))).then(version).alias("variant"),
        pl.col("sum_gamerounds")
        .str.strip_chars()
        .cast(pl.Float64, strict=False)
        .alias("__sum_gamerounds"),
        *(
            pl.col(m).str.strip_chars().replace_strict(BOOLEANS, default=None).alias(f"__{m}")
            for m in OUTCOME_METRICS[1:]
        ),
    )


def _checks() -> list[Parsed]:
    return [
        Parsed("userid", pl.col("userid"), pl.col("customer_id"), "a user id"),
        Parsed("version", pl.col("version"), pl.col("variant"), f"one of {', '.join(VARIANTS)}"),
        Parsed("sum_gamerounds", pl.col("sum_gamerounds"), pl.col("__sum_gamerounds"), "a number"),
        *(Parsed(m, pl.col(m), pl.col(f"__{m}"), "TRUE or FALSE") for m in OUTCOME_METRICS[1:]),
    ]
