"""KPIs of a window, per period and group, computed in one lazy pass over the tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from cashback.settings import FeatureSettings
from pipelines.kpis.activity import grouping, orders
from pipelines.kpis.flows import cashback_by_kind, claim_lines
from pipelines.kpis.incremental import SOURCE, Bootstrap, exposure_rewards, return_on_cashback
from pipelines.kpis.inputs import GroupKey, KpiInputs, KpiWindow, Period, kpi_window
from pipelines.kpis.measures import kpi_table


@dataclass(frozen=True)
class KpiResult:
    """The KPI table, the cashback breakdown, and what a reader must know about them.

    Attributes:
        window: the periods reported.
        group_key: the grouping used (None: all customers together).
        table: one row per period and group (`measures.kpi_table`).
        cashback: cashback money per period, group, payout method and offer kind (empty
            without claims).
        return_on_cashback: per group, from randomized exposures (`incremental`), with its
            interval; empty when the data allow no incremental estimate (see notes).
        notes: what could not be computed, and why; periods without purchases; maturing labels.
    """

    window: KpiWindow
    group_key: GroupKey | None
    table: pl.DataFrame
    cashback: pl.DataFrame
    return_on_cashback: pl.DataFrame
    notes: tuple[str, ...] = field(default=())
    source: str = SOURCE


def _notes(inputs: KpiInputs, window: KpiWindow, table: pl.DataFrame) -> list[str]:
    notes: list[str] = []
    empty = (table.group_by("period").agg(pl.col("orders").sum()).filter(pl.col("orders") == 0))[
        "period"
    ].sort()
    notes.extend(f"no purchases in the {window.period} of {p:%Y-%m-%d}" for p in empty)
    if "claims" not in inputs.tables:
        notes.append(
            "no claims table: participation, omnichannel engagement and cashback money "
            "cannot be computed (shown empty, not zero)"
        )
    elif "claim_labels" not in inputs.tables:
        notes.append("no claim labels: fraud loss counts no fraud (shown as 0)")
    if "exposures" not in inputs.tables or "offers" not in inputs.tables:
        notes.append(
            "no exposures or offers: cashback cannot be split by offer kind, and deferred "
            "cashback outstanding is 0"
        )
    if window.end > inputs.last + timedelta(days=1):
        notes.append(
            f"the last {window.period} is partial: the data end on {inputs.last:%Y-%m-%d %H:%M} UTC"
        )
    return notes


def compute(
    inputs: KpiInputs,
    features: FeatureSettings,
    *,
    period: Period = "month",
    since: datetime | None = None,
    until: datetime | None = None,
    by: GroupKey | None = None,
    bootstrap: Bootstrap | None = None,
) -> KpiResult:
    """The KPIs of every whole period from `since` to `until`, grouped `by`.

    Args:
        inputs: the tables.
        features: the lifecycle rules (grouping by lifecycle).
        period: "week" or "month".
        since: the window's start (default: the first order); moved back to its period's start.
        until: the window's end, exclusive (default: after the last order).
        by: "segment", "lifecycle", "channel", "category" or None.
        bootstrap: the return on cashback's interval (default: 200 replicates, 95 %).

    Returns:
        The KPI table and cashback breakdown, with notes.

    Raises:
        KpiError: for an empty window or an unknown period.
    """
    window = kpi_window(period, inputs.first, inputs.last, since, until)
    group = grouping(inputs, by)
    placed = orders(inputs, window.with_previous(), group, features)
    lines = claim_lines(inputs, placed)
    rewards, why_not = exposure_rewards(inputs, window, group, features, inputs.last)
    plans = {"table": kpi_table(placed, lines, window, group.key)}
    if rewards is not None:
        plans["rewards"] = rewards
    if lines is not None:
        plans["cashback"] = cashback_by_kind(lines.filter(window.contains(pl.col("period"))))
    # one pass: the plans share their scans and joins (common subplans run once)
    frames = dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))
    table = frames["table"]
    notes = [group.note] if group.note else []
    notes += _notes(inputs, window, table)
    if rewards is None:
        incremental, more = pl.DataFrame(), [why_not]
    else:
        incremental, more = return_on_cashback(frames["rewards"], bootstrap or Bootstrap())
    notes += more
    cashback = frames.get("cashback", pl.DataFrame())
    return KpiResult(window, group.key, table, cashback, incremental, tuple(notes))
