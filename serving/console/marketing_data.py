"""What the marketing pages of the console show, computed by the code the CLI and API call.

Pure functions of the settings (and the app's runtime), each returning what one template
renders; nothing here knows about HTTP:

- experiments: the store's rows (`pipelines.experiments`); the power calculator is
  `models.experiments.power.plan_experiment`, the one `cashback experiments power` uses;
- the rate card and its fairness table (`pipelines.rates_card.load_card`) and the budget
  frontier (`pipelines.rates_frontier.simulate_budget`) of the rates run serving prices with;
- segment profiles: the champion segment model (`models.segments.model.SegmentModel`), its
  cluster centres read back in the features' own units, with each segment's customers from
  the scores serving reads (`cashback customers score`), else from the last training run.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Generic, TypeVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cashback.contract import TABLES
from cashback.errors import CashbackError
from cashback.settings import Settings
from features.catalog import SCORES_VIEW
from features.store import EVENT_TS, batch_table_path
from models.experiments.power import PowerPlan, plan_experiment
from models.experiments.store import DEFINITIONS_DIR
from models.segments.model import (
    INACTIVE,
    FloatArray,
    SegmentModel,
    clustering_space,
    share_label,
)
from pipelines.rates_card import RateCard, fairness_gaps, load_card
from pipelines.rates_frontier import Frontier, rates_directory, simulate_budget
from serving.runtime import Runtime

SEGMENTS_MODEL = "segments"
TRAINED_SEGMENTS_TABLE = "customer_segment"  # `cashback train segments` writes it
MIX_SHOWN = 3  # the largest shares of a channel or category mix shown per segment

FieldErrors = dict[str, str]


def field_errors(error: ValidationError, names: Mapping[str, str] | None = None) -> FieldErrors:
    """One message per form field from a validation error.

    Args:
        error: pydantic's error.
        names: the form field of a location that is not the field's own name
            (`"variants.1.policy"` -> `"treatment_policy"`); the first part of a location
            is tried after the whole of it.

    Returns:
        The first message of each field, without pydantic's "Value error, " prefix.
    """
    names = names or {}
    found: FieldErrors = {}
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        first = str(item["loc"][0]) if item["loc"] else "form"
        name = names.get(loc) or names.get(first) or first
        found.setdefault(name, str(item["msg"]).removeprefix("Value error, "))
    return found


# ------------------------------------------------------------------ the power calculator


class PowerInputs(BaseModel):
    """The calculator's inputs, as the form sends them (see `cashback experiments power`).

    Attributes:
        baseline: the primary metric's mean in control (a share when `sd` is empty).
        sd: the metric's standard deviation per customer; None for a proportion.
        mde: the effect to detect, relative to the baseline (0.05 = +5 %).
        alpha: two-sided level of the test.
        power: the chance to detect an effect of exactly `mde`.
        daily_customers: new customers entering the experiment per day, all variants.
        treatment_share: share of the customers in the treatment.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    baseline: float = Field(allow_inf_nan=False)
    sd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    mde: float = Field(gt=0, allow_inf_nan=False)
    alpha: float = Field(gt=0, lt=1)
    power: float = Field(gt=0, lt=1)
    daily_customers: float = Field(gt=0, allow_inf_nan=False)
    treatment_share: float = Field(gt=0, lt=1)

    def plan(self) -> PowerPlan:
        """The days the effect needs and the customers they bring (`plan_experiment`).

        Raises:
            ValueError: for a proportion's baseline outside (0, 1) or a zero baseline.
        """
        return plan_experiment(
            daily_customers=self.daily_customers,
            baseline_mean=self.baseline,
            baseline_variance=None if self.sd is None else self.sd**2,
            mde=self.mde,
            relative=True,
            alpha=self.alpha,
            power=self.power,
            treatment_share=self.treatment_share,
        )


@dataclass(frozen=True)
class PowerResult:
    """What the calculator shows: the plan, or why there is none.

    Attributes:
        plan: the plan (None when an input is invalid).
        errors: a message per invalid input.
    """

    plan: PowerPlan | None
    errors: FieldErrors

    @property
    def customers(self) -> float:
        """Customers over the plan's days, all variants (0 without a plan)."""
        return 0.0 if self.plan is None else self.plan.n_control + self.plan.n_treatment


def power_result(form: Mapping[str, str]) -> PowerResult:
    """The calculator's answer to the form's fields (empty fields are missing, `sd` optional)."""
    given = {name: value for name, value in form.items() if str(value).strip()}
    try:
        inputs = PowerInputs.model_validate(given)
    except ValidationError as error:
        return PowerResult(None, field_errors(error))
    try:
        return PowerResult(inputs.plan(), {})
    except ValueError as error:
        name = "mde" if "mde" in str(error) else "baseline"
        return PowerResult(None, {name: str(error)})


