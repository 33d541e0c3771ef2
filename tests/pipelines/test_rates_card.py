"""`cashback rates card`: the rate card and the average rate by excluded attribute."""

from __future__ import annotations

import io

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import Settings
from pipelines.rates_card import CARD_FILE, FAIRNESS_FILE, card_totals, fairness_gaps, load_card
from pipelines.rates_frontier import rates_directory

CARD = pl.DataFrame(
    {
        "segment": ["loyal", "loyal", "new", "new"],
        "category": ["groceries", "travel", "groceries", "travel"],
        "rate": [0.01, 0.02, 0.03, 0.0],
        "customers": [120, 120, 30, 30],
        "expected_incremental_margin": [0.0, 14.25, 3.5, -1.125],
        "expected_cashback": [40.5, 9.75, 2.25, 0.0],
    }
)
FAIRNESS = pl.DataFrame(
    {
        "attribute": ["age_band", "age_band", "region", "region", "region"],
        "value": ["18-24", "25-34", "north", "south", "unknown"],
        "customers": [100, 50, 75, 50, 25],
        "average_rate": [0.02, 0.035, 0.03, 0.02, 0.02],
    },
    schema_overrides={"customers": pl.UInt32},
)


@pytest.fixture
def trained(settings: Settings) -> Settings:
    """The outputs of a rates run: the card and the fairness table."""
    directory = rates_directory(settings)
    directory.mkdir(parents=True)
    CARD.write_parquet(directory / CARD_FILE)
    FAIRNESS.write_parquet(directory / FAIRNESS_FILE)
    return settings


def _card(*args: str) -> str:
    result = CliRunner().invoke(app, ["rates", "card", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def _card_error(*args: str) -> str:
    result = CliRunner().invoke(app, ["rates", "card", *args])
    assert isinstance(result.exception, CashbackError), repr(result.exception)
    return str(result.exception)


def test_the_exported_card_is_the_runs_card(trained: Settings) -> None:
    # when the card is exported as csv, and as parquet (the format from the suffix)
    folder = trained.data_dir.parent / "export"
    said = _card("--format", "csv", "--out", str(folder / "card.csv"))
    _card("--out", str(folder / "card.parquet"))

    # then both files hold the run's card, and the fairness table is beside them
    written = pl.read_parquet(trained.data_dir / "rates" / CARD_FILE)
    assert_frame_equal(pl.read_csv(folder / "card.csv"), written)
    assert_frame_equal(pl.read_parquet(folder / "card.parquet"), written)
    fairness = pl.read_parquet(folder / "card_fairness.parquet")
    assert_frame_equal(fairness.drop("difference"), FAIRNESS)
    assert pl.read_csv(folder / "card_fairness.csv").height == FAIRNESS.height
    assert "rate card written to" in said


def test_the_card_as_csv_on_stdout_is_the_runs_card(trained: Settings) -> None:
    printed = _card("--format", "csv")
    written = pl.read_parquet(trained.data_dir / "rates" / CARD_FILE)
    assert_frame_equal(pl.read_csv(io.StringIO(printed)), written)


@pytest.mark.usefixtures("trained")
def test_the_printed_card_has_its_totals_and_the_gaps_by_attribute() -> None:
    said = _card()
    assert "total" in said
    assert "150" in said  # customers: 120 loyal + 30 new, each once
    assert "16.62" in said  # expected incremental margin over the cells
    assert "region: average rates differ by 1.00 points between south (lowest) and north" in said
    assert "age_band: average rates differ by 1.50 points between 18-24 (lowest) and 25-34" in said


def test_totals_count_each_segments_customers_once() -> None:
    assert card_totals(CARD) == {
        "customers": 150.0,
        "expected_incremental_margin": pytest.approx(16.625),
        "expected_cashback": pytest.approx(52.5),
    }


def test_each_group_is_set_against_the_average_rate_of_all_customers(trained: Settings) -> None:
    card = load_card(rates_directory(trained))
    region = card.fairness.filter(pl.col("attribute") == "region")
    # all customers: (75 x 3 % + 50 x 2 % + 25 x 2 %) / 150 = 2.5 %
    assert region["difference"].to_list() == pytest.approx([0.005, -0.005, -0.005])
    gaps = fairness_gaps(card.fairness)
    assert gaps.to_dicts() == [
        {
            "attribute": "age_band",
            "lowest": "18-24",
            "highest": "25-34",
            "gap": pytest.approx(0.015),
        },
        {"attribute": "region", "lowest": "south", "highest": "north", "gap": pytest.approx(0.01)},
    ]


def test_without_a_rates_run_or_with_a_bad_format_the_card_says_what_to_do(
    settings: Settings,
) -> None:
    assert "run `cashback train rates` first" in _card_error()
    assert "run `cashback train rates` first" in _card_error("--format", "csv")
    directory = rates_directory(settings)
    directory.mkdir(parents=True)
    CARD.write_parquet(directory / CARD_FILE)
    FAIRNESS.write_parquet(directory / FAIRNESS_FILE)
    assert "give the file to write with --out" in _card_error("--format", "parquet")
    out = str(settings.data_dir / "card.csv")
    assert "--format table prints the card" in _card_error("--format", "table", "--out", out)
    assert ".csv or .parquet" in _card_error("--out", str(settings.data_dir / "card.xlsx"))
