"""Experiment definitions: YAML loading, clear errors naming file and field, transitions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cashback.errors import CashbackError
from cashback.vocab import ExperimentMetric, ExperimentStatus, Lifecycle
from models.experiments.definition import (
    ExperimentDefinition,
    Targeting,
    load_definition,
    parse_definition,
)
from tests.conftest import PROJECT_ROOT

VALID: dict[str, Any] = {
    "key": "rate-boost-q3",
    "hypothesis": "A 3% rate lifts the spend of at-risk customers more than it costs.",
    "layer": "rates",
    "variants": [
        {"name": "control", "weight": 0.5, "policy": "rate_card"},
        {"name": "boost", "weight": 0.25, "policy": "rate:0.03"},
        {"name": "offer", "weight": 0.25, "policy": "offer:o-summer"},
    ],
    "targeting": {"segments": ["bargain_hunters"], "lifecycle": ["at_risk", "regular"]},
    "unit": "customer",
    "start": "2025-07-01T00:00:00Z",
    "stop": "2025-08-01",
    "primary_metric": "net_incremental_margin",
    "guardrail_metrics": ["fraud_loss", "cashback_paid"],
}


def write(tmp_path: Path, document: object, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def with_(**changes: object) -> dict[str, Any]:
    return {**VALID, **changes}


def error_of(tmp_path: Path, document: object) -> str:
    path = write(tmp_path, document)
    with pytest.raises(CashbackError) as caught:
        load_definition(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


def test_a_full_definition_loads_from_yaml(tmp_path: Path) -> None:
    definition = load_definition(write(tmp_path, VALID))

    assert definition.key == "rate-boost-q3"
    assert [v.name for v in definition.variants] == ["control", "boost", "offer"]
    assert definition.targeting.lifecycle == (Lifecycle.AT_RISK, Lifecycle.REGULAR)
    assert definition.start == datetime(2025, 7, 1, tzinfo=UTC)
    assert definition.stop == datetime(2025, 8, 1, tzinfo=UTC)  # a date is 00:00 UTC
    assert definition.primary_metric == ExperimentMetric.NET_INCREMENTAL_MARGIN
    assert definition.status == ExperimentStatus.DRAFT
    assert definition.traffic == 1.0
    assert definition.layer_buckets is None


def test_yaml_timestamps_and_offsets_become_utc(tmp_path: Path) -> None:
    # unquoted YAML timestamps are parsed by YAML itself; an offset is converted to UTC
    path = tmp_path / "e.yaml"
    text = yaml.safe_dump(with_(start="placeholder")).replace(
        "start: placeholder", "start: 2025-07-01T02:00:00+02:00"
    )
    path.write_text(text)
    assert load_definition(path).start == datetime(2025, 7, 1, tzinfo=UTC)


def test_targeting_and_guardrails_may_be_left_out(tmp_path: Path) -> None:
    minimal = {k: v for k, v in VALID.items() if k not in {"targeting", "guardrail_metrics"}}
    definition = load_definition(write(tmp_path, minimal))
    assert definition.targeting == Targeting()
    assert definition.targeting.includes(None, None)
    assert definition.guardrail_metrics == ()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "rate_card"},
                    {"name": "b", "weight": 0.4, "policy": "rate_card"},
                ]
            },
            ["variants:", "sum to 0.9", "within 1e-09"],
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "rate_card"},
                    {"name": "a", "weight": 0.5, "policy": "rate:0.02"},
                ]
            },
            ["variants:", "unique", "repeated: a"],
        ),
        ({"primary_metric": "revenue"}, ["primary_metric:", "got 'revenue'", "retention_30d"]),
        (
            {"guardrail_metrics": ["fraud_loss", "clicks"]},
            ["guardrail_metrics[1]:", "got 'clicks'"],
        ),
        (
            {"guardrail_metrics": ["fraud_loss", "fraud_loss"]},
            ["guardrail_metrics:", "more than once"],
        ),
        ({"guardrail_metrics": ["net_incremental_margin"]}, ["guardrail_metrics:", "primary"]),
        ({"stop": "2025-06-01"}, ["stop:", "must be after start"]),
        ({"key": "Rate Boost!"}, ["key:", "'Rate Boost!' is not a slug"]),
        ({"layer": "-rates"}, ["layer:", "not a slug"]),
        ({"unit": "session"}, ["unit:", "'customer'"]),
        ({"colour": "blue"}, ["colour:", "unknown field"]),
        ({"start": "2025-07-01T00:00:00"}, ["start:", "no time zone"]),
        ({"start": "next monday"}, ["start:", "not a date or an ISO 8601 time"]),
        ({"hypothesis": "   "}, ["hypothesis:", "blank"]),
        ({"traffic": 0}, ["traffic:", "greater than 0"]),
        ({"targeting": {"lifecycle": ["sleepy"]}}, ["targeting.lifecycle[0]:", "at_risk"]),
        (
            {"variants": [{"name": "a", "weight": 1.0, "policy": "rate_card"}]},
            ["variants:", "at least 2"],
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "rate_card"},
                    {"name": "b", "weight": 0.5, "policy": "rate:1.5"},
                ]
            },
            ["variants[1].policy:", "0 <= R < 1"],
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 0.5, "policy": "rate_card"},
                    {"name": "b", "weight": 0.5, "policy": "generous"},
                ]
            },
            ["variants[1].policy:", "unknown policy 'generous'"],
        ),
    ],
)
def test_bad_definitions_name_the_file_and_the_field(
    tmp_path: Path, changes: dict[str, object], words: list[str]
) -> None:
    message = error_of(tmp_path, with_(**changes))
    for word in words:
        assert word in message
    assert "\n" not in message


@pytest.mark.parametrize(("second", "ok"), [(0.5 + 1e-10, True), (0.5 + 1e-8, False)])
def test_weights_sum_to_one_within_1e9(second: float, ok: bool) -> None:
    variants = [
        {"name": "a", "weight": 0.5, "policy": "rate_card"},
        {"name": "b", "weight": second, "policy": "personalized"},
    ]
    if ok:
        parse_definition(with_(variants=variants), "x.yaml")
    else:
        with pytest.raises(CashbackError, match="sum to"):
            parse_definition(with_(variants=variants), "x.yaml")


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_(key="BAD", primary_metric="revenue", stop="2020-01-01"))
    assert "key:" in message
    assert "primary_metric:" in message
    assert "stop:" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("key: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (yaml.safe_dump(with_(status="running")), "status: set by `cashback experiments"),
        (yaml.safe_dump(with_(layer_buckets={"start": 0, "end": 10})), "layer_buckets"),
    ],
)
def test_unusable_files_are_refused_with_the_file_named(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(CashbackError, match=re.escape(str(path))) as caught:
        load_definition(path)
    assert words in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CashbackError, match=r"missing\.yaml: cannot read"):
        load_definition(tmp_path / "missing.yaml")


def test_status_moves_draft_running_stopped_and_no_other_way() -> None:
    draft = parse_definition(VALID, "x")
    running = draft.transition(ExperimentStatus.RUNNING)
    stopped = running.transition(ExperimentStatus.STOPPED)
    assert (draft.status, running.status, stopped.status) == ("draft", "running", "stopped")

    with pytest.raises(CashbackError, match="is draft: it cannot become stopped"):
        draft.transition(ExperimentStatus.STOPPED)
    with pytest.raises(CashbackError, match="is stopped: it cannot become running"):
        stopped.transition(ExperimentStatus.RUNNING)
    with pytest.raises(CashbackError, match="allowed: stopped"):
        running.transition(ExperimentStatus.RUNNING)


def test_definitions_are_immutable_and_round_trip_through_json() -> None:
    definition = parse_definition(VALID, "x")
    with pytest.raises(ValueError, match="frozen"):
        definition.key = "other"  # type: ignore[misc]
    again = ExperimentDefinition.model_validate_json(definition.model_dump_json())
    assert again == definition


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ({}, {"segments": ["x"]}, True),
        ({"segments": ["x"]}, {"segments": ["y"]}, False),
        ({"segments": ["x", "y"]}, {"segments": ["y"]}, True),
        (
            {"segments": ["x"], "lifecycle": ["new"]},
            {"segments": ["x"], "lifecycle": ["regular"]},
            False,
        ),
        ({"lifecycle": ["new"]}, {"segments": ["x"]}, True),
    ],
)
def test_targeting_overlap(a: dict[str, list[str]], b: dict[str, list[str]], overlap: bool) -> None:
    first, second = Targeting.model_validate(a), Targeting.model_validate(b)
    assert first.overlaps(second) is overlap
    assert second.overlaps(first) is overlap


def test_traffic_asks_for_a_share_of_the_layer() -> None:
    definition = parse_definition(with_(traffic=0.25), "x")
    assert definition.buckets_for(10_000) == 2_500
    assert parse_definition(with_(traffic=1e-9), "x").buckets_for(10_000) == 1


def test_the_example_definition_in_config_loads() -> None:
    example = PROJECT_ROOT / "config" / "experiments" / "rate_boost.example.yaml"
    definition = load_definition(example)
    assert definition.key == "rate-boost-example"
    assert definition.targeting.lifecycle == (Lifecycle.REGULAR, Lifecycle.AT_RISK)