def power_defaults(settings: Settings) -> dict[str, str]:
    """The calculator's first values: an example plan at the settings' alpha and power."""
    config = settings.experiments
    return {
        "baseline": "0.2",
        "sd": "",
        "mde": "0.05",
        "alpha": f"{config.alpha:g}",
        "power": f"{config.power:g}",
        "daily_customers": "500",
        "treatment_share": "0.5",
    }


# ------------------------------------------------------------------------ new experiments


def new_experiment_defaults(settings: Settings, today: date | None = None) -> dict[str, str]:
    """The create form's first values: a rate test from tomorrow for four weeks."""
    start = (today or datetime.now(UTC).date()) + timedelta(days=1)
    return power_defaults(settings) | {
        "key": "",
        "hypothesis": "",
        "layer": "rates",
        "control_policy": "rate_card",
        "treatment_name": "treatment",
        "treatment_policy": "rate:0.03",
        "start": start.isoformat(),
        "stop": (start + timedelta(days=28)).isoformat(),
        "primary_metric": settings.experiments.primary_metric,
        "segments": "",
        "traffic": "1",
    }


# where the definition's errors show on the form
DEFINITION_FIELDS: Mapping[str, str] = {
    "variants.0.name": "form",
    "variants.0.policy": "control_policy",
    "variants.1.name": "treatment_name",
    "variants.1.policy": "treatment_policy",
    "variants.0.weight": "treatment_share",
    "variants.1.weight": "treatment_share",
    "variants": "treatment_share",
    "targeting": "segments",
}


def definition_fields(form: Mapping[str, str], lists: Mapping[str, list[str]]) -> dict[str, object]:
    """The definition (the fields of a YAML file) the create form describes.

    Args:
        form: the form's single values.
        lists: its repeated values: `lifecycle` and `guardrail_metrics` checkboxes.

    Returns:
        The fields for `ExperimentDefinition`: two variants, control first, weighted by the
        treatment share (an unreadable share is passed on for the definition to refuse).
    """
    try:
        share: object = float(form.get("treatment_share", ""))
    except ValueError:
        share = form.get("treatment_share")
    control = 1 - share if isinstance(share, float) else share
    segments = [s.strip() for s in form.get("segments", "").split(",") if s.strip()]
    return {
        "key": form.get("key", "").strip(),
        "hypothesis": form.get("hypothesis", ""),
        "layer": form.get("layer", "").strip(),
        "variants": [
            {"name": "control", "weight": control, "policy": form.get("control_policy", "")},
            {
                "name": form.get("treatment_name", "").strip(),
                "weight": share,
                "policy": form.get("treatment_policy", "").strip(),
            },
        ],
        "targeting": {"segments": segments, "lifecycle": list(lists.get("lifecycle", []))},
        "start": form.get("start", "").strip(),
        "stop": form.get("stop", "").strip(),
        "primary_metric": form.get("primary_metric", ""),
        "guardrail_metrics": list(lists.get("guardrail_metrics", [])),
        "traffic": form.get("traffic", "").strip() or "1",
    }


# ------------------------------------------------------------------ experiment reports


def _stat(path: Path) -> tuple[str, int, int, int] | tuple[str]:
    try:
        found = path.stat()
    except FileNotFoundError:
        return (str(path),)
    return (str(path), found.st_mtime_ns, found.st_size, found.st_ino)


def analysis_inputs(settings: Settings) -> tuple[Hashable, ...]:
    """What an experiment's analysis reads, as file stats (and the settings it uses).

    The contract tables, the stored definitions and the customer scores are all written
    through a temp file and a rename, so any change to them changes this.
    """
    paths = [settings.data_dir / table.file_name for table in TABLES.values()]
    definitions = settings.data_dir / DEFINITIONS_DIR
    if definitions.is_dir():
        paths += sorted(definitions.iterdir())
    paths.append(batch_table_path(settings, SCORES_VIEW))
    config = settings.experiments.model_dump_json()
    return (str(settings.data_dir), config, *(_stat(path) for path in paths))


T = TypeVar("T")


