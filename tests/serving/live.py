"""A real API server for load tests: `cashback serve` (uvicorn) in a subprocess.

The server runs in its own process group on a free loopback port, with its settings passed
through `CASHBACK_*` variables (as an operator would), in a working directory of its own
(no `.env` of the checkout is read). It is stopped with SIGINT (uvicorn's graceful stop),
then SIGKILL if it lingers. Used by the load smoke test (`make test`) and by the API load
benchmark (`make bench`), which also starts its naive baseline this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from pydantic import BaseModel, SecretStr

from cashback.settings import Settings
from cashback.vocab import Role
from serving.auth import create_key
from serving.db import open_database
from tests.conftest import PROJECT_ROOT
from tests.serving.postgres import free_port

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


class ServerExitedError(RuntimeError):
    """The server process ended or never became ready; the message holds its output's end."""


@dataclass(frozen=True)
class LiveServer:
    """A running server process.

    Attributes:
        base_url: `http://127.0.0.1:PORT`.
        pid: the server process (uvicorn's, with one worker: the one that serves).
        log: its standard output and error.
        started_s: seconds from the process start to the first 200 of the ready probe.
    """

    base_url: str
    pid: int
    log: Path
    started_s: float


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The `CASHBACK_*` variables that give a process these settings (the fields set).

    Only fields set explicitly (in `Settings(...)` or a nested model) are exported, nested
    with `__`; the process's defaults supply the rest, as they did here.
    """
    env: dict[str, str] = {}

    def walk(model: BaseModel, prefix: str) -> None:
        for name in model.model_fields_set:
            value = getattr(model, name)
            key = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(value, f"{key}__")
            elif value is not None:
                env[key] = _env_value(value)

    walk(settings, "CASHBACK_")
    return env


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its `CASHBACK_*` variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHBACK_")}
    return env | dict(extra)


def serve_command(port: int, workers: int = 1) -> list[str]:
    """`cashback serve` on a loopback port, with this interpreter."""
    return [sys.executable, "-c", "from cashback.cli import main; main()", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]  # fmt: skip


def uvicorn_command(factory: str, port: int) -> list[str]:
    """uvicorn on an app factory (`module:function`), one worker, no access log."""
    return [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip


def _wait_ready(
    base: str, process: subprocess.Popen[bytes], log: Path, ready_path: str, started: float
) -> float:
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            msg = f"the server exited ({process.returncode}): {log.read_text()[-3000:]}"
            raise ServerExitedError(msg)
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.25)
    msg = f"the server was not ready in {READY_TIMEOUT_S:.0f} s: {log.read_text()[-3000:]}"
    raise ServerExitedError(msg)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the server's group, SIGKILL if it has not stopped in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def run_server(
    command: list[str], env: Mapping[str, str], workdir: Path, ready_path: str = "/readyz"
) -> Iterator[LiveServer]:
    """Start a server command on loopback and wait until it is ready.

    Args:
        command: the server's argv, with a `--port PORT` argument (the port it binds).
        env: its whole environment.
        workdir: its working directory; its output goes to `workdir/server.log`.
        ready_path: polled until it answers 200.

    Yields:
        The running server, stopped on exit.

    Raises:
        ServerExitedError: it exited, or was not ready in time.
    """
    port = command[command.index("--port") + 1]
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    base = f"http://127.0.0.1:{port}"
    env = {**env, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])}
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        ready_s = _wait_ready(base, process, log, ready_path, started)
        yield LiveServer(base, process.pid, log, ready_s)
    finally:
        _stop(process)


@contextlib.contextmanager
def cashback_serve(settings: Settings, workdir: Path, workers: int = 1) -> Iterator[LiveServer]:
    """`cashback serve` with these settings on a free port, ready (see `run_server`)."""
    env = clean_environment(settings_env(settings))
    with run_server(serve_command(free_port(), workers), env, workdir) as server:
        yield server


def api_key(settings: Settings, role: Role = Role.ENGINE, name: str = "load") -> str:
    """A new key in the app database of these settings (migrated first when needed)."""
    database = open_database(settings, migrate=True)
    try:
        with database.session() as session:
            return create_key(session, role, name).key
    finally:
        database.close()
