"""/v1/experiments: create, list, show, start, stop; results and report of the analysis.

Every test runs on a private copy of the served world (`private_world`): the experiment
store writes under the data directory, which the whole session shares.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from cashback.tables import read_table
from cashback.vocab import Role
from models.experiments.analysis import LIFT_COLUMNS
from models.experiments.store import DEFINITIONS_DIR
from pipelines import experiment_analysis, experiments
from serving.experiment_schemas import LiftResult
from tests.serving.conftest import Api
from tests.serving.experiment_world import definition_body, private_world, simulated_experiment

pytestmark = pytest.mark.xdist_group("serving")
PATH = "/v1/experiments"


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """In this module, the served world is a private copy of it (see `private_world`).

    `start_api` and `api` run on it, so that creating, starting and stopping experiments
    never writes into the world the whole session shares.
    """
    return private_world(served_world, tmp_path / "data")


@pytest.fixture
def marketer(api: Api) -> dict[str, str]:
    """Headers with a marketer's key."""
    return api.headers(Role.MARKETER)


@pytest.fixture
def simulated(served_world: Path) -> str:
    """The key of the served world's own experiment (the simulator's rate boost)."""
    return simulated_experiment(served_world)


def create(api: Api, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    """Create an experiment through the API; its stored definition."""
    response = api.client.post(PATH, json=definition_body(**changes), headers=headers)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    return stored


def call(api: Api, headers: dict[str, str], method: str, path: str, **params: Any) -> Any:
    """The response to a request without a body."""
    return api.client.request(method, path, headers=headers, params=params)


def when(text: str) -> datetime:
    """An ISO 8601 time from the API."""
    return datetime.fromisoformat(text)


def _keys(world: Path) -> list[str]:
    keys: list[str] = read_table(world, "experiments").collect()["key"].to_list()
    return keys


def test_create_list_show_start_assign_stop(
    api: Api, marketer: dict[str, str], served_world: Path, simulated: str
) -> None:
    shared = (served_world / "customers.parquet").resolve().parent  # behind the private copy
    assert shared != served_world
    shared_before = (_keys(shared), (shared / DEFINITIONS_DIR).exists())
    existing = _keys(served_world)
    body = definition_body(targeting={"segments": [], "lifecycle": []})
    key = body["key"]
    created = api.client.post(PATH, json=body, headers=marketer)
    assert created.status_code == 201
    assert created.headers["location"] == f"{PATH}/{key}"
    stored = created.json()
    assert stored == body | {
        "stop": "2090-01-01T00:00:00Z",  # a date alone is 00:00 UTC
        "unit": "customer",
        "traffic": 1.0,
        "status": "draft",
        "layer_buckets": None,
    }

    listed = {e["key"]: e for e in call(api, marketer, "GET", PATH).json()}
    assert sorted(listed) == sorted([*existing, key])
    assert listed[key] == {
        "key": key,
        "experiment_id": key,
        "layer": body["layer"],
        "status": "draft",
        "start": body["start"],
        "end": "2090-01-01T00:00:00Z",
        "variants": body["variants"],
        "defined": True,
    }
    assert listed[simulated]["defined"] is False
    shown = call(api, marketer, "GET", f"{PATH}/{key}").json()
    assert shown == {"definition": stored, "assigned": {"control": 0, "boost": 0}}

    before = datetime.now(UTC)
    started = call(api, marketer, "POST", f"{PATH}/{key}/start")
    assert started.status_code == 200
    running = started.json()
    assert running["status"] == "running"
    assert running["layer_buckets"] == {"start": 0, "end": api.settings.experiments.buckets}
    assert before <= when(running["start"]) <= datetime.now(UTC)  # from now, not from 2025

    done = experiments.assign(api.settings, key)
    assert sum(done.variants.values()) > 0
    shown = call(api, marketer, "GET", f"{PATH}/{key}").json()
    assert shown == {"definition": running, "assigned": dict(done.variants)}

    stopped = call(api, marketer, "POST", f"{PATH}/{key}/stop")
    assert stopped.status_code == 200
    assert stopped.json() == running | {"status": "stopped", "stop": stopped.json()["stop"]}
    assert when(stopped.json()["stop"]) <= datetime.now(UTC)
    assert call(api, marketer, "GET", f"{PATH}/{key}").json()["definition"] == stopped.json()

    # the shared world behind the private copy was never written
    assert (_keys(shared), (shared / DEFINITIONS_DIR).exists()) == shared_before


def test_a_key_taken_gets_409(api: Api, marketer: dict[str, str]) -> None:
    key = create(api, marketer)["key"]
    again = api.client.post(PATH, json=definition_body(key), headers=marketer)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"experiment {key!r} already exists (draft)")


