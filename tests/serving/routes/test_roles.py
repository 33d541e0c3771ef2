"""Every route x every role: 401 without a key or with an unknown or revoked one, 403 with a
role the route does not take, an answer otherwise.

The tests run on a private copy of the served world (the experiments routes write to their
data directory): see `served_world` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cashback.vocab import Role
from models.experiments.definition import parse_definition
from models.experiments.store import ExperimentStore
from pipelines import experiments
from serving.auth import list_keys, revoke_key
from tests.serving.conftest import Api, StartApi
from tests.serving.experiment_world import definition_body, private_world, simulated_experiment
from tests.serving.helpers import CUSTOMER, claim_body
from tests.serving.reviews_helpers import decision as review_decision
from tests.serving.reviews_helpers import open_case

pytestmark = pytest.mark.xdist_group("serving")
PUBLIC = None  # no key needed
# (method, path) -> roles allowed (admin may call everything)
MATRIX: dict[tuple[str, str], set[Role] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/v1/claims/score"): {Role.ENGINE, Role.ADMIN},
    ("POST", "/v1/experiments"): {Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/experiments"): {Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/experiments/{key}"): {Role.MARKETER, Role.ADMIN},
    ("POST", "/v1/experiments/{key}/start"): {Role.MARKETER, Role.ADMIN},
    ("POST", "/v1/experiments/{key}/stop"): {Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/experiments/{key}/results"): {Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/experiments/{key}/report"): {Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/decisions/{decision_id}"): {Role.ENGINE, Role.RISK, Role.ADMIN},
    ("POST", "/v1/offers/recommend"): {Role.ENGINE, Role.ADMIN},
    ("POST", "/v1/offers/recommend:batch"): {Role.ENGINE, Role.ADMIN},
    ("GET", "/v1/customers/{customer_id}/insights"): {Role.ENGINE, Role.MARKETER, Role.ADMIN},
    ("GET", "/v1/reviews"): {Role.RISK, Role.ADMIN},
    ("GET", "/v1/reviews/stats"): {Role.RISK, Role.ADMIN},
    ("GET", "/v1/reviews/{case_id}"): {Role.RISK, Role.ADMIN},
    ("POST", "/v1/reviews/{case_id}/claim"): {Role.RISK, Role.ADMIN},
    ("POST", "/v1/reviews/{case_id}/decision"): {Role.RISK, Role.ADMIN},
    ("POST", "/v1/reviews/bulk-decision"): {Role.RISK, Role.ADMIN},
    ("GET", "/v1/payouts/decisions"): {Role.ENGINE, Role.ADMIN},
}
# (method, path) -> the status of an allowed call when it is not 200
SUCCESS: dict[tuple[str, str], int] = {("POST", "/v1/experiments"): 201}


@dataclass(frozen=True)
class Request:
    """What to send to a route: its path with the parameters filled in, and the JSON body."""

    path: str
    body: Any = None


def _experiment(api: Api, *, running: bool = False) -> str:
    """A new draft experiment in a layer of its own (started when `running`): its key."""
    body = definition_body()
    ExperimentStore.from_settings(api.settings).create(parse_definition(body, "test"))
    if running:
        experiments.start(api.settings, body["key"])
    return str(body["key"])


def _simulated(api: Api) -> str:
    return simulated_experiment(api.settings.data_dir)


def _decision(api: Api) -> str:
    """The id of a claim decision made now."""
    response = api.client.post(
        "/v1/claims/score", json=claim_body(), headers=api.headers(Role.ENGINE)
    )
    return str(response.json()["decision_id"])


# (method, path) -> the request an allowed role gets 200 for, set up afresh for each call
# (routes not named here are called on their path, without a body)
REQUESTS: dict[tuple[str, str], Callable[[Api], Request]] = {
    ("POST", "/v1/claims/score"): lambda _: Request("/v1/claims/score", claim_body()),
    ("POST", "/v1/experiments"): lambda _: Request("/v1/experiments", definition_body()),
    ("GET", "/v1/experiments/{key}"): lambda api: Request(f"/v1/experiments/{_experiment(api)}"),
    ("POST", "/v1/experiments/{key}/start"): lambda api: Request(
        f"/v1/experiments/{_experiment(api)}/start"
    ),
    ("POST", "/v1/experiments/{key}/stop"): lambda api: Request(
        f"/v1/experiments/{_experiment(api, running=True)}/stop"
    ),
    ("GET", "/v1/experiments/{key}/results"): lambda api: Request(
        f"/v1/experiments/{_simulated(api)}/results"
    ),
    ("GET", "/v1/experiments/{key}/report"): lambda api: Request(
        f"/v1/experiments/{_simulated(api)}/report"
    ),
    ("GET", "/v1/decisions/{decision_id}"): lambda api: Request(f"/v1/decisions/{_decision(api)}"),
    ("POST", "/v1/offers/recommend"): lambda _: Request(
        "/v1/offers/recommend", {"customer_id": CUSTOMER}
    ),
    ("POST", "/v1/offers/recommend:batch"): lambda _: Request(
        "/v1/offers/recommend:batch", {"requests": [{"customer_id": CUSTOMER}]}
    ),
    ("GET", "/v1/customers/{customer_id}/insights"): lambda _: Request(
        f"/v1/customers/{CUSTOMER}/insights"
    ),
    ("GET", "/v1/reviews/{case_id}"): lambda api: Request(f"/v1/reviews/{open_case(api)}"),
    ("POST", "/v1/reviews/{case_id}/claim"): lambda api: Request(
        f"/v1/reviews/{open_case(api)}/claim"
    ),
    ("POST", "/v1/reviews/{case_id}/decision"): lambda api: Request(
        f"/v1/reviews/{open_case(api)}/decision", review_decision()
    ),
    ("POST", "/v1/reviews/bulk-decision"): lambda api: Request(
        "/v1/reviews/bulk-decision", review_decision("reject", case_ids=[open_case(api)])
    ),
}


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """Here the served world is a private copy of it: experiments created are written apart."""
    return private_world(served_world, tmp_path / "data")


def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    build = REQUESTS.get((method, path))
    request = build(api) if build else Request(path)
    return api.client.request(method, request.path, json=request.body, headers=headers)


def test_the_matrix_names_every_route_of_the_app(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    routes = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    assert routes == set(MATRIX)


@pytest.mark.parametrize(("method", "path"), list(MATRIX))
def test_each_role_gets_what_its_route_allows(api: Api, method: str, path: str) -> None:
    allowed = MATRIX[method, path]
    keys = {role: api.key(role) for role in Role}
    if allowed is PUBLIC:
        assert _call(api, method, path, {}).status_code == 200
        return
    assert _call(api, method, path, {}).status_code == 401
    assert _call(api, method, path, {"X-API-Key": "cbk_not-a-key"}).status_code == 401
    assert _call(api, method, path, {"X-API-Key": "garbage"}).status_code == 401
    for role, key in keys.items():
        status = _call(api, method, path, {"X-API-Key": key}).status_code
        assert status == (SUCCESS.get((method, path), 200) if role in allowed else 403), role


def _used_then_revoked(api: Api) -> str:
    """An engine key that scored a claim, then was revoked."""
    key = api.key(Role.ENGINE, "revoked")
    assert _call(api, "POST", "/v1/claims/score", {"X-API-Key": key}).status_code == 200
    with api.state.db.session() as session:
        [row] = [r for r in list_keys(session) if r.name == "revoked"]
        revoke_key(session, row.id)
    return key


def test_a_revoked_key_gets_401(start_api: StartApi) -> None:
    api = start_api(serving={"key_cache_seconds": 0})
    response = _call(api, "POST", "/v1/claims/score", {"X-API-Key": _used_then_revoked(api)})
    assert response.status_code == 401
    assert response.json() == {"detail": "unknown or revoked API key"}


def test_a_valid_key_is_remembered_for_a_few_seconds(start_api: StartApi) -> None:
    api = start_api(serving={"key_cache_seconds": 60})
    key = _used_then_revoked(api)
    # still remembered by this worker: at most key_cache_seconds late
    assert _call(api, "POST", "/v1/claims/score", {"X-API-Key": key}).status_code == 200
