"""Probes and metrics: /healthz (alive), /readyz (can serve with its models), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from serving.deps import StateDep
from serving.metrics import CONTENT_TYPE
from serving.schemas import Health, Readiness

DATABASE = "database"
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="the process is alive")
def healthz() -> Health:
    """Always 200 while the process answers (no dependency is checked)."""
    return Health()


@router.get(
    "/readyz",
    summary="the models and the feature store are loaded",
    responses={503: {"model": Readiness, "description": "something is missing"}},
)
def readyz(state: StateDep, response: Response) -> Readiness:
    """200 when the models, the stores, the claim log, the offer book and the database are up.

    Otherwise 503 with what is missing and why. A missing component is loaded again first
    (at most every `CASHBACK_SERVING__RETRY_LOAD_SECONDS`).
    """
    state.runtime.retry()
    missing = dict(state.runtime.problems)
    try:
        state.db.ping()
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        missing[DATABASE] = f"{type(error).__name__}: {error}"
    loaded = state.runtime.describe()
    if DATABASE not in missing:
        loaded[DATABASE] = state.db.backend
    if missing:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Readiness(status="not ready", loaded=loaded, missing=missing)
    return Readiness(status="ready", loaded=loaded, missing={})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "text exposition format"}},
)
def metrics(state: StateDep) -> Response:
    """Requests and latency per route, claim decisions by type, fallbacks, reasons' delay."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)
