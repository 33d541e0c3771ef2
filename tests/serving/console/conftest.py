"""Fixtures of the console tests: signed-in TestClients per role, and a live server.

- `backend`: the console tests run on SQLite only (the API tests cover PostgreSQL).
- `sign_in(role, name=None) -> ConsoleClient`: a new key of this role signed in through the
  form, on the `api` fixture's app (each call: its own client and cookies).
- `live_console` (module): `cashback serve` on the served world with its own app database,
  for the browser tests; `browser_sign_in(view, key)` signs a Playwright page in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from cashback.settings import ServingSettings, Settings
from cashback.vocab import Role
from tests.browser import PageView
from tests.serving.conftest import Api
from tests.serving.helpers import claim_body
from tests.serving.live import LiveServer, api_key, cashback_serve
from tests.serving.world import base_settings

CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')
TEST_CONSOLE_SECRET = "console-test-secret-not-a-real-one"


def csrf_of(html: str) -> str:
    """The CSRF token of a page's first form."""
    found = CSRF_PATTERN.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


@dataclass
class ConsoleClient:
    """A browser-like client signed in to the console.

    Attributes:
        client: its TestClient (it keeps the session cookie).
        key: the API key it signed in with (for API calls as the same analyst).
        csrf: the session's CSRF token.
    """

    client: TestClient
    key: str
    csrf: str

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        """GET a console page (redirects are not followed)."""
        return self.client.get(path, follow_redirects=False, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx2.Response:
        """POST a form with the session's CSRF token (unless `data` sets its own)."""
        fields = {"csrf_token": self.csrf} | (data or {})
        return self.client.post(path, data=fields, follow_redirects=False, **kwargs)


def sign_in_client(client: TestClient, key: str) -> httpx2.Response:
    """Sign a client in through the form with this key: the form's answer (not followed)."""
    form = client.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return client.post(
        "/console/sign-in",
        data={"api_key": key, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )


SignIn = Callable[..., ConsoleClient]


@pytest.fixture
def backend() -> str:
    """SQLite only: the console calls the services the API tests run on both databases."""
    return "sqlite"


def console_client_of(api: Api, key: str) -> ConsoleClient:
    """A client signed in with this key on the app of `api` (its own client and cookies)."""
    client = TestClient(api.client.app)  # the app runs already (the `api` client's lifespan)
    answer = sign_in_client(client, key)
    assert answer.status_code == 303, answer.text
    home = client.get("/console/")
    assert home.status_code == 200, home.text
    return ConsoleClient(client, key, csrf_of(home.text))


def console_client(api: Api, role: Role, name: str | None = None) -> ConsoleClient:
    """A new key of this role, signed in on the app of `api`."""
    return console_client_of(api, api.key(role, name))


@pytest.fixture
def sign_in(api: Api) -> Iterator[SignIn]:
    """`sign_in(role, name=None) -> ConsoleClient` on the app of `api`."""
    clients: list[ConsoleClient] = []

    def sign(role: Role, name: str | None = None) -> ConsoleClient:
        clients.append(console_client(api, role, name))
        return clients[-1]

    yield sign
    for console in clients:
        console.client.close()


# --------------------------------------------------------------------------- browser


@dataclass(frozen=True)
class LiveConsole:
    """A running `cashback serve` and its settings (keys are made in its app database)."""

    server: LiveServer
    settings: Settings

    @property
    def url(self) -> str:
        """The console's home page."""
        return f"{self.server.base_url}/console/"

    def key(self, role: Role, name: str | None = None) -> str:
        """A new API key of this role."""
        return api_key(self.settings, role, name or role.value)

    def flag_claims(self, count: int, **changes: Any) -> list[str]:
        """Score `count` claims big enough to be flagged; their claim ids."""
        headers = {"X-API-Key": self.key(Role.ENGINE)}
        claim_ids = []
        for _ in range(count):
            body = claim_body(**({"cashback_amount": 51.0, "amount": 3000.0} | changes))
            answer = httpx2.post(
                f"{self.server.base_url}/v1/claims/score", json=body, headers=headers, timeout=30
            )
            assert answer.status_code == 200, answer.text
            claim_ids.append(body["claim_id"])
        return claim_ids


@pytest.fixture(scope="module")
def live_console(
    served_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveConsole]:
    """`cashback serve` on the served world, a fresh SQLite app database, no random audits."""
    root = tmp_path_factory.mktemp("console")
    serving = ServingSettings(
        directory=root / "serving", audit_share=0.0, console_secret=TEST_CONSOLE_SECRET
    )
    settings = base_settings(served_world, serving=serving)
    with cashback_serve(settings, root / "server") as server:
        yield LiveConsole(server, settings)


def browser_sign_in(view: PageView, key: str) -> None:
    """Sign a page in (it shows the sign-in form) and wait for the page after it."""
    view.page.get_by_label("API key").fill(key)
    with view.page.expect_navigation():
        view.page.get_by_role("button", name="Sign in").click()
