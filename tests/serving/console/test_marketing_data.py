"""What the marketing pages compute, without the app: the calculator, the form, charts, segments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import table_path, write_parquet_atomic
from features.catalog import SCORES_VIEW
from features.store import EVENT_TS, batch_table_path
from models.experiments.definition import ExperimentDefinition
from models.experiments.power import plan_experiment
from models.experiments.store import ExperimentStore
from models.segments.model import INACTIVE, LOG_COLUMNS, SegmentModel
from serving.console.marketing_data import (
    DEFINITION_FIELDS,
    TRAINED_SEGMENTS_TABLE,
    PageCache,
    analysis_inputs,
    centres,
    definition_fields,
    field_errors,
    line_chart,
    new_experiment_defaults,
    nice_ticks,
    power_result,
    segment_counts,
    segment_profiles,
)

PEPPER = "test-pepper-not-a-secret"
SHARES = (
    "share_online_90d",
    "share_store_90d",
    "share_app_90d",
    "share_food_90d",
    "share_travel_90d",
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on an empty data directory."""
    return Settings(data_dir=tmp_path / "data", ip_pepper=PEPPER)


def test_the_calculator_gives_the_experiments_codes_plan() -> None:
    form = {
        "baseline": "12.5",
        "sd": "30",
        "mde": "0.04",
        "alpha": "0.05",
        "power": "0.9",
        "daily_customers": "420",
        "treatment_share": "0.3",
    }
    found = power_result(form)
    expected = plan_experiment(
        daily_customers=420,
        baseline_mean=12.5,
        baseline_variance=900.0,
        mde=0.04,
        alpha=0.05,
        power=0.9,
        treatment_share=0.3,
    )
    assert found.errors == {}
    assert found.plan == expected
    assert found.customers == pytest.approx(expected.n_control + expected.n_treatment)


def test_a_share_needs_no_standard_deviation() -> None:
    form = {"baseline": "0.2", "sd": " ", "mde": "0.05", "alpha": "0.05", "power": "0.8"}
    found = power_result(form | {"daily_customers": "500", "treatment_share": "0.5"})
    assert found.plan == plan_experiment(daily_customers=500, baseline_mean=0.2, mde=0.05)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"alpha": "1.5"}, "alpha"),
        ({"daily_customers": "many"}, "daily_customers"),
        ({"mde": ""}, "mde"),
        ({"baseline": "1.2"}, "baseline"),  # a share above 1, since no sd is given
    ],
)
def test_a_bad_input_names_its_field(changes: dict[str, str], field: str) -> None:
    form = {"baseline": "0.2", "mde": "0.05", "alpha": "0.05", "power": "0.8"}
    found = power_result(form | {"daily_customers": "500", "treatment_share": "0.5"} | changes)
    assert found.plan is None
    assert list(found.errors) == [field]


def test_the_forms_first_values_make_a_valid_experiment(settings: Settings) -> None:
    values = new_experiment_defaults(settings, today=date(2030, 3, 1)) | {
        "key": "boost-test",
        "hypothesis": "A 3% rate lifts margin.",
    }
    lists = {"lifecycle": ["at_risk"], "guardrail_metrics": ["fraud_loss"]}
    definition = ExperimentDefinition.model_validate(definition_fields(values, lists))
    assert definition.start == datetime(2030, 3, 2, tzinfo=UTC)
    assert (definition.stop - definition.start).days == 28
    assert [(v.name, v.weight, v.policy) for v in definition.variants] == [
        ("control", 0.5, "rate_card"),
        ("treatment", 0.5, "rate:0.03"),
    ]
    assert definition.targeting.lifecycle == ("at_risk",)
    assert power_result(values).plan is not None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"treatment_share": "1.5"}, "treatment_share"),
        ({"treatment_policy": "rate:2"}, "treatment_policy"),
        ({"key": "Not A Slug"}, "key"),
        ({"stop": "2030-01-01"}, "stop"),
    ],
)
def test_the_forms_errors_land_on_their_fields(
    settings: Settings, changes: dict[str, str], field: str
) -> None:
    values = new_experiment_defaults(settings, today=date(2030, 3, 1))
    values |= {"key": "k", "hypothesis": "h"} | changes
    with pytest.raises(ValidationError) as refused:
        ExperimentDefinition.model_validate(definition_fields(values, {}))
    assert field in field_errors(refused.value, DEFINITION_FIELDS)


def _model(rng: np.random.Generator) -> SegmentModel:
    columns = (*LOG_COLUMNS, *SHARES)
    d = len(columns)
    return SegmentModel(
        log_columns=LOG_COLUMNS,
        columns=columns,
        weights=np.asarray([1.0] * 4 + [1 / np.sqrt(3)] * 3 + [1 / np.sqrt(2)] * 2),
        mean=rng.uniform(2.0, 3.0, d),  # centres far from 0: nothing is clipped
        scale=rng.uniform(0.5, 2.0, d),
        centers=rng.normal(0.0, 0.2, (2, d)),
        names=("loyal", "bargain"),
    )


