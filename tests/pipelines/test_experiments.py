"""`cashback experiments ...`: create, list, show, start, stop and assign, through the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import ExperimentSettings, get_settings
from cashback.tables import load_table, validate_directory, write_table, write_table_part
from models.experiments.assignment import assign_batch
from models.experiments.store import ExperimentStore

CUSTOMERS = 3_000
SEGMENTS = ("loyal", "bargain", "casual")
STAGES = ("new", "regular", "at_risk", "inactive")


def customers_frame(n: int, first: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [f"c{i:06d}" for i in range(first, first + n)],
            "signup_ts": [datetime(2024, 1, 1, tzinfo=UTC)] * n,
            "region": [None] * n,
            "age_band": [None] * n,
            "acquisition_channel": ["online"] * n,
        }
    )


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory with a customers table, as the CLI's data directory."""
    data = tmp_path / "data"
    write_table(data, "customers", customers_frame(CUSTOMERS))
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(data))
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


def definition(key: str = "rate-boost", **changes: Any) -> dict[str, Any]:
    return {
        "key": key,
        "hypothesis": "A 3% rate lifts spend more than it costs.",
        "layer": "rates",
        "variants": [
            {"name": "control", "weight": 0.5, "policy": "rate_card"},
            {"name": "boost", "weight": 0.5, "policy": "rate:0.03"},
        ],
        "start": "2025-01-01",
        "stop": "2090-01-01",
        "primary_metric": "net_incremental_margin",
        "guardrail_metrics": ["fraud_loss"],
        **changes,
    }


