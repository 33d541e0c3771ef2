"""Probes and metrics: /healthz, /readyz (and what is missing), /metrics."""

from __future__ import annotations

import pytest

from cashback.settings import FeatureStoreSettings, ModelSettings
from cashback.vocab import Role
from tests.serving.conftest import Api, StartApi
from tests.serving.helpers import claim_body

pytestmark = pytest.mark.xdist_group("serving")


def test_healthz_and_readyz_answer_when_everything_is_loaded(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["missing"] == {}
    assert body["loaded"]["fraud_model"] == "cashback-fraud v1"
    assert body["loaded"]["rates_model"] == "cashback-rates v1"
    assert set(body["loaded"]) == {
        "fraud_model",
        "rates_model",
        "online_store",
        "customer_store",
        "claim_log",
        "offer_book",
        "database",
    }


def test_readyz_is_503_and_says_what_is_missing(start_api: StartApi, tmp_path) -> None:
    # given no fraud champion under this name and an empty feature store directory
    api = start_api(
        models=ModelSettings(name_prefix="nobody-"),
        feature_store=FeatureStoreSettings(subdirectory=str(tmp_path / "no-features")),
    )
    # when the probes are asked
    ready = api.client.get("/readyz")
    # then the process is alive but not ready, and says why
    assert api.client.get("/healthz").status_code == 200
    assert ready.status_code == 503
    missing = ready.json()["missing"]
    assert set(missing) == {"fraud_model", "rates_model", "online_store", "customer_store"}
    assert "cashback train fraud" in missing["fraud_model"]
    assert "cashback train rates" in missing["rates_model"]
    assert ready.json()["loaded"]["database"] in {"sqlite", "postgresql"}


def _value(text: str, sample: str) -> float:
    """A sample's value in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_decisions_and_fallbacks(start_api: StartApi) -> None:
    # Feast switches prometheus_client to its multiprocess mode when imported first: then
    # the apps of one test process share their counts (a series starts at what earlier apps
    # counted), so the test compares increases after a first claim
    api = start_api(models=ModelSettings(name_prefix="nobody-"))  # every claim falls back
    headers = api.headers(Role.ENGINE)
    assert api.client.post("/v1/claims/score", json=claim_body(), headers=headers).is_success
    samples = (
        'cashback_http_requests_total{method="POST",route="/v1/claims/score",status="200"}',
        'cashback_claim_decisions_total{decision="review"}',
        'cashback_fallbacks_total{endpoint="claims.score",reason="no_model"}',
    )
    before = api.client.get("/metrics").text
    for _ in range(3):
        assert api.client.post("/v1/claims/score", json=claim_body(), headers=headers).is_success
    api.client.get("/v1/customers/C1/nowhere")
    text = api.client.get("/metrics").text
    assert [_value(text, s) - _value(before, s) for s in samples] == [3.0, 3.0, 3.0]
    assert 'route="<unmatched>",status="404"' in text  # never the raw path
    assert "C1/nowhere" not in text
    assert 'cashback_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text


def test_openapi_documents_the_routes_with_examples_and_the_key_header(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["ClaimScoreRequest"]
    assert request["examples"][0]["claim_id"] == "CL-2026-000123"
    score = schema["paths"]["/v1/claims/score"]["post"]
    assert {"401", "403", "409", "413", "422"} <= set(score["responses"])
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert api.client.get("/docs").status_code == 200
