"""Every route x every role: 401 without a key or with an unknown or revoked one, 403 with a
role the route does not take, an answer otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from cashback.vocab import Role
from serving.auth import list_keys, revoke_key
from tests.serving.conftest import Api, StartApi
from tests.serving.helpers import claim_body

pytestmark = pytest.mark.xdist_group("serving")
PUBLIC = None  # no key needed
# (method, path) -> roles allowed (admin may call everything)
MATRIX: dict[tuple[str, str], set[Role] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/v1/claims/score"): {Role.ENGINE, Role.ADMIN},
}


def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    body = claim_body() if method == "POST" else None
    return api.client.request(method, path, json=body, headers=headers)


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
        assert status == (200 if role in allowed else 403), role


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
