"""The FastAPI app: `create_app(settings)`.

Nothing happens at import or when the app is created: its lifespan opens the app database
(migrating it when configured), loads the fraud champion and opens the online store and the
claim log, and closes them at shutdown. Routes live in `serving/routes/`, one module per
resource.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from cashback.settings import Settings
from serving import state as app_state
from serving.console.mount import mount_console
from serving.metrics import Metrics, RequestMetricsMiddleware
from serving.routes import (
    claims,
    customers,
    decisions,
    experiments,
    health,
    offers,
    payouts,
    reviews,
)

logger = logging.getLogger(__name__)

DESCRIPTION = """
Offers and rates for the cashback engine (`/v1/offers/recommend`: the personalized policy
with exploration, the global holdout and experiments, stable for the exposure's window),
fraud scores for its claims (`/v1/claims/score`), customer insights, every decision's
inputs and versions (`/v1/decisions`), with the service's probes and metrics.

Marketers run A/B tests of rate policies under `/v1/experiments`: create, list, show,
start and stop experiments, and read their results (verdict, SRM, lifts) or HTML report.

The risk team works the review cases of flagged and audited claims under `/v1/reviews`
(queue, case details, locks, decisions, statistics); the engine polls the payout actions
the decisions imply at `/v1/payouts/decisions`.

People use the web console at `/console` (sign in with a key).

Authenticate with an API key in the `X-API-Key` header (`cashback keys create --role
engine`). Roles: engine, marketer, risk, admin (admin may call every route).
"""


def _field_errors(errors: list[dict[str, object]]) -> list[dict[str, object]]:
    """Pydantic's errors without the values sent (they may hold an IP or a customer id)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]  # type: ignore[call-overload]


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(
        {"detail": _field_errors(list(error.errors()))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _database_down(_request: Request, _error: Exception) -> JSONResponse:
    logger.error("app database unavailable", exc_info=_error)
    return JSONResponse(
        {"detail": "the app database is unavailable; retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def create_app(settings: Settings) -> FastAPI:
    """The API for these settings (started by uvicorn, or by FastAPI's TestClient).

    Args:
        settings: the service settings.
    """
    metrics = Metrics(shared_directory=settings.serving.metrics_directory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app_state.start(settings, metrics)
        app.state.serving = state
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="cashback-ml",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
        max_body_size=settings.serving.max_body_bytes,
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DBAPIError, _database_down)
    app.include_router(health.router)
    app.include_router(claims.router)
    app.include_router(experiments.router)
    app.include_router(offers.router)
    app.include_router(customers.router)
    app.include_router(decisions.router)
    app.include_router(reviews.router)
    app.include_router(payouts.router)
    mount_console(app)  # the web console's pages under /console
    return app
