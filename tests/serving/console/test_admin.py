"""The admin pages: API keys (create, shown once, revoke) and models (list, gated promotion)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from cashback.settings import ServingSettings
from cashback.vocab import Role
from models import registry
from serving.app import create_app
from tests.models.toy import ToyEvaluator, log_toy
from tests.serving.conftest import Api, StartApi
from tests.serving.console.conftest import SignIn, console_client, console_client_of
from tests.serving.reviews_helpers import REVIEWS
from tests.serving.world import base_settings

pytestmark = pytest.mark.xdist_group("serving")
NEW_KEY = re.compile(r'<p class="key-once" id="new-key">(cbk_[A-Za-z0-9_-]+)</p>')


@pytest.fixture
def api(start_api: StartApi) -> Api:
    """The app, looking every API key up on each request (a revocation shows at once)."""
    return start_api(serving={"key_cache_seconds": 0})


def test_an_admin_creates_a_key_shown_once_and_revokes_it(api: Api, sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    # when an admin creates a risk key
    created = admin.post("/console/admin/keys", {"role": "risk", "name": "carol"})

    # then the page shows it once, and it works on the API
    assert created.status_code == 201
    found = NEW_KEY.search(created.text)
    assert found is not None
    key = found.group(1)
    headers = {"X-API-Key": key}
    assert api.client.get(REVIEWS, headers=headers).status_code == 200
    listing = admin.get("/console/admin/keys")
    assert key not in listing.text
    assert "carol" in listing.text

    # when carol signs in and the admin then revokes her key
    carol = console_client_of(api, key)
    assert carol.get("/console/risk/queue").status_code == 200
    key_id = int(re.findall(r"/console/admin/keys/(\d+)/revoke", listing.text)[-1])
    revoked = admin.post(f"/console/admin/keys/{key_id}/revoke")

    # then the key is refused by the API and carol's session ends
    assert revoked.status_code == 303
    assert "The key is revoked" in admin.get(revoked.headers["location"]).text
    assert api.client.get(REVIEWS, headers=headers).status_code == 401
    assert carol.get("/console/risk/queue").status_code == 303
    assert f"/console/admin/keys/{key_id}/revoke" not in admin.get("/console/admin/keys").text
    assert admin.post("/console/admin/keys/999999/revoke").status_code == 404


def test_the_models_page_lists_the_served_champions(api: Api, sign_in: SignIn) -> None:
    page = sign_in(Role.ADMIN).get("/console/admin/models")

    assert page.status_code == 200
    for short in ("fraud", "rates"):
        rows = [row for row in registry.list_models(api.settings) if row.short == short]
        champion = next(row for row in rows if "champion" in row.aliases)
        assert f'id="model-{short}"' in page.text
        assert f"Champion: v{champion.version}" in page.text
    # no challenger is waiting: nothing to promote
    assert "/promote" not in page.text


@pytest.fixture
def toy_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """An app whose model registry holds a toy fraud champion and a worse challenger."""
    monkeypatch.setitem(registry._EVALUATORS, "fraud", ToyEvaluator())
    settings = base_settings(
        tmp_path / "toy-data", serving=ServingSettings(directory=tmp_path / "serving")
    )
    with TestClient(create_app(settings)) as client:
        api = Api(client, settings)
        log_toy(settings, tmp_path / "m1")
        registry.promote(settings, "fraud")
        log_toy(settings, tmp_path / "m2", shuffle_labels=True)
        yield api


def test_a_promotion_refused_by_the_gate_says_why_and_a_forced_one_needs_a_reason(
    toy_registry: Api,
) -> None:
    admin = console_client(toy_registry, Role.ADMIN)
    page = admin.get("/console/admin/models")
    assert "Promote fraud v2" in page.text

    # when the worse challenger is promoted, then the gate refuses it, saying why
    refused = admin.post("/console/admin/models/fraud/promote")
    assert refused.status_code == 409
    assert "refused" in refused.text
    assert re.search(r"failed: roc_auc [^<]*&lt; champion", refused.text)
    aliases = (
        MlflowClient(toy_registry.settings.mlflow_tracking_uri)
        .get_registered_model("cashback-fraud")
        .aliases
    )
    assert {str(k): str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}

    # when forced without a reason, then the registry's error is shown
    no_reason = admin.post("/console/admin/models/fraud/promote", {"force": "true"})
    assert no_reason.status_code == 409
    assert "a forced promotion needs a reason" in no_reason.text

    # when forced with a reason, then it is the champion
    forced = admin.post(
        "/console/admin/models/fraud/promote", {"force": "true", "reason": "label fix"}
    )
    assert forced.status_code == 200
    assert "fraud v2: forced" in forced.text
    assert "Champion: v2" in forced.text
    assert admin.post("/console/admin/models/nope/promote").status_code == 404
