"""POST /v1/claims/score: the cashback engine asks whether a claim looks fraudulent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from serving.auth import Principal
from serving.claims import ClaimConflictError
from serving.deps import EngineKey, StateDep
from serving.schemas import (
    ClaimScoreRequest,
    ClaimScoreResponse,
    ErrorResponse,
    ValidationErrorResponse,
)
from serving.state import AppState

router = APIRouter(prefix="/v1/claims", tags=["claims"])


def response_of(row: Mapping[str, Any]) -> ClaimScoreResponse:
    """The API's view of a stored decision (a `claim_decisions` row)."""
    return ClaimScoreResponse.model_validate({k: row[k] for k in ClaimScoreResponse.model_fields})


@router.post(
    "/score",
    summary="score a claim: risk, decision, rule hits",
    responses={
        401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
        403: {"model": ErrorResponse, "description": "the key's role may not score claims"},
        409: {"model": ErrorResponse, "description": "claim_id scored before, other inputs"},
        413: {"description": "request body too large"},
        422: {"model": ValidationErrorResponse, "description": "invalid fields"},
    },
)
async def score_claim(
    claim: ClaimScoreRequest,
    state: StateDep,
    principal: EngineKey,
    explain: Annotated[
        bool, Query(description="compute the reasons and the abuse type inline (slower)")
    ] = False,
) -> ClaimScoreResponse:
    """Score a claim with the fraud champion and the rules.

    Idempotent on `claim_id`: a retry, even concurrent, gets the stored answer. A review or
    block opens a review case; so does a random share of allowed claims (the audit sample).
    Reasons are computed after answering and stored on the case, unless `explain=true`.
    Without a model or feature store the claim goes to review with `fallback: true`.
    """
    # Inline on the event loop, not in the thread pool: the work is CPU under the GIL with
    # short database calls, and the hop to a pool thread plus the GIL hand-offs between the
    # loop and the pool cost more than they overlap. Measured on one core at a steady 200
    # claims/s: p50 25 -> 4.9 ms, p99 853 -> 20 ms, server CPU 4.1 -> 3.3 ms a claim.
    # Requests of one worker no longer overlap: concurrent retries race across workers
    # only (the unique claim_id still settles it). `?explain=true` goes to the pool: tree
    # SHAP inline takes milliseconds.
    if explain:
        return await run_in_threadpool(_score, state, claim, principal, explain=True)
    return _score(state, claim, principal, explain=False)


def _score(
    state: AppState, claim: ClaimScoreRequest, principal: Principal, *, explain: bool
) -> ClaimScoreResponse:
    try:
        row = state.claims.score(claim, principal, explain=explain)
    except ClaimConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    return response_of(row)
