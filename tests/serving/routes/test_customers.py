"""GET /v1/customers/{id}/insights: the stored lifecycle, the policy's rate, fallbacks."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from sqlalchemy import func, select

from cashback.settings import ModelSettings
from cashback.vocab import Role
from features.store import batch_table_path
from serving.routes.customers import NO_SCORES
from serving.tables import OfferDecision
from tests.serving.conftest import Api, StartApi

pytestmark = pytest.mark.xdist_group("serving")


def _insights(api: Api, customer_id: str, role: Role = Role.MARKETER) -> Any:
    return api.client.get(f"/v1/customers/{customer_id}/insights", headers=api.headers(role))


def _a_customer(api: Api) -> tuple[str, str]:
    """A customer of the stored lifecycle table and their stage."""
    table = pl.read_parquet(batch_table_path(api.settings, "customer_lifecycle"))
    row = table.sort("customer_id").row(0, named=True)
    return row["customer_id"], row["lifecycle"]


def test_a_known_customer_gets_the_stored_stage_and_the_policy_rate(api: Api) -> None:
    customer, stage = _a_customer(api)
    response = _insights(api, customer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lifecycle"] == stage
    # no customer scores in this world: the segment is the stage, and the note says why
    assert body["segment"] == stage
    assert body["churn_probability"] is None
    assert NO_SCORES in body["notes"]
    policy = api.state.offers.policy_rate(customer)
    assert policy is not None
    assert body["recommended_rate"] == policy[0]
    assert body["policy_version"] == f"cashback-rates v{policy[2]}"
    # asking for insights makes no exposure
    with api.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(OfferDecision)) == 0


def test_an_unknown_customer_is_a_404(api: Api) -> None:
    response = _insights(api, "C-nobody-here")
    assert response.status_code == 404


def test_without_a_rates_model_the_rate_is_the_rate_card(start_api: StartApi) -> None:
    api = start_api(models=ModelSettings(name_prefix="nobody-"))
    customer, stage = _a_customer(api)
    body = _insights(api, customer).json()
    expected, _ = api.state.offers.card_rate(stage, None)
    assert body["recommended_rate"] == expected
    assert body["policy_version"] == "rate card"
    assert "no rates model: the rate card's rate" in body["notes"]


def test_a_risk_key_may_not_read_insights(api: Api) -> None:
    customer, _ = _a_customer(api)
    assert _insights(api, customer, Role.RISK).status_code == 403
