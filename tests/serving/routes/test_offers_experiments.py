"""POST /v1/offers/recommend for customers in a running experiment: its variants' policies."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cashback.vocab import Role
from models.experiments.assignment import assign
from models.experiments.definition import parse_definition
from models.experiments.store import ExperimentStore
from tests.serving.conftest import StartApi
from tests.serving.experiment_world import definition_body, private_world
from tests.serving.helpers import WHEN, offers_batch, world_customers

pytestmark = pytest.mark.xdist_group("serving")


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """In this module, the served world writes its experiments apart (see `private_world`)."""
    return private_world(served_world, tmp_path / "data")


def test_an_experiment_variant_gets_its_policy_without_exploration(
    start_api: StartApi, served_world: Path
) -> None:
    body = definition_body(
        "boost-test",
        start="2025-05-01T00:00:00Z",
        variants=[
            {"name": "control", "weight": 0.5, "policy": "rate:0.01"},
            {"name": "boost", "weight": 0.5, "policy": "rate:0.05"},
        ],
    )
    del body["targeting"]  # everyone
    store = ExperimentStore(served_world)
    store.create(parse_definition(body, "test"))
    started = store.start("boost-test", datetime.fromisoformat("2025-05-02T00:00:00+00:00"))
    api = start_api(serving={"exploration_share": 1.0})
    customers = world_customers(api, 60)
    answers = offers_batch(api, customers, api.key(Role.ENGINE))
    for customer, answer in zip(customers, answers, strict=True):
        # the experiment targets everyone: segment and lifecycle do not matter
        expected = assign(customer, [started], api.settings, at=datetime.fromisoformat(WHEN))
        if expected.holdout or expected.experiment_key is None:
            assert answer["source"] in {"holdout", "exploration"}
            continue
        assert answer["source"] == "experiment"
        assert answer["experiment"] == "boost-test"
        assert answer["variant"] == expected.variant
        assert answer["rate"] == (0.05 if expected.variant == "boost" else 0.01)
        assert answer["propensity"] == 1.0
    assert sum(a["source"] == "experiment" for a in answers) > len(customers) / 2