def yaml_file(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / f"{document.get('key', 'experiment')}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code != 0
    assert isinstance(result.exception, CashbackError), repr(result.exception)
    return str(result.exception)


def create_and_start(tmp_path: Path, key: str, **changes: Any) -> None:
    cli("experiments", "create", str(yaml_file(tmp_path, definition(key, **changes))))
    cli("experiments", "start", key)


def stray_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_an_experiment_goes_from_file_to_assignments(data_dir: Path, tmp_path: Path) -> None:
    # given a definition file
    path = yaml_file(tmp_path, definition())

    # when it is created, listed and shown
    said = cli("experiments", "create", str(path))
    listed = cli("experiments", "list")
    shown = cli("experiments", "show", "rate-boost")

    # then it is a draft with its definition
    assert "created rate-boost (draft, layer rates)" in said
    assert "rate-boost" in listed
    assert "draft" in listed
    assert "A 3% rate lifts spend" in shown
    assert "assigned so far: control 0, boost 0" in shown

    # when it starts and its customers are assigned
    started = cli("experiments", "start", "rate-boost")
    assigned = cli("experiments", "assign", "rate-boost")

    # then every customer outside the holdout is in, split about evenly
    assert "buckets [0, 10000) of layer rates" in started
    table = load_table(data_dir, "assignments")
    holdout = ExperimentSettings().holdout_share
    assert table.height == pytest.approx(CUSTOMERS * (1 - holdout), abs=60)
    assert table["customer_id"].is_unique().all()
    assert table["variant"].value_counts()["count"].min() > 0.45 * table.height  # type: ignore[operator]
    assert f"{CUSTOMERS:,} customers" in assigned
    assert f"{table.height:,} taken by rate-boost ({table.height:,} new" in assigned
    # and the tables satisfy the contract
    report = validate_directory(data_dir)
    assert report.ok, report.violations
    assert "assigned so far: control" in cli("experiments", "show", "rate-boost")

    # when it stops
    cli("experiments", "stop", "rate-boost")

    # then it is stopped for good, and assigns no more
    assert "stopped" in cli("experiments", "list")
    assert "is stopped: it cannot become running" in cli_error("experiments", "start", "rate-boost")
    assert "only a running experiment assigns" in cli_error("experiments", "assign", "rate-boost")
    assert not stray_files(data_dir)


def test_holdout_customers_get_no_assignment(data_dir: Path, tmp_path: Path) -> None:
    create_and_start(tmp_path, "rate-boost")
    cli("experiments", "assign", "rate-boost")

    ids = load_table(data_dir, "customers")["customer_id"]
    expected = assign_batch(ids, [], get_settings())
    held = set(expected.filter(pl.col("holdout"))["customer_id"])
    assigned = set(load_table(data_dir, "assignments")["customer_id"])
    assert held
    assert not held & assigned
    assert held | assigned == set(ids)


def test_a_key_is_never_reused(data_dir: Path, tmp_path: Path) -> None:
    path = yaml_file(tmp_path, definition())
    cli("experiments", "create", str(path))
    message = cli_error("experiments", "create", str(path))
    assert "experiment 'rate-boost' already exists (draft)" in message


def test_a_bad_file_is_refused_by_name_and_nothing_is_written(
    data_dir: Path, tmp_path: Path
) -> None:
    path = yaml_file(tmp_path, definition(stop="2024-01-01"))
    message = cli_error("experiments", "create", str(path))
    assert str(path) in message
    assert "stop:" in message
    assert not (data_dir / "experiments.parquet").exists()
    assert not (data_dir / "experiment_definitions").exists()


def test_start_refuses_an_overlapping_experiment_and_names_it(
    data_dir: Path, tmp_path: Path
) -> None:
    # given a running experiment of layer rates for everyone
    create_and_start(tmp_path, "first")

    # when another one of the same layer, window and targeting starts
    cli("experiments", "create", str(yaml_file(tmp_path, definition("second"))))
    message = cli_error("experiments", "start", "second")

    # then it is refused, naming the first; and it stays a draft
    assert "cannot start 'second'" in message
    assert "'first' (running" in message
    assert "buckets [0, 10000)" in message
    assert ExperimentStore(data_dir).get("second").status == "draft"


def test_experiments_that_cannot_meet_run_side_by_side(data_dir: Path, tmp_path: Path) -> None:
    # given a running experiment for loyal customers until 2090
    create_and_start(tmp_path, "loyal", targeting={"segments": ["loyal"]})

    # when others start: other segments, another layer, a later window
    create_and_start(tmp_path, "bargain", targeting={"segments": ["bargain"]})
    create_and_start(tmp_path, "email", layer="email")
    create_and_start(tmp_path, "later", start="2091-01-01", stop="2092-01-01")

    # then all run, each owning the whole layer
    store = ExperimentStore(data_dir)
    for key in ("loyal", "bargain", "email", "later"):
        got = store.get(key)
        assert got.status == "running"
        assert got.layer_buckets is not None
        assert got.layer_buckets.size == 10_000
    assert [d.key for d in store.running()] == ["loyal", "bargain", "email", "later"]


def test_traffic_shares_split_a_layer_into_disjoint_ranges(data_dir: Path, tmp_path: Path) -> None:
    # given two half-traffic experiments and a third that finds no room
    create_and_start(tmp_path, "left", traffic=0.5)
    create_and_start(tmp_path, "right", traffic=0.5)
    cli("experiments", "create", str(yaml_file(tmp_path, definition("third", traffic=0.1))))
    message = cli_error("experiments", "start", "third")

    # then each owns half, and the third names both
    store = ExperimentStore(data_dir)
    left, right = store.get("left").layer_buckets, store.get("right").layer_buckets
    assert (left.start, left.end, right.start, right.end) == (0, 5_000, 5_000, 10_000)  # type: ignore[union-attr]
    assert "'left'" in message
    assert "'right'" in message

    # when both assign, no customer is in both
    cli("experiments", "assign", "left")
    cli("experiments", "assign", "right")
    table = load_table(data_dir, "assignments")
    assert table["customer_id"].is_unique().all()
    assert set(table["experiment_id"]) == {"left", "right"}

    # and stopping one frees its range for the third
    cli("experiments", "stop", "left")
    cli("experiments", "start", "third")
    third = store.get("third").layer_buckets
    assert (third.start, third.end) == (0, 1_000)  # type: ignore[union-attr]


def test_assignments_are_sticky(data_dir: Path, tmp_path: Path) -> None:
    # given an assigned experiment
    create_and_start(tmp_path, "rate-boost")
    cli("experiments", "assign", "rate-boost")
    first = load_table(data_dir, "assignments")

    # when assigned again after new customers signed up
    everyone = pl.concat([customers_frame(CUSTOMERS), customers_frame(500, first=CUSTOMERS)])
    write_table(data_dir, "customers", everyone)
    said = cli("experiments", "assign", "rate-boost")

    # then earlier rows are unchanged and only newcomers are added
    second = load_table(data_dir, "assignments")
    assert second.head(first.height).equals(first)
    added = second.height - first.height
    assert 400 < added <= 500
    assert f"({added:,} new, {first.height:,} kept" in said

    # when the weights change (a re-weighted definition) and assignment runs again
    store = ExperimentStore(data_dir)
    original = store.get("rate-boost")
    skewed = original.model_copy(
        update={
            "variants": (
                original.variants[0].model_copy(update={"weight": 0.9}),
                original.variants[1].model_copy(update={"weight": 0.1}),
            )
        }
    )
    now = datetime.now(UTC)
    redone = assign_batch(everyone["customer_id"], [skewed], get_settings(), at=now)
    taken = redone.filter(pl.col("experiment_key") == "rate-boost").select("customer_id", "variant")
    recorded = store.record_assignments("rate-boost", taken, now)

    # then every customer keeps the first assignment, though many would now differ
    third = load_table(data_dir, "assignments")
    assert third.equals(second)
    assert (recorded.added, recorded.kept) == (0, second.height)
    changed = taken.join(second, on="customer_id").filter(
        pl.col("variant") != pl.col("variant_right")
    )
    assert changed.height > 0.3 * second.height


def test_assignments_stored_as_parts_get_a_new_part(data_dir: Path, tmp_path: Path) -> None:
    # given an assignments table stored as a directory of parts, as the simulator writes it
    earlier = pl.DataFrame(
        {
            "experiment_id": ["older"] * 3,
            "customer_id": ["c000000", "c000001", "c000002"],
            "variant": ["control", "treatment", "control"],
            "ts": [datetime(2024, 6, 1, tzinfo=UTC)] * 3,
        }
    )
    part = write_table_part(data_dir, "assignments", 0, earlier)
    before = part.read_bytes()
    create_and_start(tmp_path, "rate-boost")

    # when customers are assigned, twice
    cli("experiments", "assign", "rate-boost")
    cli("experiments", "assign", "rate-boost")

    # then the new rows are one new part, the old part is untouched, nothing is duplicated
    assert sorted(p.name for p in part.parent.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert part.read_bytes() == before
    table = load_table(data_dir, "assignments")
    assert table.filter(pl.col("experiment_id") == "older").height == 3
    assert table.filter(pl.col("experiment_id") == "rate-boost")["customer_id"].is_unique().all()


def test_targeted_assignment_reads_segments_and_stages_from_a_file(
    data_dir: Path, tmp_path: Path
) -> None:
    # given an experiment for loyal or casual customers at risk
    targeting = {"segments": ["loyal", "casual"], "lifecycle": ["at_risk"]}
    create_and_start(tmp_path, "win-back", targeting=targeting)

    # when assigned from the customers table alone, it asks for the columns
    message = cli_error("experiments", "assign", "win-back")
    assert "targets by segment and lifecycle" in message
    assert "--customers" in message

    # when assigned from a file with segments and stages
    ids = [f"c{i:06d}" for i in range(CUSTOMERS)]
    file = tmp_path / "customers.csv"
    frame = pl.DataFrame(
        {
            "customer_id": ids,
            "segment": [SEGMENTS[i % 3] for i in range(CUSTOMERS)],
            "lifecycle": [STAGES[i % 4] for i in range(CUSTOMERS)],
        }
    )
    frame.write_csv(file)
    cli("experiments", "assign", "win-back", "--customers", str(file))

    # then only targeted customers are in
    table = load_table(data_dir, "assignments").join(frame, on="customer_id")
    assert table.height > 0
    assert set(table["segment"]) == {"loyal", "casual"}
    assert set(table["lifecycle"]) == {"at_risk"}


def test_experiments_of_the_simulator_or_an_importer_are_listed_and_block_their_layer(
    data_dir: Path, tmp_path: Path
) -> None:
    # given an imported running experiment of layer rates, without a definition
    imported = pl.DataFrame(
        {
            "experiment_id": ["exp-sim"],
            "key": ["sim_boost"],
            "layer": ["rates"],
            "variants": [
                [
                    {"name": "control", "weight": 0.5, "policy": "explore"},
                    {"name": "treatment", "weight": 0.5, "policy": "boost"},
                ]
            ],
            "start_ts": [datetime(2025, 1, 1, tzinfo=UTC)],
            "end_ts": [datetime(2095, 1, 1, tzinfo=UTC)],
            "status": ["running"],
        }
    )
    write_table(data_dir, "experiments", imported)

    # then it is listed, cannot be shown or started, and blocks the layer
    assert "sim_boost" in cli("experiments", "list")
    assert "has no definition" in cli_error("experiments", "show", "sim_boost")
    cli("experiments", "create", str(yaml_file(tmp_path, definition())))
    assert "'sim_boost' (running" in cli_error("experiments", "start", "rate-boost")
    assert "no experiment 'nope' (known: rate-boost, sim_boost)" in cli_error(
        "experiments", "show", "nope"
    )


def test_no_experiments_yet(data_dir: Path) -> None:
    assert "no experiments yet" in cli("experiments", "list")
