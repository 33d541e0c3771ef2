"""Console sessions: sign in and out, cookies, CSRF, roles, revoked keys, the secret."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cashback.settings import ServingSettings, Settings
from cashback.vocab import Role
from serving.auth import revoke_key
from tests.serving.conftest import PEPPER, Api, StartApi
from tests.serving.console.conftest import SignIn, console_client, csrf_of, sign_in_client
from tests.serving.reviews_helpers import open_case, written

pytestmark = pytest.mark.xdist_group("serving")
PAGES_BY_AREA = {
    "risk": "/console/risk/queue",
    "marketing": "/console/marketing",
    "admin": "/console/admin/keys",
}
ALLOWED = {
    Role.ENGINE: set(),
    Role.MARKETER: {"marketing"},
    Role.RISK: {"risk"},
    Role.ADMIN: {"risk", "marketing", "admin"},
}


def _key_id(api: Api, key: str) -> int:
    from serving.auth import authenticate

    with api.state.db.session() as session:
        principal = authenticate(session, key)
    assert principal is not None
    return principal.key_id


def test_a_key_signs_in_and_out_and_the_cookie_holds_no_key(api: Api) -> None:
    # given a risk key and the sign-in form
    key = api.key(Role.RISK, "alice")
    client = TestClient(api.client.app)

    # when the key is sent through the form
    answer = sign_in_client(client, key)

    # then the session cookie is HttpOnly, SameSite=Strict, expiring, and holds no key
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("cashback_console=")
    )
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "max-age=28800" in cookie.lower()
    value = cookie.split(";")[0].split("=", 1)[1]
    payload = value.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert key not in value
    assert key[4:] not in decoded
    assert '"n":"alice"' in decoded
    assert '"r":"risk"' in decoded

    # and the console greets the key by name, with the pages of its role
    home = client.get("/console/")
    assert home.status_code == 200
    assert "alice" in home.text
    assert "Review queue" in home.text
    assert "API keys" not in home.text

    # when it signs out, then the console asks to sign in again
    signed_out = client.post(
        "/console/sign-out", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False
    )
    assert signed_out.status_code == 303
    again = client.get("/console/", follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/sign-in")


def test_an_unknown_or_revoked_key_is_refused_at_sign_in(api: Api) -> None:
    client = TestClient(api.client.app)
    revoked = api.key(Role.RISK)
    with api.state.db.session() as session:
        revoke_key(session, _key_id(api, revoked))

    for key in ("cbk_not-a-real-key", revoked, "x" * 500):
        answer = sign_in_client(client, key)
        assert answer.status_code == 401, key
        assert "unknown or revoked API key" in answer.text
        assert not any(
            c.startswith("cashback_console=") for c in answer.headers.get_list("set-cookie")
        )


def test_a_sign_in_without_the_form_token_is_refused(api: Api) -> None:
    # given a valid key posted without the form's token (a forged cross-site sign-in)
    client = TestClient(api.client.app)
    key = api.key(Role.RISK)

    answer = client.post("/console/sign-in", data={"api_key": key}, follow_redirects=False)

    assert answer.status_code == 403
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_without_a_session_pages_redirect_to_sign_in_and_htmx_gets_401(api: Api) -> None:
    client = TestClient(api.client.app)

    page = client.get("/console/risk/queue?sort=age", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?next=/console/risk/queue%3Fsort%3Dage"

    fragment = client.get(
        "/console/risk/queue", headers={"HX-Request": "true"}, follow_redirects=False
    )
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"] == "/console/sign-in?next=/console/risk/queue"

    # a tampered cookie is no session either
    client.cookies.set("cashback_console", "eyJrIjoxfQ.forged.signature", path="/console")
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_after_sign_in_the_page_asked_for_opens_and_other_sites_are_not_followed(api: Api) -> None:
    client = TestClient(api.client.app)
    key = api.key(Role.RISK)
    for wanted, lands in (
        ("/console/risk/summary", "/console/risk/summary"),
        ("https://evil.example/console/", "/console/"),
        ("//evil.example/console/", "/console/"),
    ):
        form = client.get("/console/sign-in", params={"next": wanted})
        answer = client.post(
            "/console/sign-in",
            data={"api_key": key, "csrf_token": csrf_of(form.text), "next": wanted},
            follow_redirects=False,
        )
        assert answer.headers["location"] == lands
        client.cookies.clear()


@pytest.mark.parametrize("role", list(Role))
def test_each_area_lets_in_its_role_and_admin_and_shows_others_a_403_page(
    sign_in: SignIn, role: Role
) -> None:
    console = sign_in(role)
    for area, path in PAGES_BY_AREA.items():
        page = console.get(path)
        if area in ALLOWED[role]:
            assert page.status_code == 200, (area, page.text)
        else:
            assert page.status_code == 403, area
            assert "Not allowed" in page.text
            assert f"you are signed in as {role.value}" in page.text


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    api: Api, sign_in: SignIn
) -> None:
    # given a case and a signed-in analyst
    case_id = open_case(api)
    analyst = sign_in(Role.RISK)
    before = written(api)
    form = {"decision": "reject", "client_decision_id": "csrf-test-1"}

    # when decisions are posted without a token, with another session's token, or a wrong one
    other = sign_in(Role.RISK)
    for token in ("", other.csrf, analyst.csrf[:-2] + "xx"):
        answer = analyst.post(
            f"/console/risk/cases/{case_id}/decision", form | {"csrf_token": token}
        )

        # then each is refused with 403 and nothing is written
        assert answer.status_code == 403, token
        assert "security token" in answer.text
    assert written(api) == before

    # when the right token comes in the HTMX header instead of the form, then it is accepted
    taken = analyst.client.post(
        f"/console/risk/cases/{case_id}/take",
        headers={"X-CSRF-Token": analyst.csrf},
        follow_redirects=False,
    )
    assert taken.status_code == 303


def test_a_revoked_keys_session_is_refused(start_api: StartApi) -> None:
    # given a session, with keys looked up on every request
    api = start_api(serving={"key_cache_seconds": 0})
    console = console_client(api, Role.RISK)
    assert console.get("/console/risk/queue").status_code == 200

    # when its key is revoked (as `cashback keys revoke` does)
    with api.state.db.session() as session:
        revoke_key(session, _key_id(api, console.key))

    # then its next request is sent to the sign-in form
    answer = console.get("/console/risk/queue")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


def test_a_session_expires(start_api: StartApi) -> None:
    api = start_api(serving={"console_session_hours": 0.0002})  # 0.72 s
    console = console_client(api, Role.RISK)
    time.sleep(2.1)  # the signature's timestamp has a one-second resolution

    assert console.get("/console/risk/queue").status_code == 303


def test_console_pages_carry_security_headers_and_their_server_time(sign_in: SignIn) -> None:
    page = sign_in(Role.RISK).get("/console/risk/summary")

    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert re.fullmatch(r"app;dur=\d+\.\d", page.headers["server-timing"])


# --------------------------------------------------------------------------- settings


def test_prod_refuses_a_missing_or_short_console_secret(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "environment": "prod",
        "ip_pepper": PEPPER,
        "data_dir": tmp_path / "data",
    }
    with pytest.raises(ValidationError, match="CASHBACK_SERVING__CONSOLE_SECRET must be set"):
        Settings(**base)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(**base, serving=ServingSettings(console_secret="short"))

    secret = "a-console-secret-of-some-length"
    settings = Settings(**base, serving=ServingSettings(console_secret=secret))
    assert settings.console_secret_bytes() == secret.encode()
    assert settings.console_cookie_secure  # prod: HTTPS-only cookies unless told otherwise
    assert secret not in repr(settings)
    assert not (tmp_path / "data").exists()


def test_dev_keeps_one_console_secret_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(ip_pepper=PEPPER, data_dir=tmp_path / "data")

    first, second = settings.console_secret_bytes(), settings.console_secret_bytes()

    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "data" / ".console_secret").stat().st_mode & 0o077 == 0
    assert first != settings.ip_pepper_bytes()
    assert not settings.console_cookie_secure
    assert Settings(
        ip_pepper=PEPPER, serving=ServingSettings(console_secure_cookie=True)
    ).console_cookie_secure
