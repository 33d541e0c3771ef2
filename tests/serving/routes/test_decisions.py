"""GET /v1/decisions/{decision_id} and `cashback decisions show|replay`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner, Result

from cashback.cli import app
from cashback.settings import ModelSettings, get_settings
from cashback.vocab import Role
from serving.decisions import NOTHING_TO_RECOMPUTE
from serving.tables import ClaimDecision
from tests.serving.conftest import RULES, Api, StartApi
from tests.serving.helpers import claim_body

pytestmark = pytest.mark.xdist_group("serving")
SCORE = "/v1/claims/score"
IP = "198.51.100.23"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def _score(api: Api, **changes: Any) -> dict[str, Any]:
    response = api.client.post(
        SCORE, json=claim_body(ip=IP, **changes), headers=api.headers(Role.ENGINE)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _get(api: Api, decision_id: str, role: Role = Role.RISK) -> Any:
    return api.client.get(f"/v1/decisions/{decision_id}", headers=api.headers(role))


def _cli(api: Api, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """`cashback decisions ARGS` with the settings of the running app."""
    settings = api.settings
    assert settings.serving.directory is not None
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CASHBACK_SERVING__DIRECTORY", str(settings.serving.directory))
    monkeypatch.setenv("CASHBACK_FRAUD__RULES_FILE", str(RULES))
    monkeypatch.setenv("CASHBACK_MODELS__NAME_PREFIX", settings.models.name_prefix)
    if settings.database_url is not None:
        monkeypatch.setenv("CASHBACK_DATABASE_URL", settings.app_database_url)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["decisions", *args])


def test_a_claim_decision_shows_its_inputs_features_model_and_answer(api: Api) -> None:
    answer = _score(api, cashback_amount=51.0, amount=3000.0)
    response = _get(api, answer["decision_id"])
    assert response.status_code == 200, response.text
    found = response.json()
    assert IP not in response.text
    assert (found["kind"], found["decision_id"]) == ("claim", answer["decision_id"])
    assert "ip" not in found["inputs"]
    assert found["inputs"]["ip_hash"]
    assert found["inputs"]["claim_id"] == answer["claim_id"]
    assert "tenure_days" in found["features"]
    assert api.state.runtime.fraud is not None
    assert found["model_version"] == api.state.runtime.fraud.version == answer["model_version"]
    assert found["policy_version"] is None
    assert found["policy"]["thresholds"] == api.state.runtime.fraud.scorer.limits.to_dict()
    told = {k: answer[k] for k in ("risk_score", "decision", "rule_hits", "reasons")}
    assert {k: found["answer"][k] for k in told} == told
    assert found["fallback"] is False
    assert _get(api, answer["decision_id"], Role.ENGINE).json() == found
    assert _get(api, answer["decision_id"], Role.MARKETER).status_code == 403


def test_replay_recomputes_the_decision_and_says_it_matches(
    api: Api, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del cli_env  # its environment, then the app's settings on top
    answer = _score(api, cashback_amount=51.0, amount=3000.0)
    replayed = _cli(api, monkeypatch, "replay", answer["decision_id"])
    assert replayed.exit_code == 0, replayed.output
    assert f"claim decision {answer['decision_id']} matches" in replayed.output
    assert f"cashback-fraud v{answer['model_version']}" in replayed.output
    shown = _cli(api, monkeypatch, "show", answer["decision_id"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["decision_id"] == answer["decision_id"]
    assert document["answer"]["rule_hits"] == answer["rule_hits"]
    assert document["policy"]["thresholds"] is not None


def test_a_tampered_feature_makes_the_replay_report_the_fields_that_differ(
    api: Api, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del cli_env
    answer = _score(api)
    features = _get(api, answer["decision_id"]).json()["features"]
    with api.state.db.engine.begin() as connection:
        connection.execute(
            update(ClaimDecision)
            .where(ClaimDecision.decision_id == answer["decision_id"])
            .values(features=features | {"customer_claims_1h": 9})
        )
    replayed = _cli(api, monkeypatch, "replay", answer["decision_id"])
    assert replayed.exit_code == 1, replayed.output
    assert "does NOT match" in replayed.output
    assert "rule_hits: stored [], recomputed ['customer_burst']" in replayed.output


def test_an_unknown_decision_is_a_404_and_exit_code_2(
    api: Api, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del cli_env
    response = _get(api, UNKNOWN)
    assert response.status_code == 404
    assert response.json() == {"detail": f"no decision with id {UNKNOWN!r}"}
    for command in ("replay", "show"):
        result = _cli(api, monkeypatch, command, UNKNOWN)
        assert result.exit_code == 2, result.output
        assert f"no decision with id '{UNKNOWN}'" in result.stderr
        assert result.stdout == ""


def test_a_fallback_decision_replays_as_the_fallback(
    start_api: StartApi, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del cli_env
    api = start_api(models=ModelSettings(name_prefix="nobody-"))
    answer = _score(api)
    assert answer["fallback"] is True
    found = _get(api, answer["decision_id"]).json()
    assert (found["fallback"], found["model_version"], found["features"]) == (True, None, None)
    assert found["policy"] == {"thresholds": None}
    replayed = _cli(api, monkeypatch, "replay", answer["decision_id"])
    assert replayed.exit_code == 0, replayed.output
    assert "matches" in replayed.output
    assert NOTHING_TO_RECOMPUTE in replayed.output
