"""A throw-away PostgreSQL server for a test session.

`initdb` and `pg_ctl` create and run a cluster in a fresh temp directory on a free loopback
port, with trust authentication and no fsync (nothing here must survive the machine). As
root they run as the `postgres` user (PostgreSQL refuses to run as root); the packaged
cluster is never touched. Without PostgreSQL the callers skip, saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

PG_MISSING = (
    "PostgreSQL is not installed: run `scripts/install_services.sh` as root (`make test` "
    "does) or `apt-get install postgresql`"
)
USER = "cashback"
DATABASE = "cashback_test"


def server_binaries() -> Path | None:
    """The directory of `initdb` and `pg_ctl`: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _as_owner(command: list[str], owner: pwd.struct_passwd | None) -> list[str]:
    if owner is None:
        return command
    return ["runuser", "-u", owner.pw_name, "--", *command]


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"{' '.join(command)} failed: {result.stdout}{result.stderr}"
        raise RuntimeError(msg)


def _wait(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a PostgreSQL server with an empty database; yields its SQLAlchemy URL.

    Raises:
        FileNotFoundError: PostgreSQL is not installed (or, as root, no `postgres` user).
        RuntimeError: the server would not start.
    """
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError(PG_MISSING)
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise FileNotFoundError(PG_MISSING) from None
    root = Path(tempfile.mkdtemp(prefix="cashback-pg-"))
    data = root / "data"
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        _run(_as_owner([str(binaries / "initdb"), "-D", str(data), "-U", USER,
                        "--auth=trust", "--encoding=UTF8", "--no-sync"], owner))  # fmt: skip
        port = _start(binaries, data, root, owner)
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True
            ) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            _run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                            "stop"], owner))  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(binaries: Path, data: Path, root: Path, owner: pwd.struct_passwd | None) -> int:
    """Start the server on a free port (another process may take one first); the port."""
    for _ in range(5):
        port = free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        command = [str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
                   "-l", str(root / "server.log"), "-w", "-t", "60", "start"]  # fmt: skip
        try:
            _run(_as_owner(command, owner))
        except RuntimeError:
            continue
        _wait(port)
        return port
    msg = f"could not start PostgreSQL on a free port; see {root / 'server.log'}"
    raise RuntimeError(msg)