def test_the_centres_are_where_the_model_puts_them() -> None:
    model = _model(np.random.default_rng(7))
    typical = pl.DataFrame(centres(model), schema=list(model.columns), orient="row")
    assert np.allclose(model.coordinates(typical), model.centers)


def test_profiles_have_sizes_shares_and_the_largest_mixes() -> None:
    model = _model(np.random.default_rng(3))
    profiles = segment_profiles(model, {"loyal": 30, "bargain": 50, INACTIVE: 20})
    assert [p.segment for p in profiles] == ["loyal", "bargain", INACTIVE]
    assert [p.share for p in profiles] == pytest.approx([0.3, 0.5, 0.2])
    at = dict(zip(model.columns, centres(model)[1], strict=True))
    bargain = profiles[1]
    assert bargain.centre == {c: at[c] for c in LOG_COLUMNS}
    assert [name for name, _ in bargain.channels] == sorted(
        ["online", "store", "app"], key=lambda c: -at[f"share_{c}_90d"]
    )
    assert {name for name, _ in bargain.categories} == {"food", "travel"}
    assert profiles[2].centre is None
    unknown = segment_profiles(model, None)
    assert {(p.customers, p.share) for p in unknown} == {(None, None)}


def test_sizes_come_from_the_latest_scores_else_the_last_training(settings: Settings) -> None:
    assert segment_counts(settings) is None
    trained = batch_table_path(settings, TRAINED_SEGMENTS_TABLE)
    trained.parent.mkdir(parents=True)
    close = datetime(2030, 1, 1, tzinfo=UTC)
    pl.DataFrame(
        {"customer_id": ["a", "b"], "close_ts": [close] * 2, "segment": ["x", "y"]}
    ).write_parquet(trained)
    assert segment_counts(settings) == ({"x": 1, "y": 1}, "the last segments training run")
    stamps = [close, close, datetime(2030, 2, 1, tzinfo=UTC)]
    pl.DataFrame(
        {"customer_id": ["a", "b", "a"], EVENT_TS: stamps, "segment": ["x", "y", "y"]}
    ).write_parquet(batch_table_path(settings, SCORES_VIEW))
    counts, source = segment_counts(settings) or ({}, "")
    assert counts == {"y": 1}
    assert source == "the customer scores serving reads"


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (1234.5, 98765.0), (-3.2, 7.7), (5.0, 5.0)])
def test_ticks_are_round_and_cover_the_range(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low
    assert ticks[-1] >= high
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    assert 2 <= len(ticks) <= 8


def test_the_chart_keeps_its_points_inside_the_plot_area() -> None:
    chart = line_chart([100.0, 250.0, 400.0], [10.0, 30.0, 35.0], [False, True, False])
    lefts = [p.left for p in chart.points]
    tops = [p.top for p in chart.points]
    assert all(chart.left <= x <= chart.right for x in lefts)
    assert all(chart.top <= y <= chart.bottom for y in tops)
    assert lefts == sorted(lefts)
    assert tops[0] > tops[1] > tops[2]  # more margin is higher up
    assert [p.current for p in chart.points] == [False, True, False]
    assert chart.path.startswith(f"M{lefts[0]:.1f},")


def test_the_analysis_inputs_change_with_the_experiments_and_the_data(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    before = analysis_inputs(settings)
    assert analysis_inputs(settings) == before
    definition = ExperimentDefinition.model_validate(
        definition_fields(
            new_experiment_defaults(settings) | {"key": "boost", "hypothesis": "h"}, {}
        )
    )
    ExperimentStore.from_settings(settings).create(definition)
    created = analysis_inputs(settings)
    assert created != before
    table = table_path(settings.data_dir, "transactions")
    write_parquet_atomic(pl.DataFrame({"x": [1]}), table)
    assert analysis_inputs(settings) != created


def test_the_page_cache_keeps_the_last_pages_made() -> None:
    cache = PageCache(size=2)
    made: list[str] = []

    def make(page: str) -> Callable[[], str]:
        def making() -> str:
            made.append(page)
            return page

        return making

    assert cache.get("a", make("A")) == "A"
    assert cache.get("a", make("A again")) == "A"
    cache.get("b", make("B"))
    cache.get("c", make("C"))  # "a" is the oldest: dropped
    assert cache.get("a", make("A2")) == "A2"
    assert made == ["A", "B", "C", "A2"]

    def fail() -> str:
        raise CashbackError("no data yet")

    with pytest.raises(CashbackError):
        cache.get("d", fail)
    assert cache.get("d", make("D")) == "D"
