"""`cashback serve` end to end: uvicorn; SIGKILL loses no acknowledged claim.

The server runs in its own process group on a free loopback port, against the served world
and the backend's app database: two workers on SQLite (they share its files: the app
database and the claim log), one on PostgreSQL (each worker imports and loads the models:
about 15 s of CPU). Claims are sent one after the other; the whole group is
killed with SIGKILL while they flow. Every claim the server acknowledged must be stored
with the decision it was told, and the server's output must hold no customer id or IP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import ServingSettings
from cashback.vocab import Role
from serving.auth import create_key
from serving.db import open_database
from serving.tables import ClaimDecision
from tests.serving.conftest import PEPPER, RULES, base_settings
from tests.serving.helpers import claim_body
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


def test_a_killed_server_loses_no_acknowledged_claim(
    server: tuple[str, Path, int], server_env: dict[str, str], database_url: str | None
) -> None:
    base, output, pid = server
    headers = {"X-API-Key": _engine_key(server_env, database_url)}
    acknowledged: dict[str, str] = {}
    customers = [f"C{n:08d}" for n in range(1, 200)]
    with httpx2.Client(base_url=base, headers=headers, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        for n in range(1000):
            body = claim_body(customer_id=customers[n % len(customers)])
            try:
                response = client.post("/v1/claims/score", json=body)
            except httpx2.TransportError:
                break  # killed
            assert response.status_code == 200, response.text
            acknowledged[body["claim_id"]] = response.json()["decision_id"]
            if len(acknowledged) == ACKNOWLEDGED_BEFORE_KILL:
                os.killpg(pid, signal.SIGKILL)
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    database = open_database(settings, migrate=False)
    try:
        with database.session() as session:
            rows = session.execute(select(ClaimDecision.claim_id, ClaimDecision.decision_id))
            stored = dict(rows.tuples().all())
    finally:
        database.close()
    assert {k: stored.get(k) for k in acknowledged} == acknowledged
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
