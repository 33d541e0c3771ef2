"""`cashback exposures export`: the API's exposures and first assignments into the tables."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from cashback.contract import EXPOSURES
from cashback.errors import CashbackError
from cashback.tables import read_table, validate_directory
from cashback.vocab import Role
from models.experiments.definition import parse_definition
from models.experiments.store import ExperimentStore
from pipelines import export_exposures
from tests.serving.conftest import StartApi
from tests.serving.experiment_world import definition_body, private_world
from tests.serving.helpers import offers_batch, world_customers

pytestmark = pytest.mark.xdist_group("serving")
AFTER = "2025-06-08T12:00:00Z"


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """A private copy of the served world whose exposures table may be written."""
    world = private_world(served_world, tmp_path / "data")
    exposures = world / EXPOSURES.file_name
    exposures.unlink()
    shutil.copytree(served_world / EXPOSURES.file_name, exposures)
    return world


def test_the_export_adds_new_exposures_and_first_assignments_once(
    start_api: StartApi, served_world: Path
) -> None:
    # given a running experiment and offers decided by the API
    body = definition_body("export-test", start="2025-05-01T00:00:00Z")
    del body["targeting"]  # everyone
    store = ExperimentStore(served_world)
    store.create(parse_definition(body, "test"))
    store.start("export-test", datetime.fromisoformat("2025-05-02T00:00:00+00:00"))
    api = start_api()
    # after the world's own exposures end (a served window may not overlap them)
    answers = offers_batch(api, world_customers(api, 80), api.key(Role.ENGINE), ts=AFTER)
    before = read_table(served_world, EXPOSURES.name).collect()
    # when the export runs twice
    first = export_exposures.run(api.settings)
    second = export_exposures.run(api.settings)
    # then every served exposure is in the table once, with its propensity and variant
    after = read_table(served_world, EXPOSURES.name).collect()
    assert (first.stored, first.added, second.added) == (len(answers), len(answers), 0)
    assert after.height == before.height + len(answers)
    served = after.filter(pl.col("exposure_id").is_in([a["exposure_id"] for a in answers]))
    by_id = {a["exposure_id"]: a for a in answers}
    for row in served.iter_rows(named=True):
        answer = by_id[row["exposure_id"]]
        assert row["rate"] == answer["rate"]
        assert row["propensity"] == answer["propensity"]
        assert row["variant"] == answer["variant"]
    # and the experiment's customers have their first assignment, recorded once
    in_experiment = {a["customer_id"]: a["variant"] for a in answers if a["experiment"]}
    assert in_experiment
    assigned = store.assignments("export-test").collect()
    assert dict(zip(assigned["customer_id"], assigned["variant"], strict=True)) == in_experiment
    assert first.assignments == {"export-test": len(in_experiment)}
    assert second.assignments == {"export-test": 0}
    assert validate_directory(served_world).ok


def test_exposures_overlapping_the_tables_are_refused_and_nothing_is_written(
    start_api: StartApi, served_world: Path
) -> None:
    # given offers served while the world's own exposures are still valid
    api = start_api()
    offers_batch(api, world_customers(api, 40), api.key(Role.ENGINE))
    before = read_table(served_world, EXPOSURES.name).collect()
    # when the export runs, then it says why and writes nothing
    with pytest.raises(CashbackError, match="overlap exposures of the table"):
        export_exposures.run(api.settings)
    assert read_table(served_world, EXPOSURES.name).collect().equals(before)
