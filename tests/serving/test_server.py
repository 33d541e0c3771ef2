"""`cashback serve` end to end: uvicorn; SIGKILL loses no acknowledged claim or exposure.

The server runs in its own process group on a free loopback port, against the served world
and the backend's app database: two workers on SQLite (they share its files: the app
database and the claim log), one on PostgreSQL (each worker imports and loads the models:
about 15 s of CPU). Claims and offer requests (each a new exposure) are sent in turn, one
after the other; the whole group is killed with SIGKILL while they flow. Read afresh from
the database, every claim the server acknowledged must be stored with the decision it was
told, every acknowledged exposure stored exactly once, and the server's output must hold no
customer id or IP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import ServingSettings, Settings
from cashback.vocab import Role
from serving.auth import create_key
from serving.db import open_database
from serving.tables import ClaimDecision, OfferDecision
from tests.serving.conftest import PEPPER, RULES, base_settings
from tests.serving.helpers import claim_body
from tests.serving.load import WorldOffers
from tests.serving.postgres import free_port

pytestmark = pytest.mark.xdist_group("serving")
ACKNOWLEDGED_BEFORE_KILL = 40


@pytest.fixture
def server_env(served_world: Path, database_url: str | None, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHBACK_")}
    env |= {
        "CASHBACK_DATA_DIR": str(served_world),
        "CASHBACK_IP_PEPPER": PEPPER,
        "CASHBACK_FRAUD__RULES_FILE": str(RULES),
        "CASHBACK_SERVING__DIRECTORY": str(tmp_path / "serving"),
        "CASHBACK_SERVING__AUDIT_SHARE": "0",
    }
    if database_url is not None:
        env["CASHBACK_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def server(
    server_env: dict[str, str], backend: str, tmp_path: Path
) -> Iterator[tuple[str, Path, int]]:
    """A `cashback serve` process group; yields (base URL, its output, pid)."""
    port = free_port()
    workers = "2" if backend == "sqlite" else "1"
    output = tmp_path / "server.log"
    command = [sys.executable, "-c", "from cashback.cli import main; main()", "serve",
               "--host", "127.0.0.1", "--port", str(port), "--workers", workers]  # fmt: skip
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, env=server_env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, output)
        yield base, output, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _wait_ready(base: str, process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {output.read_text()[-3000:]}")
        try:
            if httpx2.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"the server was not ready in time: {output.read_text()[-3000:]}")


def _engine_key(server_env: dict[str, str], database_url: str | None) -> str:
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    database = open_database(settings)
    try:
        with database.session() as session:
            return create_key(session, Role.ENGINE, "load").key
    finally:
        database.close()


def _stored(settings: Settings) -> tuple[dict[str, str], Counter[tuple[str, str, str]]]:
    """The stored claims (claim_id -> decision_id) and exposures (counted by content)."""
    database = open_database(settings, migrate=False)
    try:
        with database.session() as session:
            rows = session.execute(select(ClaimDecision.claim_id, ClaimDecision.decision_id))
            claims = dict(rows.tuples().all())
            exposures = session.execute(
                select(OfferDecision.customer_id, OfferDecision.ts, OfferDecision.decision_id)
            ).tuples()
            counted = Counter(
                (customer, ts.astimezone(UTC).isoformat().replace("+00:00", "Z"), decision)
                for customer, ts, decision in exposures
            )
    finally:
        database.close()
    return claims, counted


def test_a_killed_server_loses_no_acknowledged_claim_or_exposure(
    server: tuple[str, Path, int], server_env: dict[str, str], database_url: str | None
) -> None:
    # given a running server and an engine key
    base, output, pid = server
    headers = {"X-API-Key": _engine_key(server_env, database_url)}
    claims: dict[str, str] = {}  # claim_id -> decision_id told
    exposures: dict[str, str] = {}  # customer|ts -> decision_id told
    customers = [f"C{n:08d}" for n in range(1, 200)]
    offers = WorldOffers(None, customers=customers)  # each request a new exposure

    # when claims and offer requests are sent in turn, and the whole server is killed
    # (SIGKILL) once 40 of each have been acknowledged
    with httpx2.Client(base_url=base, headers=headers, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        for n in range(1000):
            if n % 2 == 0:
                body = claim_body(customer_id=customers[n % len(customers)])
                path, key, told = "/v1/claims/score", body["claim_id"], claims
            else:
                request = offers.next()
                path, body, key, told = request.path, request.body, request.key, exposures
            try:
                response = client.post(path, json=body)
            except httpx2.TransportError:
                break  # killed
            assert response.status_code == 200, response.text
            told[key] = response.json()["decision_id"]
            if len(claims) + len(exposures) == 2 * ACKNOWLEDGED_BEFORE_KILL:
                os.killpg(pid, signal.SIGKILL)
    assert len(claims) >= ACKNOWLEDGED_BEFORE_KILL
    assert len(exposures) >= ACKNOWLEDGED_BEFORE_KILL

    # then, read afresh from the database, every acknowledged claim is stored with the
    # decision told, and every acknowledged exposure is stored exactly once, as told
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    stored_claims, stored_exposures = _stored(settings)
    assert {k: stored_claims.get(k) for k in claims} == claims
    for key, decision in exposures.items():
        customer, ts = key.split("|")
        assert stored_exposures[(customer, ts, decision)] == 1, key
        same_window = [k for k in stored_exposures if k[:2] == (customer, ts)]
        assert same_window == [(customer, ts, decision)], key
    log = output.read_text()
    assert "Uvicorn running" in log or "Started server process" in log
    assert not any(customer in log for customer in customers)
    assert "198.51.100.23" not in log


def test_the_demo_ends_by_serving_with_a_demo_key_shown_once(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the demo's artefacts (stubbed: the pipeline has its own test) and uvicorn stubbed
    served: list[tuple[str, int, int]] = []
    monkeypatch.setattr("pipelines.demo.run", lambda _settings: iter(["demo world found"]))
    monkeypatch.setattr("serving.server.serve", lambda _settings, *address: served.append(address))
    runner = CliRunner()
    # when the demo runs twice, then once without serving
    first = runner.invoke(app, ["demo"])
    second = runner.invoke(app, ["demo"])
    third = runner.invoke(app, ["demo", "--no-serve"])
    # then the first run creates and shows an admin key, and each serving run serves
    assert first.exit_code == 0, first.output
    assert "demo admin API key (shown once, stored hashed): cbk_" in first.output
    assert "no demo key made" in second.output
    assert "cbk_" not in second.output
    assert third.exit_code == 0
    assert "serving" not in third.output
    assert served == [("127.0.0.1", 8000, 1), ("127.0.0.1", 8000, 1)]