@dataclass
class PageCache(Generic[T]):
    """The last pages made, each under what it was made from (the oldest dropped past `size`).

    A page is made outside the lock: two requests for the same missing page may both make
    it (the same page), but a slow page never holds up the others.
    """

    size: int = 16
    _pages: OrderedDict[Hashable, T] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The page kept under `key`, else `make()` (kept unless it raises)."""
        with self._lock:
            if key in self._pages:
                self._pages.move_to_end(key)
                return self._pages[key]
        page = make()
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return page


# ------------------------------------------------------------------ rate card and frontier


@dataclass(frozen=True)
class RatesView:
    """The rate card page: the served champion, its card and fairness, the frontier.

    Attributes:
        version: the served rates champion's version.
        card: the card, its fairness table and totals.
        gaps: per excluded attribute, the lowest and highest average rate and their gap.
        frontier: the budget frontier (None when the run saved no rate values).
        frontier_problem: why there is no frontier.
        currency: the program's currency.
    """

    version: str
    card: RateCard
    gaps: pl.DataFrame
    frontier: Frontier | None
    frontier_problem: str | None
    currency: str


RATES_VIEWS: Final[PageCache[RatesView]] = PageCache(size=4)


def rates_view(settings: Settings, runtime: Runtime) -> RatesView:
    """The served rates champion's card, fairness and frontier.

    Kept until the served version, the rates settings or a file of the rates run change:
    the frontier is re-solved from the run's saved values, too slow to redo on every view.

    Raises:
        CashbackError: when no rates champion is served, or its run wrote no card; the
            message says why and what to run.
    """
    if runtime.rates is None:
        why = runtime.problems.get("rates_model", "not loaded")
        msg = (
            f"no rates champion is served ({why}): run `cashback train rates`, then "
            "`cashback models promote rates`: the running API loads it at its next check"
        )
        raise CashbackError(msg)
    version, directory = runtime.rates.version, rates_directory(settings)
    files = sorted(directory.iterdir()) if directory.is_dir() else []
    key = (version, settings.rates.model_dump_json(), settings.currency, *map(_stat, files))
    return RATES_VIEWS.get(key, lambda: _rates_view(settings, version, directory))


def _rates_view(settings: Settings, version: str, directory: Path) -> RatesView:
    card = load_card(directory)
    try:
        frontier: Frontier | None = simulate_budget(settings)
        problem = None
    except CashbackError as error:
        frontier, problem = None, str(error)
    return RatesView(
        version=version,
        card=card,
        gaps=fairness_gaps(card.fairness),
        frontier=frontier,
        frontier_problem=problem,
        currency=settings.currency,
    )


@dataclass(frozen=True)
class ChartPoint:
    """One point of a chart: its values and its place in the drawing."""

    x: float
    y: float
    left: float
    top: float
    current: bool


@dataclass(frozen=True)
class Tick:
    """An axis tick: its value's label and its place in the drawing."""

    label: str
    at: float


@dataclass(frozen=True)
class LineChart:
    """A line chart laid out for an inline SVG (coordinates in the drawing's units).

    Attributes:
        width: the drawing's width.
        height: its height.
        left, right, top, bottom: the plot area's edges.
        points: the points, by x.
        x_ticks: ticks of the horizontal axis.
        y_ticks: ticks of the vertical axis.
    """

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    points: tuple[ChartPoint, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]

    @property
    def path(self) -> str:
        """The line through the points, as an SVG path."""
        moves = [f"{p.left:.1f},{p.top:.1f}" for p in self.points]
        return "M" + " L".join(moves) if moves else ""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [first + i * step for i in range(math.ceil((high - first) / step - 1e-9) + 1)]
    return [round(t, 12) for t in ticks]


