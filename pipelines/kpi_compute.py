"""`cashback kpis compute`: the program's KPIs per period and group, exported for other tools.

Reads the contract tables of the data directory (and the customer scores when they exist,
for grouping by segment), computes the KPI table, the cashback breakdown by payout method
and offer kind, and the return on cashback from randomized exposures
(`pipelines.kpis.compute`), and writes each as CSV or parquet, atomically, when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cashback.settings import Settings
from cashback.tables import ExportFormat, write_export
from features.catalog import SCORES_VIEW
from features.store import batch_table_path
from pipelines.kpis.compute import KpiResult, compute
from pipelines.kpis.incremental import Bootstrap
from pipelines.kpis.inputs import GroupKey, KpiInputs, Period

EXPORTS = ("kpis", "cashback", "return_on_cashback")


@dataclass(frozen=True)
class KpiRun:
    """The KPIs and the files they were written to (none when not exported)."""

    result: KpiResult
    files: tuple[Path, ...]


def kpi_inputs(settings: Settings) -> KpiInputs:
    """The data directory's tables, with the customer scores when they were computed."""
    return KpiInputs.from_directory(settings.data_dir, batch_table_path(settings, SCORES_VIEW))


def run(
    settings: Settings,
    *,
    period: Period | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    by: GroupKey | None = None,
    out: Path | None = None,
    file_format: ExportFormat = "csv",
) -> KpiRun:
    """Compute the KPIs and export them to `out` (a directory) when given.

    Args:
        settings: the data directory and `kpis` settings.
        period: "week" or "month" (default: the setting).
        since: the first period holding this time (default: the first order).
        until: up to this time, exclusive (default: after the last order).
        by: the grouping (default: all customers together).
        out: write kpis, cashback and return_on_cashback files into this directory.
        file_format: "csv" or "parquet".

    Returns:
        The KPIs and the files written.

    Raises:
        KpiError: for an empty window; FileNotFoundError without transactions.
    """
    config = settings.kpis
    boot = Bootstrap(config.bootstrap_replicates, config.confidence_level, config.seed)
    result = compute(
        kpi_inputs(settings),
        settings.features,
        period=period or config.period,
        since=since,
        until=until,
        by=by,
        bootstrap=boot,
    )
    if out is None:
        return KpiRun(result, ())
    frames = (result.table, result.cashback, result.return_on_cashback)
    files = tuple(
        write_export(frame, out / f"{name}.{file_format}", file_format)
        for name, frame in zip(EXPORTS, frames, strict=True)
    )
    return KpiRun(result, files)
