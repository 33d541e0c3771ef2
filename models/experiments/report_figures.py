"""The plots of the experiment report, drawn on `cashback.reports.styled_figure` figures.

Each function takes frames or rows the analysis already computed and returns a `Plot`
block (inline SVG with its title and a description in words); nothing is estimated here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from cashback.reports import PALETTE, Plot, plot, styled_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from models.experiments.stats import FloatArray

ZERO_LINE = "#555555"
FIXED = PALETTE[0]
ALWAYS_VALID = PALETTE[1]


@dataclass(frozen=True)
class ForestRow:
    """One line of a forest plot: a lift and its interval, optionally a second (CUPED) one.

    Attributes:
        label: what the line is (metric and variant, or segment).
        estimate: the point estimate.
        low: lower end of its interval.
        high: upper end.
        color: the marker's colour.
        adjusted: (estimate, low, high) of the CUPED-adjusted lift, drawn below it.
    """

    label: str
    estimate: float
    low: float
    high: float
    color: str
    adjusted: tuple[float, float, float] | None = None


def _percent_axis(ax: Axes, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: PLC0415 - no work at import time

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(nbins=5))  # readable when scaled down to a phone
    target.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _draw_forest(ax: Axes, rows: Sequence[ForestRow]) -> None:
    """Points with horizontal interval bars, the first row on top, and a line at 0."""
    y = np.arange(len(rows), 0, -1, dtype=np.float64)
    for position, row in zip(y, rows, strict=True):
        error = [[row.estimate - row.low], [row.high - row.estimate]]
        ax.errorbar(row.estimate, position, xerr=error, fmt="o", color=row.color, capsize=3)
        if row.adjusted is not None:
            estimate, low, high = row.adjusted
            ax.errorbar(
                estimate,
                position - 0.3,
                xerr=[[estimate - low], [high - estimate]],
                fmt="s",
                color=row.color,
                mfc="white",
                alpha=0.75,
                capsize=2,
            )
    ax.axvline(0, color=ZERO_LINE, lw=0.9)
    ax.set_yticks(y, [row.label for row in rows])
    ax.set_ylim(0.3, len(rows) + 0.7)
    ax.grid(axis="y", visible=False)
    _percent_axis(ax)


def forest_plot(
    groups: Sequence[tuple[str, Sequence[ForestRow]]],
    *,
    title: str,
    description: str,
    xlabel: str,
    legend: Sequence[tuple[str, str]] = (),
) -> Plot:
    """Relative lifts with their intervals, one panel per group, each on its own scale.

    CUPED-adjusted lifts, where given, are hollow squares under their lift.

    Args:
        groups: (panel title, lines top to bottom) per panel; an empty title draws none.
        title: the plot's name.
        description: what it shows, in words.
        xlabel: the x axis' label (under the last panel).
        legend: (colour, label) pairs explaining the colours.

    Returns:
        The plot block.
    """
    counts = [len(rows) for _, rows in groups]
    height = 0.9 + 0.45 * sum(counts) + 0.55 * len(groups)
    with styled_figure(len(groups), 1, width=6.4, height=height) as (fig, axes):
        for ax, (name, rows) in zip(axes, groups, strict=True):
            _draw_forest(ax, rows)
            if name:
                ax.set_title(name, loc="left")
        grid = axes[0].get_subplotspec()
        if grid is not None:  # panels as tall as their rows
            grid.get_gridspec().set_height_ratios(counts)
        axes[-1].set_xlabel(xlabel)
        for color, label in legend:
            axes[0].plot([], [], marker="o", ls="", color=color, label=label)
        if any(row.adjusted for _, rows in groups for row in rows):
            axes[0].plot(
                [], [], marker="s", ls="", color="#444444", mfc="white", label="with CUPED"
            )
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 3))
    return plot(fig, title=title, description=description)


def _finite(values: Sequence[FloatArray]) -> FloatArray:
    joined = np.concatenate([np.asarray(v, dtype=np.float64) for v in values])
    finite: FloatArray = joined[np.isfinite(joined)]
    return finite


def series_limits(series: pl.DataFrame) -> tuple[float, float] | None:
    """The y limits showing the later two thirds of the fixed interval, the last bounds and 0.

    The first days' intervals are very wide (a handful of customers): shown in full, they
    would flatten everything that follows.
    """
    later = series.filter(pl.col("day") >= series["day"].max() // 3)  # type: ignore[operator]
    last = series.tail(1)
    values = _finite(
        [
            later["ci_low"].to_numpy(),
            later["ci_high"].to_numpy(),
            last["sequential_ci_low"].to_numpy(),
            last["sequential_ci_high"].to_numpy(),
            np.zeros(1),
        ]
    )
    low, high = float(values.min()), float(values.max())
    pad = 0.12 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def cumulative_plot(series: pl.DataFrame, *, metric: str, level: str, description: str) -> Plot:
    """The primary metric's lift day by day, one panel per variant, with both bounds.

    Args:
        series: the analysis' `cumulative` frame (one row per day and variant).
        metric: the metric's name as shown.
        level: the interval level in words ("95 %").
        description: what the plot shows, in words.

    Returns:
        The plot block.
    """
    variants = series["variant"].unique(maintain_order=True).to_list()
    height = 0.9 + 2.6 * len(variants)
    with styled_figure(len(variants), 1, width=6.4, height=height, sharex=True) as (fig, axes):
        for ax, variant in zip(axes, variants, strict=True):
            part = series.filter(pl.col("variant") == variant).sort("day")
            day = part["day"].to_numpy() + 1
            ax.fill_between(
                day,
                part["ci_low"].to_numpy(),
                part["ci_high"].to_numpy(),
                color=FIXED,
                alpha=0.2,
                lw=0,
                label=f"fixed {level} CI (read it on the last day only)",
            )
            for bound in ("sequential_ci_low", "sequential_ci_high"):
                ax.plot(day, part[bound].to_numpy(), color=ALWAYS_VALID, ls="--", lw=1.3)
            ax.lines[-1].set_label("always-valid bounds (read them any day)")
            ax.plot(day, part["absolute"].to_numpy(), color=FIXED, lw=2, label="lift so far")
            ax.axhline(0, color=ZERO_LINE, lw=0.9)
            limits = series_limits(part)
            if limits:
                ax.set_ylim(*limits)
            ax.set(title=f"{variant} against control", ylabel=f"lift in {metric}")
        axes[-1].set_xlabel("days since the start")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=1)
    return plot(fig, title=f"{metric}: the lift day by day", description=description)


@dataclass(frozen=True)
class PowerCurve:
    """The minimum detectable effect of one variant's comparison over a range of durations.

    Attributes:
        variant: the variant.
        days: durations.
        mde: the MDE at each duration, without CUPED.
        mde_cuped: the same with CUPED (None when CUPED does not apply).
        observed: the size of the lift observed (same scale).
    """

    variant: str
    days: FloatArray
    mde: FloatArray
    mde_cuped: FloatArray | None
    observed: float


def power_plot(
    curves: Sequence[PowerCurve],
    *,
    duration: float,
    percent: bool,
    ylabel: str,
    description: str,
) -> Plot:
    """MDE against duration per variant (dashed: with CUPED), the actual duration marked.

    Args:
        curves: one per variant.
        duration: the experiment's duration in days.
        percent: whether the MDE is relative (shown in %).
        ylabel: the y axis' label.
        description: what the plot shows, in words.

    Returns:
        The plot block.
    """
    with styled_figure(width=6.4, height=3.8) as (fig, (ax,)):
        for index, curve in enumerate(curves):
            color = PALETTE[(index + 2) % len(PALETTE)]
            ax.plot(curve.days, curve.mde, color=color, lw=2, label=f"{curve.variant}")
            if curve.mde_cuped is not None:
                ax.plot(
                    curve.days,
                    curve.mde_cuped,
                    color=color,
                    ls="--",
                    lw=1.6,
                    label=f"{curve.variant} with CUPED",
                )
            if math.isfinite(curve.observed) and curve.observed > 0:
                ax.axhline(
                    curve.observed,
                    color=color,
                    ls=":",
                    lw=1.2,
                    label=f"lift observed, {curve.variant}",
                )
        ax.axvline(duration, color=ZERO_LINE, lw=1.0, label=f"this experiment ({duration:g} days)")
        top = max(max(float(np.nanmax(c.mde[len(c.mde) // 4 :])), c.observed) for c in curves)
        ax.set_ylim(0, top * 1.1)
        ax.set(xlabel="duration (days)", ylabel=ylabel)
        if percent:
            _percent_axis(ax, "y")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return plot(fig, title="Smallest detectable lift by duration", description=description)
