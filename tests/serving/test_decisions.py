"""Decisions by id: finding a claim decision, its policy, replaying it, and what cannot be."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.vocab import Role
from serving.claims import MODEL_UNAVAILABLE
from serving.db import Database
from serving.decisions import (
    NOTHING_TO_RECOMPUTE,
    DecisionRecord,
    DecisionReplayError,
    decision_policy,
    differences,
    find_decision,
    replay_decision,
)
from serving.tables import ClaimDecision
from tests.serving.conftest import Api
from tests.serving.helpers import claim_body

pytestmark = pytest.mark.xdist_group("serving")
WHEN = datetime(2025, 5, 30, 15, tzinfo=UTC)


def _row(**changes: Any) -> dict[str, Any]:
    """A stored fallback claim decision (what the API stores without a model)."""
    row: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "claim_id": f"CL-{uuid.uuid4().hex[:12]}",
        "customer_id": "C00000007",
        "txn_id": "T-1",
        "amount": 48.5,
        "cashback_amount": 0.97,
        "payout_method": "wallet",
        "device_id": "D-1",
        "ip_hash": "0123456789abcdef",
        "receipt_hash": "r-1",
        "ts": WHEN,
        "risk_score": None,
        "probability": None,
        "decision": "review",
        "abuse_type": None,
        "rule_hits": [],
        "reasons": [MODEL_UNAVAILABLE],
        "model_version": None,
        "fallback": True,
        "features": None,
        "api_key_id": None,
        "created_at": WHEN,
    }
    return row | changes


def _store(database: Database, row: dict[str, Any]) -> str:
    with database.engine.begin() as connection:
        connection.execute(insert(ClaimDecision), row)
    return str(row["decision_id"])


def test_a_claim_decision_is_found_by_its_id_with_any_kind_of_bind(database: Database) -> None:
    decision_id = _store(database, _row())
    with database.session() as session:
        by_session = find_decision(session, decision_id)
    with database.engine.connect() as connection:
        by_connection = find_decision(connection, decision_id)
    record = find_decision(database.engine, decision_id)
    assert record is not None
    assert record == by_session == by_connection
    assert (record.kind, record.decision_id, record.created_at) == ("claim", decision_id, WHEN)
    assert record.inputs["ip_hash"] == "0123456789abcdef"
    assert "ip" not in record.inputs
    assert record.inputs["ts"] == WHEN
    assert record.answer["reasons"] == [MODEL_UNAVAILABLE]
    assert (record.model_version, record.policy_version, record.fallback) == (None, None, True)


def test_an_unknown_id_finds_nothing(database: Database) -> None:
    _store(database, _row())
    assert find_decision(database.engine, str(uuid.uuid4())) is None
    assert find_decision(database.engine, "") is None


def test_a_fallback_replays_as_the_fallback_answer(database: Database, tmp_path: Path) -> None:
    record = find_decision(database.engine, _store(database, _row()))
    assert record is not None
    result = replay_decision(Settings(data_dir=tmp_path), record)  # no registry needed
    assert result.matches
    assert result.basis == NOTHING_TO_RECOMPUTE
    assert result.recomputed is None
    assert result.describe() == [
        f"claim decision {record.decision_id} matches ({NOTHING_TO_RECOMPUTE})"
    ]


def test_a_fallback_whose_answer_is_not_the_fallback_answer_does_not_match(
    database: Database, tmp_path: Path
) -> None:
    record = find_decision(database.engine, _store(database, _row(decision="allow")))
    assert record is not None
    result = replay_decision(Settings(data_dir=tmp_path), record)
    assert not result.matches
    assert [(d.field, d.stored, d.recomputed) for d in result.differences] == [
        ("decision", "allow", "review")
    ]
    assert "decision: stored 'allow', recomputed 'review'" in result.describe()


def test_scores_within_a_relative_1e_9_are_the_same() -> None:
    fields = ("risk_score", "decision")
    stored = {"risk_score": 42.0, "decision": "allow"}
    assert (
        differences(stored, {"risk_score": 42.0 * (1 + 1e-12), "decision": "allow"}, fields) == ()
    )
    [moved] = differences(stored, {"risk_score": 42.0 * (1 + 1e-8), "decision": "allow"}, fields)
    assert moved.field == "risk_score"
    [gone] = differences(stored, {"risk_score": None, "decision": "allow"}, fields)
    assert (gone.stored, gone.recomputed) == (42.0, None)


def _scored(api: Api, **changes: Any) -> DecisionRecord:
    body = claim_body(**changes)
    response = api.client.post("/v1/claims/score", json=body, headers=api.headers(Role.ENGINE))
    assert response.status_code == 200, response.text
    record = find_decision(api.state.db.engine, response.json()["decision_id"])
    assert record is not None
    return record


def test_a_scored_claim_replays_with_its_model_version_and_matches(api: Api) -> None:
    record = _scored(api, cashback_amount=51.0, amount=3000.0)  # hits big_cashback
    assert api.state.runtime.fraud is not None
    assert record.model_version == api.state.runtime.fraud.version
    assert record.features is not None
    result = replay_decision(api.settings, record)
    assert result.matches, result.describe()
    assert result.recomputed is not None
    assert "big_cashback" in result.recomputed["rule_hits"]
    assert f"cashback-fraud v{record.model_version}" in result.basis
    assert "fraud_rules.yaml" in result.basis
    thresholds = decision_policy(api.settings, record)["thresholds"]
    assert thresholds == api.state.runtime.fraud.scorer.limits.to_dict()


def test_a_changed_feature_is_reported_with_the_fields_it_changes(api: Api) -> None:
    record = _scored(api)
    assert record.features is not None
    burst = dataclasses.replace(record, features=record.features | {"customer_claims_1h": 9})
    result = replay_decision(api.settings, burst)
    assert not result.matches
    changed = {d.field: d for d in result.differences}
    assert changed["rule_hits"].stored == record.answer["rule_hits"]
    assert "customer_burst" in changed["rule_hits"].recomputed


def test_a_model_version_gone_from_the_registry_is_a_clear_error(api: Api) -> None:
    record = dataclasses.replace(_scored(api), model_version="999")
    with pytest.raises(DecisionReplayError, match=r"cashback-fraud version 999.*cannot be"):
        replay_decision(api.settings, record)
    assert decision_policy(api.settings, record) == {"thresholds": None}


def test_a_model_decision_without_features_or_of_an_unknown_kind_cannot_be_replayed(
    api: Api,
) -> None:
    record = _scored(api)
    with pytest.raises(DecisionReplayError, match="without its features"):
        replay_decision(api.settings, dataclasses.replace(record, features=None))
    with pytest.raises(CashbackError, match="kind 'bet'"):
        replay_decision(api.settings, dataclasses.replace(record, kind="bet"))
