"""Running the API: `cashback serve` (uvicorn) and what it prepares first.

Before uvicorn starts its workers, the parent process migrates the app database and builds
the claim log, so that workers starting together neither race to migrate nor to seed. The
access log is off: request lines carry paths with customer ids; `/metrics` counts requests
by route template instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from cashback.settings import Settings, get_settings
from cashback.vocab import Role
from serving.auth import CreatedKey, create_key
from serving.claim_log import open_claim_log
from serving.db import open_database
from serving.tables import ApiKey

if TYPE_CHECKING:
    from fastapi import FastAPI

FACTORY = "serving.server:app_from_environment"


def app_from_environment() -> FastAPI:
    """The app for the settings of the environment (uvicorn's factory, one per worker)."""
    from serving.app import create_app  # noqa: PLC0415

    return create_app(get_settings())


def prepare(settings: Settings) -> str:
    """Migrate the app database and build the claim log; the database's revision."""
    database = open_database(settings, migrate=False)
    try:
        revision = database.upgrade()
    finally:
        database.close()
    open_claim_log(settings).close()
    return revision


def share_metrics(settings: Settings) -> Path:
    """An empty directory for the workers' Prometheus counts, named in their environment.

    Set before uvicorn starts (spawns) its workers: each worker's prometheus_client starts
    in multiprocess mode, writing there, and reads `serving.metrics_directory` to sum every
    worker's counts on /metrics. Emptied first: a previous run's counts are not this one's.
    """
    directory = settings.serving_dir / "metrics"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):  # both spellings
        os.environ[name] = str(directory)
    os.environ["CASHBACK_SERVING__METRICS_DIRECTORY"] = str(directory)
    return directory


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Prepare, then run uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415

    prepare(settings)
    if workers > 1:
        share_metrics(settings)
    uvicorn.run(
        FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="info",
    )


def demo_key(settings: Settings) -> CreatedKey | None:
    """An admin key named `demo` when the database has no active key (else None)."""
    database = open_database(settings, migrate=True)
    try:
        with database.session() as session:
            active = session.scalars(
                select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)
            ).first()
            return None if active is not None else create_key(session, Role.ADMIN, "demo")
    finally:
        database.close()
