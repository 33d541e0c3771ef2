"""POST /v1/offers/recommend(:batch): exposures, the policy, exploration, holdout, experiments,
cold start and fallbacks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from sqlalchemy import func, select

from cashback.settings import ExperimentSettings, ModelSettings
from cashback.vocab import Lifecycle, Role
from models.experiments.assignment import assign
from models.rates.dataset import DEFAULT_OFFER, OFFER_COLUMNS
from models.registry import load_champion
from serving.offer_book import FRAUD_SHARES_FILE, RATE_CARD_FILE
from serving.tables import OfferDecision
from tests.serving.conftest import Api, StartApi
from tests.serving.helpers import WHEN, offers_batch, world_customers

pytestmark = pytest.mark.xdist_group("serving")
RECOMMEND = "/v1/offers/recommend"
BATCH = "/v1/offers/recommend:batch"
NO_HOLDOUT = ExperimentSettings(holdout_share=0.0)


def _ask(api: Api, customer_id: str, key: str, ts: str = WHEN, **context: Any) -> Any:
    body = {"customer_id": customer_id, "context": {"ts": ts, **context}}
    response = api.client.post(RECOMMEND, json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()


def _stored(api: Api, customer_id: str) -> list[OfferDecision]:
    with api.state.db.session() as session:
        query = select(OfferDecision).where(OfferDecision.customer_id == customer_id)
        return list(session.scalars(query.order_by(OfferDecision.sequence)))


def _allowed(api: Api) -> list[float]:
    rates = api.state.runtime.rates
    assert rates is not None
    return [r for r in rates.response.grid if rates.params.min_rate <= r <= rates.params.max_rate]


def test_a_known_customer_gets_the_registered_policy_rate(start_api: StartApi) -> None:
    api = start_api(serving={"exploration_share": 0.0}, experiments=NO_HOLDOUT)
    [customer] = world_customers(api, 1)
    answer = _ask(api, customer, api.key(Role.ENGINE), category="fashion", channel="app")
    assert answer["source"] == "policy"
    assert answer["fallback"] is False
    assert answer["cold_start"] is False
    assert answer["propensity"] == 1.0
    assert answer["offer"]["offer_id"] == "flat-immediate"
    assert answer["policy_version"].startswith("cashback-rates v")
    assert "rather than the default" in answer["reasons"][0]
    valid_from = datetime.fromisoformat(answer["valid_from"])
    valid_until = datetime.fromisoformat(answer["valid_until"])
    assert valid_until - valid_from == timedelta(days=api.settings.exposure_days)
    # the registered pyfunc, given the stored features, chooses the same rate
    [row] = _stored(api, customer)
    assert row.features is not None
    assert row.context == {"category": "fashion", "channel": "app", "ts": "2025-05-30T15:00:00Z"}
    # the stored inputs carry the fraud share of the latest rates run
    shares = pl.read_parquet(api.settings.data_dir / "rates" / FRAUD_SHARES_FILE)
    share = shares.filter(pl.col("customer_id") == customer)["fraud_share"]
    assert row.features["fraud_share"] == pytest.approx(share.item() if share.len() else 0.0)
    inputs = {k: v for k, v in row.features.items() if k != "segment"}  # caps only
    frame = pl.DataFrame(
        [inputs | {c: DEFAULT_OFFER.get(c, 0.0) for c in OFFER_COLUMNS}],
        infer_schema_length=None,
    ).with_columns(pl.exclude("lifecycle").cast(pl.Float64))  # the signature's types
    predicted = load_champion(api.settings, "rates").predict(frame.to_pandas())
    assert isinstance(predicted, pd.DataFrame)
    assert answer["rate"] == pytest.approx(float(predicted["rate"].iloc[0]))


def test_asking_again_inside_the_window_gives_the_same_exposure_and_after_it_a_new_one(
    api: Api,
) -> None:
    key = api.key(Role.ENGINE)
    [customer] = world_customers(api, 1)
    first = _ask(api, customer, key)
    later = _ask(api, customer, key, ts="2025-06-05T14:59:00Z", category="electronics")
    assert later == first
    after = _ask(api, customer, key, ts="2025-06-06T15:00:00Z")
    assert after["decision_id"] != first["decision_id"]
    assert after["valid_from"] == "2025-06-06T15:00:00Z"
    rows = _stored(api, customer)
    assert [r.sequence for r in rows] == [1, 2]
    assert rows[0].valid_until <= rows[1].ts  # windows never overlap


def test_concurrent_requests_for_one_customer_store_one_exposure(api: Api) -> None:
    key = api.key(Role.ENGINE)
    [customer] = world_customers(api, 1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: _ask(api, customer, key), range(24)))
    assert len({a["decision_id"] for a in answers}) == 1
    assert len(_stored(api, customer)) == 1


def test_exploration_draws_uniformly_among_the_allowed_rates_with_its_propensity(
    start_api: StartApi,
) -> None:
    api = start_api(serving={"exploration_share": 1.0}, experiments=NO_HOLDOUT)
    answers = offers_batch(api, world_customers(api, 400), api.key(Role.ENGINE))
    allowed = _allowed(api)
    assert {a["source"] for a in answers} == {"exploration"}
    assert all(a["propensity"] == pytest.approx(1 / len(allowed)) for a in answers)
    rates = pl.Series([a["rate"] for a in answers])
    assert set(rates.to_list()) <= set(allowed)
    observed = [int((rates == r).sum()) for r in allowed]
    assert stats.chisquare(observed).pvalue > 0.001


def test_the_logged_propensity_follows_the_exploration_formula(start_api: StartApi) -> None:
    share = 0.2
    api = start_api(serving={"exploration_share": share})
    answers = offers_batch(api, world_customers(api, 300), api.key(Role.ENGINE))
    k = len(_allowed(api))
    for answer in (a for a in answers if a["source"] != "holdout"):
        [row] = _stored(api, answer["customer_id"])
        assert row.exploration_draw is not None
        policy = api.state.offers.policy_rate(answer["customer_id"])
        assert policy is not None
        same = abs(answer["rate"] - policy[0]) < 1e-12
        assert answer["propensity"] == pytest.approx((1 - share) * same + share / k)
        assert (answer["source"] == "exploration") == (row.exploration_draw < share)
    personalized = [a for a in answers if a["source"] != "holdout"]
    explored = np.mean([a["source"] == "exploration" for a in personalized])
    assert abs(explored - share) < 4 * np.sqrt(share * (1 - share) / len(personalized))


def test_the_global_holdout_gets_the_default_rate_card(start_api: StartApi) -> None:
    api = start_api(experiments=ExperimentSettings(holdout_share=0.5))
    customers = world_customers(api, 40)
    answers = offers_batch(api, customers, api.key(Role.ENGINE))
    held_out = [assign(c, [], api.settings).holdout for c in customers]
    assert 0 < sum(held_out) < len(customers)
    for answer, holdout in zip(answers, held_out, strict=True):
        assert (answer["source"] == "holdout") is holdout
        if holdout:
            assert answer["rate"] == api.settings.default_rate
            assert answer["offer"]["offer_id"] == "default-card"
            assert answer["policy_version"] == "default rate card"
            assert answer["propensity"] == 1.0


def test_an_unknown_customer_gets_the_new_customers_rate_card(api: Api) -> None:
    answer = _ask(api, "C-never-seen-42", api.key(Role.ENGINE), category="fashion")
    assert answer["cold_start"] is True
    assert answer["source"] in {"cold_start", "holdout"}
    if answer["source"] == "cold_start":
        card = pl.read_parquet(api.settings.data_dir / "rates" / RATE_CARD_FILE)
        cell = card.filter(segment=Lifecycle.NEW.value, category="fashion")["rate"]
        expected = cell.item() if cell.len() else api.settings.default_rate
        assert answer["rate"] == pytest.approx(expected)


def test_without_a_rates_model_the_rate_card_is_the_fallback(start_api: StartApi) -> None:
    api = start_api(models=ModelSettings(name_prefix="nobody-"))
    answers = offers_batch(api, world_customers(api, 30), api.key(Role.ENGINE), category="fashion")
    fallbacks = [a for a in answers if a["source"] != "holdout"]
    assert fallbacks
    card = pl.read_parquet(api.settings.data_dir / "rates" / RATE_CARD_FILE)
    for answer in fallbacks:
        assert answer["fallback"] is True
        assert answer["source"] == "fallback"
        assert answer["rate"] in set(card["rate"].to_list()) | {api.settings.default_rate}
        assert answer["reasons"][0].startswith("no policy model")
    metrics = api.client.get("/metrics").text
    assert 'cashback_fallbacks_total{endpoint="offers.recommend",reason="no_policy_model"}' in (
        metrics
    )


def test_a_store_that_fails_at_request_time_gives_the_rate_card_not_a_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("online store down")

    readers = api.state.runtime.customers
    assert readers is not None
    monkeypatch.setattr(readers.rates, "read", down)
    [customer] = world_customers(api, 1)
    answer = _ask(api, customer, api.key(Role.ENGINE))
    assert answer["source"] in {"fallback", "holdout"}
    assert answer["fallback"] is (answer["source"] == "fallback")


def test_a_batch_answers_in_order_and_a_repeated_customer_gets_one_exposure(api: Api) -> None:
    customers = world_customers(api, 5)
    answers = offers_batch(api, [*customers, customers[0]], api.key(Role.ENGINE))
    assert [a["customer_id"] for a in answers] == [*customers, customers[0]]
    assert answers[-1] == answers[0]
    with api.state.db.session() as session:
        stored = session.scalar(select(func.count()).select_from(OfferDecision))
    assert stored == len(customers)


def test_bad_requests_get_a_422_naming_the_field(api: Api) -> None:
    key = {"X-API-Key": api.key(Role.ENGINE)}
    naive = {"customer_id": "C1", "context": {"ts": "2025-05-30T15:00:00"}}
    response = api.client.post(RECOMMEND, json=naive, headers=key)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "context", "ts"]
    channel = {"customer_id": "C1", "context": {"channel": "fax"}}
    assert api.client.post(RECOMMEND, json=channel, headers=key).json()["detail"][0]["loc"] == [
        "body",
        "context",
        "channel",
    ]
    too_many = {"requests": [{"customer_id": f"C{i}"} for i in range(1001)]}
    response = api.client.post(BATCH, json=too_many, headers=key)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "requests"]
