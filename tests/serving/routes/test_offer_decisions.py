"""Offer decisions: GET /v1/decisions/{id} shows what priced them, and a replay recomputes them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from cashback.settings import ExperimentSettings, ModelSettings
from cashback.vocab import Role
from serving.decisions import find_decision, replay_decision
from serving.tables import OfferDecision
from tests.serving.conftest import Api, StartApi
from tests.serving.helpers import offers_batch, world_customers

pytestmark = pytest.mark.xdist_group("serving")


def _replayed(api: Api, decision_id: str) -> Any:
    with api.state.db.session() as session:
        record = find_decision(session, decision_id)
    assert record is not None
    return replay_decision(api.settings, record)


def test_an_offer_decision_shows_its_features_versions_and_answer(api: Api) -> None:
    [answer] = offers_batch(api, world_customers(api, 1), api.key(Role.ENGINE), category="home")
    response = api.client.get(
        f"/v1/decisions/{answer['decision_id']}", headers=api.headers(Role.RISK)
    )
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["kind"] == "offer"
    assert found["answer"]["rate"] == answer["rate"]
    assert found["answer"]["propensity"] == answer["propensity"]
    assert found["inputs"]["context"]["category"] == "home"
    if answer["source"] != "holdout":
        assert found["policy_version"] == answer["policy_version"]
        assert found["model_version"] == api.state.runtime.rates.version  # type: ignore[union-attr]
        assert {"fraud_share", "segment", "spend_90d"} <= set(found["features"])


def test_policy_and_exploration_offers_replay_to_the_same_rate_and_propensity(
    start_api: StartApi,
) -> None:
    api = start_api(serving={"exploration_share": 0.4})
    answers = offers_batch(api, world_customers(api, 40), api.key(Role.ENGINE))
    sources = {a["source"] for a in answers}
    assert {"policy", "exploration"} <= sources
    for answer in answers:
        result = _replayed(api, answer["decision_id"])
        assert result.matches, result.describe()
        assert result.compared == ("rate", "propensity", "source")


def test_a_changed_stored_rate_is_reported_by_the_replay(start_api: StartApi) -> None:
    api = start_api(experiments=ExperimentSettings(holdout_share=0.0))
    [answer] = offers_batch(api, world_customers(api, 1), api.key(Role.ENGINE))
    with api.state.db.engine.begin() as connection:
        connection.execute(
            update(OfferDecision)
            .where(OfferDecision.decision_id == answer["decision_id"])
            .values(rate=0.99)
        )
    result = _replayed(api, answer["decision_id"])
    assert not result.matches
    [difference] = [d for d in result.differences if d.field == "rate"]
    assert difference.stored == 0.99
    assert difference.recomputed == answer["rate"]


def test_holdout_and_fallback_offers_replay_from_the_hash_and_todays_card(
    start_api: StartApi,
) -> None:
    api = start_api(
        models=ModelSettings(name_prefix="nobody-"),
        experiments=ExperimentSettings(holdout_share=0.5),
    )
    answers = offers_batch(api, world_customers(api, 30), api.key(Role.ENGINE), category="home")
    assert {a["source"] for a in answers} == {"holdout", "fallback"}
    for answer in answers:
        result = _replayed(api, answer["decision_id"])
        assert result.matches, result.describe()