def test_starting_into_a_layer_without_room_gets_409_naming_the_holder(
    api: Api, marketer: dict[str, str]
) -> None:
    layer = f"full-{uuid.uuid4().hex[:8]}"
    first = create(api, marketer, layer=layer)["key"]
    second = create(api, marketer, layer=layer, traffic=0.5)["key"]
    assert call(api, marketer, "POST", f"{PATH}/{first}/start").status_code == 200
    refused = call(api, marketer, "POST", f"{PATH}/{second}/start")
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith(f"cannot start {second!r}: layer {layer!r} has no 5,000 free buckets")
    assert repr(first) in detail
    assert call(api, marketer, "GET", f"{PATH}/{second}").json()["definition"]["status"] == "draft"


def test_a_transition_not_allowed_gets_409(api: Api, marketer: dict[str, str]) -> None:
    key = create(api, marketer)["key"]
    early = call(api, marketer, "POST", f"{PATH}/{key}/stop")
    assert early.status_code == 409
    assert "is draft: it cannot become stopped (allowed: running)" in early.json()["detail"]
    assert call(api, marketer, "POST", f"{PATH}/{key}/start").status_code == 200
    assert call(api, marketer, "POST", f"{PATH}/{key}/stop").status_code == 200
    again = call(api, marketer, "POST", f"{PATH}/{key}/start")
    assert again.status_code == 409
    assert "is stopped: it cannot become running (allowed: none: it is final)" in str(again.json())


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("POST", "/start"), ("POST", "/stop"), ("GET", "/results"), ("GET", "/report")],
)
def test_an_unknown_key_gets_404(
    api: Api, marketer: dict[str, str], method: str, suffix: str
) -> None:
    response = call(api, marketer, method, f"{PATH}/no-such-experiment{suffix}")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no experiment 'no-such-experiment': GET ")


def test_the_simulated_experiment_is_listed_but_has_no_definition_to_show(
    api: Api, marketer: dict[str, str], simulated: str
) -> None:
    response = call(api, marketer, "GET", f"{PATH}/{simulated}")
    assert response.status_code == 409
    assert "written by the simulator or an importer" in response.json()["detail"]


WEIGHTS = [
    {"name": "control", "weight": 0.6, "policy": "rate_card"},
    {"name": "boost", "weight": 0.6, "policy": "rate:0.03"},
]
BAD_POLICY = [
    {"name": "control", "weight": 0.5, "policy": "rate_card"},
    {"name": "boost", "weight": 0.5, "policy": "rate:2"},
]


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"variants": WEIGHTS}, ["body", "variants"], "variant weights sum to 1.2, expected 1"),
        ({"variants": BAD_POLICY}, ["body", "variants", 1, "policy"], "a fixed rate is"),
        ({"stop": "2024-12-31"}, ["body", "stop"], "must be after start"),
        ({"start": "2025-01-01T00:00:00"}, ["body", "start"], "has no time zone"),
        ({"key": "Rate Boost", "layer": "rates"}, ["body", "key"], "is not a slug"),
        ({"primary_metric": "revenue"}, ["body", "primary_metric"], "Input should be"),
        ({"status": "running"}, ["body", "status"], "set by POST /v1/experiments/{key}/start"),
        ({"trafic": 0.5}, ["body", "trafic"], "Extra inputs are not permitted"),
    ],
)
def test_an_invalid_definition_gets_422_naming_the_field(
    api: Api, marketer: dict[str, str], changes: dict[str, Any], loc: list[Any], words: str
) -> None:
    body = definition_body(**changes)
    response = api.client.post(PATH, json=body, headers=marketer)
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}
    assert words in errors[tuple(loc)], errors
    listed = [e["key"] for e in call(api, marketer, "GET", PATH).json()]
    assert body["key"] not in listed