def compact(value: float) -> str:
    """A short label for an axis: 12,500 -> 12.5k, 2,000,000 -> 2M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float],
    current: Sequence[bool],
    *,
    width: float = 560,
    height: float = 320,
) -> LineChart:
    """Lay out points (x ascending) for an inline SVG line chart with round ticks."""
    left, right, top, bottom = 76.0, width - 20.0, 16.0, height - 48.0
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    def across(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def up(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    points = tuple(
        ChartPoint(x, y, across(x), up(y), now) for x, y, now in zip(xs, ys, current, strict=True)
    )
    return LineChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=points,
        x_ticks=tuple(Tick(compact(t), across(t)) for t in x_ticks),
        y_ticks=tuple(Tick(compact(t), up(t)) for t in y_ticks),
    )


def frontier_chart(frontier: Frontier) -> LineChart:
    """The frontier drawn: expected incremental margin against the budget."""
    table = frontier.table
    return line_chart(
        table["budget"].to_list(),
        table["expected_incremental_margin"].to_list(),
        table["current"].to_list(),
    )


# ------------------------------------------------------------------------ segment profiles


@dataclass(frozen=True)
class SegmentProfile:
    """One segment: its customers and its centre (a typical member) in the features' units.

    Attributes:
        segment: its name.
        customers: its customers (None when no scores or assignments were found).
        share: their share of every customer counted.
        centre: the centre's value of each behaviour column (None for `inactive`).
        channels: the largest shares of the channel mix at the centre, largest first.
        categories: the same for the category mix.
    """

    segment: str
    customers: int | None
    share: float | None
    centre: dict[str, float] | None
    channels: tuple[tuple[str, float], ...]
    categories: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class SegmentsView:
    """The segments page.

    Attributes:
        version: the segments champion's version.
        close: the date it was trained as of, if recorded.
        sizes_from: where the customers per segment come from (None: nowhere yet).
        profiles: one per segment, the clusters then `inactive`.
    """

    version: int
    close: str | None
    sizes_from: str | None
    profiles: tuple[SegmentProfile, ...]


def centres(model: SegmentModel) -> FloatArray:
    """The cluster centres in the features' units: the model's transformations undone."""
    standardized = model.centers / model.weights
    transformed = standardized * model.scale + model.mean
    n_log = len(model.log_columns)
    transformed[:, :n_log] = np.expm1(transformed[:, :n_log])
    return np.asarray(transformed, dtype=np.float64)


def _largest(values: Mapping[str, float], columns: Sequence[str]) -> tuple[tuple[str, float], ...]:
    shares = sorted(((share_label(c), max(values[c], 0.0)) for c in columns), key=lambda s: -s[1])
    return tuple(shares[:MIX_SHOWN])


def segment_profiles(
    model: SegmentModel, counts: Mapping[str, int] | None
) -> tuple[SegmentProfile, ...]:
    """Each segment of the model (clusters, then `inactive`) with its customers and centre.

    Args:
        model: the segment model.
        counts: customers per segment, or None when unknown.
    """
    total = sum(counts.values()) if counts else 0
    space = clustering_space(model.columns)

    def profile(name: str, centre: dict[str, float] | None) -> SegmentProfile:
        customers = None if counts is None else counts.get(name, 0)
        at = centre or {}
        return SegmentProfile(
            segment=name,
            customers=customers,
            share=customers / total if total and customers is not None else None,
            centre=None if centre is None else {c: at[c] for c in space.log_columns},
            channels=_largest(at, space.channel_columns) if at else (),
            categories=_largest(at, space.category_columns) if at else (),
        )

    clusters = [
        profile(name, dict(zip(model.columns, values.tolist(), strict=True)))
        for name, values in zip(model.names, centres(model), strict=True)
    ]
    return (*clusters, profile(INACTIVE, None))


def segment_counts(settings: Settings) -> tuple[dict[str, int], str] | None:
    """Customers per segment at the latest time they were written, and where from.

    The scores serving reads (`cashback customers score`, the champion's segments) come
    first; else the last `cashback train segments` run's assignments; None without either.
    """
    sources = (
        (batch_table_path(settings, SCORES_VIEW), EVENT_TS, "the customer scores serving reads"),
        (
            batch_table_path(settings, TRAINED_SEGMENTS_TABLE),
            "close_ts",
            "the last segments training run",
        ),
    )
    for path, stamp, words in sources:
        if not path.exists():
            continue
        frame = pl.scan_parquet(path)
        latest = frame.filter(pl.col(stamp) == pl.col(stamp).max())
        counts = latest.drop_nulls("segment").group_by("segment").len().collect()
        if counts.height:
            found = dict(zip(counts["segment"].to_list(), counts["len"].to_list(), strict=True))
            return found, words
    return None


def segments_view(settings: Settings) -> SegmentsView:
    """The champion segment model's profiles, with each segment's customers.

    Raises:
        CashbackError: when there is no segments champion (the message says what to run).
    """
    from models.registry import champion_artifacts, champion_version  # noqa: PLC0415 - MLflow

    version = champion_version(settings, SEGMENTS_MODEL)
    if version is None:
        msg = (
            "no segments model yet: run `cashback train segments`, then "
            "`cashback models promote segments` (and `cashback customers score` for their sizes)"
        )
        raise CashbackError(msg)
    model = SegmentModel.load(champion_artifacts(settings, SEGMENTS_MODEL))
    counted = segment_counts(settings)
    close = model.params.get("close")
    return SegmentsView(
        version=version,
        close=str(close)[:10] if close else None,
        sizes_from=None if counted is None else counted[1],
        profiles=segment_profiles(model, None if counted is None else counted[0]),
    )
