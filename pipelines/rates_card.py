"""`cashback rates card`: the last rates run's segment x category rate card, and its fairness.

The card is what `cashback train rates` wrote (`rate_card.parquet`): per segment and
category, the rate an engine can use without calling the API, the segment's customers, and
the cell's expected incremental margin and cashback (each customer counts in a category in
proportion to their share of spend there). Beside it, the average rate by each attribute the
policy excludes (`fairness.parquet`), with each group's difference from the average over
all customers, so that unequal treatment shows even though the attribute is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.tables import ExportFormat, write_export

CARD_FILE = "rate_card.parquet"
FAIRNESS_FILE = "fairness.parquet"
CARD_COLUMNS = (
    "segment",
    "category",
    "rate",
    "customers",
    "expected_incremental_margin",
    "expected_cashback",
)


@dataclass(frozen=True)
class RateCard:
    """The rate card and the average rate by excluded attribute.

    Attributes:
        card: one row per segment and category (`CARD_COLUMNS`).
        fairness: attribute, value, customers, average_rate, difference (from the average
            rate of all customers).
        totals: customers (each once), expected incremental margin and cashback of the card.
    """

    card: pl.DataFrame
    fairness: pl.DataFrame
    totals: dict[str, float]


def load_card(directory: Path) -> RateCard:
    """The card and fairness table of the rates run whose outputs are in `directory`.

    Raises:
        CashbackError: when `cashback train rates` has not written them.
    """
    missing = [name for name in (CARD_FILE, FAIRNESS_FILE) if not (directory / name).exists()]
    if missing:
        msg = (
            f"no rate card in {directory} (missing {', '.join(missing)}): "
            "run `cashback train rates` first"
        )
        raise CashbackError(msg)
    card = pl.scan_parquet(directory / CARD_FILE).select(CARD_COLUMNS).collect()
    fairness = (
        pl.scan_parquet(directory / FAIRNESS_FILE)
        .with_columns(
            (
                pl.col("average_rate")
                - (pl.col("average_rate") * pl.col("customers")).sum().over("attribute")
                / pl.col("customers").sum().over("attribute")
            ).alias("difference")
        )
        .collect()
    )
    return RateCard(card, fairness, card_totals(card))


def card_totals(card: pl.DataFrame) -> dict[str, float]:
    """Customers (each segment's once), expected incremental margin and cashback over cells."""
    segments = card.group_by("segment").agg(pl.col("customers").first())
    return {
        "customers": float(segments["customers"].sum()),
        "expected_incremental_margin": float(card["expected_incremental_margin"].sum()),
        "expected_cashback": float(card["expected_cashback"].sum()),
    }


def fairness_gaps(fairness: pl.DataFrame) -> pl.DataFrame:
    """Per excluded attribute: the groups with the lowest and highest average rate, the gap."""
    if fairness.is_empty():
        return pl.DataFrame(
            schema={"attribute": pl.String, "lowest": pl.String, "highest": pl.String}
            | {"gap": pl.Float64}
        )
    return (
        fairness.sort("attribute", "average_rate", "value")
        .group_by("attribute", maintain_order=True)
        .agg(
            pl.col("value").first().alias("lowest"),
            pl.col("value").last().alias("highest"),
            (pl.col("average_rate").last() - pl.col("average_rate").first()).alias("gap"),
        )
    )


def fairness_path(out: Path) -> Path:
    """Where the fairness table goes beside a card written to `out`."""
    return out.with_name(f"{out.stem}_fairness{out.suffix}")


def export_card(card: RateCard, out: Path, file_format: ExportFormat) -> tuple[Path, Path]:
    """Write the card to `out` and the fairness table beside it (`<name>_fairness.<ext>`)."""
    return (
        write_export(card.card, out, file_format),
        write_export(card.fairness, fairness_path(out), file_format),
    )