def _same(got: object, expected: object) -> bool:
    """Equal, floats within 1e-9 relative; a NaN is answered as null."""
    if isinstance(expected, float) and math.isnan(expected):
        return got is None
    if isinstance(expected, float):
        return isinstance(got, int | float) and math.isclose(got, expected, rel_tol=1e-9)
    return got == expected


def test_lift_results_have_the_columns_of_the_analysis() -> None:
    assert list(LiftResult.model_fields) == LIFT_COLUMNS.names()


@pytest.mark.parametrize(
    "options",
    [{}, {"cap": 0.99, "correction": "bh", "primary": "spend_per_customer"}],
    ids=["defaults", "options"],
)
def test_results_are_the_analysis_of_the_simulated_experiment(
    api: Api, marketer: dict[str, str], simulated: str, options: dict[str, Any]
) -> None:
    response = call(api, marketer, "GET", f"{PATH}/{simulated}/results", **options)
    assert response.status_code == 200
    got = response.json()
    analysis = experiment_analysis.run(api.settings, simulated, write=False, **options).analysis

    assert got["design"]["key"] == simulated
    assert when(got["design"]["end"]) == analysis.design.end
    assert got["settings"]["correction"] == analysis.options.correction
    assert got["settings"]["cap_quantile"] == analysis.options.cap_quantile
    assert got["primary_metric"] == analysis.primary_metric
    assert got["primary_metric"] == options.get("primary", "net_incremental_margin")
    assert got["verdicts"] == [
        {"variant": v.variant, "decision": v.decision, "text": v.text} for v in analysis.verdicts
    ]
    srm = analysis.srm
    assert got["srm"]["mismatch"] is srm.mismatch
    assert got["srm"]["p_value"] == pytest.approx(srm.p_value, rel=1e-12)
    assert [v["observed"] for v in got["srm"]["variants"]] == list(srm.observed)
    expected = analysis.to_frame().to_dicts()
    assert [(r["metric"], r["variant"]) for r in got["lifts"]] == [
        (r["metric"], r["variant"]) for r in expected
    ]
    for row, want in zip(got["lifts"], expected, strict=True):
        wrong = {c: (row[c], want[c]) for c in want if not _same(row[c], want[c])}
        assert not wrong, (want["metric"], wrong)
    assert got["messages"] == list(analysis.messages)
    # a read writes nothing: `cashback experiments analyze` keeps results
    assert not experiment_analysis.results_dir(api.settings, simulated).exists()


def test_results_without_enough_data_get_409_saying_why(api: Api, marketer: dict[str, str]) -> None:
    key = create(api, marketer, targeting={})["key"]
    draft = call(api, marketer, "GET", f"{PATH}/{key}/results")
    assert draft.status_code == 409
    assert (
        f"experiment {key!r} has no assignments: nothing to analyse yet" in draft.json()["detail"]
    )
    # started now and assigned now: after the served world's data end
    call(api, marketer, "POST", f"{PATH}/{key}/start")
    experiments.assign(api.settings, key)
    later = call(api, marketer, "GET", f"{PATH}/{key}/report")
    assert later.status_code == 409
    assert "after the data's end" in later.json()["detail"]


def test_bad_analysis_options_get_422_naming_them(
    api: Api, marketer: dict[str, str], simulated: str
) -> None:
    response = call(api, marketer, "GET", f"{PATH}/{simulated}/results", cap=0, correction="x")
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [
        ["query", "cap"],
        ["query", "correction"],
    ]


def test_the_report_is_the_html_page_with_the_verdict(
    api: Api, marketer: dict[str, str], simulated: str
) -> None:
    response = call(api, marketer, "GET", f"{PATH}/{simulated}/report")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    analysis = experiment_analysis.run(api.settings, simulated, write=False).analysis
    for verdict in analysis.verdicts:
        assert str(escape(verdict.text)) in page
