"""What the KPIs are computed from: the contract tables, the window and the grouping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import polars as pl

from cashback.errors import CashbackError
from cashback.tables import present_tables, read_table, scan_parquet_path

Period = Literal["week", "month"]
GroupKey = Literal["segment", "lifecycle", "channel", "category"]
PERIODS: Final[tuple[Period, ...]] = ("week", "month")
GROUP_KEYS: Final[tuple[GroupKey, ...]] = ("segment", "lifecycle", "channel", "category")
EVERY: Final[dict[Period, str]] = {"week": "1w", "month": "1mo"}
BACK: Final[dict[Period, str]] = {"week": "-1w", "month": "-1mo"}
# a customer's group is an attribute of the customer (at the period's start); an order's
# channel or category is an attribute of the order
ORDER_GROUPS: Final = frozenset({"channel", "category"})
ALL: Final = "all"
OPTIONAL_TABLES: Final = ("merchants", "claims", "claim_labels", "exposures", "offers")


class KpiError(CashbackError):
    """KPIs asked for what cannot be computed (an empty window, an unknown grouping)."""


@dataclass(frozen=True)
class KpiWindow:
    """The periods reported: `[start, end)` cut into weeks (from Monday) or calendar months.

    Attributes:
        period: "week" or "month".
        start: the first period's start (00:00 UTC).
        end: the end of the last period (exclusive).
    """

    period: Period
    start: datetime
    end: datetime

    @property
    def every(self) -> str:
        """The period as a polars duration string."""
        return EVERY[self.period]

    def period_start(self, ts: pl.Expr) -> pl.Expr:
        """The start of the period holding each time."""
        return ts.dt.truncate(self.every)

    def next_period(self, start: pl.Expr) -> pl.Expr:
        """The start of the period after each period start."""
        return start.dt.offset_by(self.every)

    def periods(self) -> pl.Series:
        """Every period start of the window, in order."""
        return pl.datetime_range(
            self.start,
            self.end,
            self.every,
            closed="left",
            time_unit="us",
            time_zone="UTC",
            eager=True,
        ).alias("period")

    def with_previous(self) -> KpiWindow:
        """The same window starting one period earlier (retention needs the period before)."""
        start = pl.select(pl.lit(self.start).dt.offset_by(BACK[self.period])).item()
        return KpiWindow(self.period, start, self.end)

    def contains(self, ts: pl.Expr) -> pl.Expr:
        """Whether each time falls inside the window."""
        return (ts >= self.start) & (ts < self.end)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def kpi_window(
    period: Period, first: datetime, last: datetime, since: datetime | None, until: datetime | None
) -> KpiWindow:
    """The whole periods from `since` (default: the first order) up to `until` (exclusive).

    A period is kept whole: `since` moves back to its period's start, and the window ends at
    the end of the period holding the last moment before `until` (default: the last order).

    Raises:
        KpiError: for an unknown period, or when the window holds no time at all.
    """
    if period not in EVERY:
        msg = f"period {period!r}: expected one of {', '.join(PERIODS)}"
        raise KpiError(msg)
    every = EVERY[period]
    start_at = _utc(since) if since else _utc(first)
    end_at = _utc(until) if until else _utc(last)
    bounds = pl.select(
        pl.lit(start_at).dt.truncate(every).alias("start"),
        pl.lit(end_at).dt.offset_by("-1us" if until else "0us").dt.truncate(every).alias("last"),
    ).row(0)
    start, last_start = bounds
    if last_start < start:
        msg = f"the window from {start_at:%Y-%m-%d} to {end_at:%Y-%m-%d} holds no {period}"
        raise KpiError(msg)
    end = pl.select(pl.lit(last_start).dt.offset_by(every)).item()
    return KpiWindow(period, start, end)


@dataclass(frozen=True)
class KpiInputs:
    """The contract tables (lazy), the customer scores when they exist, the end of the data.

    Attributes:
        transactions: purchases and returns (required).
        customers: customers (required).
        tables: the optional contract tables present, by name.
        scores: the `customer_scores` batch table (segment, lifecycle, clv), when scored.
        first: the first order's time.
        last: the last event's time (orders and claims).
    """

    transactions: pl.LazyFrame
    customers: pl.LazyFrame
    tables: dict[str, pl.LazyFrame]
    scores: pl.LazyFrame | None
    first: datetime
    last: datetime

    @classmethod
    def from_directory(cls, directory: Path, scores_path: Path | None = None) -> KpiInputs:
        """Scan a data directory's tables (and the scores file when it exists).

        Raises:
            FileNotFoundError: without transactions or customers.
            KpiError: when there are no purchases at all.
        """
        present = set(present_tables(directory))
        tables: dict[str, pl.LazyFrame] = {
            name: read_table(directory, name) for name in OPTIONAL_TABLES if name in present
        }
        transactions = read_table(directory, "transactions")
        scores = None
        if scores_path is not None and scores_path.exists():
            scores = scan_parquet_path(scores_path)
        first, last = (
            transactions.filter(pl.col("amount") > 0)
            .select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
            .collect()
            .row(0)
        )
        if first is None:
            msg = f"{directory}: the transactions hold no purchase: there is nothing to report"
            raise KpiError(msg)
        return cls(transactions, read_table(directory, "customers"), tables, scores, first, last)

    def table(self, name: str) -> pl.LazyFrame | None:
        """An optional table, or None when the data set lacks it."""
        return self.tables.get(name)

    def lacking(self, *names: str) -> list[str]:
        """Which of these optional tables the data set lacks."""
        return [name for name in names if name not in self.tables]
