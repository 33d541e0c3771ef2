"""The risk team's review workflow: the queue, a case in full, locks, decisions, statistics.

Role: risk (and admin). See `serving.reviews` for statuses, locks and how decisions are
stored, and `serving.review_queue` for the queue's order and cursor.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import AwareDatetime

from cashback.vocab import AbuseType
from serving.deps import RiskKey, SettingsDep, StateDep
from serving.review_queue import CursorError, QueueFilters, case_detail, queue, review_stats
from serving.review_schemas import (
    BulkDecisionBody,
    BulkDecisionResponse,
    CaseDetail,
    CaseLock,
    DecisionRequestBody,
    DecisionResponse,
    QueuePage,
    QueueSort,
    ReviewStats,
)
from serving.reviews import DecisionRequest, ReviewError, ReviewService
from serving.schemas import MAX_ROW_ID, ErrorResponse, ValidationErrorResponse
from serving.tables import CaseReason, CaseStatus

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])
MAX_AGE_HOURS = 24 * 366 * 100  # a century: older cases are all cases
CaseId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the review case's id")]
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
    403: {"model": ErrorResponse, "description": "the key's role may not review claims"},
}
INVALID = {"model": ValidationErrorResponse, "description": "invalid fields"}
NOT_FOUND = {"model": ErrorResponse, "description": "no review case with this id"}


def _refused(error: ReviewError) -> HTTPException:
    return HTTPException(error.status, str(error))


@router.get(
    "",
    summary="the review queue: filtered, ordered, a page at a time",
    responses=UNAUTHORIZED | {422: {"description": "invalid filters or cursor"}},
)
def list_cases(
    state: StateDep,
    _principal: RiskKey,
    status_: Annotated[
        list[CaseStatus] | None,
        Query(alias="status", description="statuses shown (default: open and held)"),
    ] = None,
    min_score: Annotated[float | None, Query(ge=0, le=100, description="risk score")] = None,
    abuse_type: AbuseType | None = None,
    reason: Annotated[CaseReason | None, Query(description="flagged or audit")] = None,
    opened_after: Annotated[
        AwareDatetime | None, Query(description="cases opened since (with its time zone)")
    ] = None,
    max_age_hours: Annotated[
        float | None, Query(gt=0, le=MAX_AGE_HOURS, description="opened at most")
    ] = None,
    sort: QueueSort = QueueSort.EXPECTED_LOSS,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="a next_cursor")] = None,
) -> QueuePage:
    """The cases to review, by expected loss (probability x cashback) unless told otherwise.

    Pages follow `next_cursor`: a cursor marks the last case seen by its sort key and id, so
    cases opened meanwhile neither repeat nor hide one (each case shows once). A case held by
    an analyst shows `locked_by` and `locked_until`.
    """
    try:
        since = None if opened_after is None else opened_after.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00: before the first UTC time
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "opened_after: out of the range of UTC times"
        ) from None
    filters = QueueFilters(
        statuses=tuple(status_) if status_ else (CaseStatus.OPEN, CaseStatus.HELD),
        min_score=min_score,
        abuse_type=None if abuse_type is None else abuse_type.value,
        reason=None if reason is None else reason.value,
        opened_after=since,
        max_age_hours=max_age_hours,
    )
    try:
        items, next_cursor = queue(state.db.engine, filters, sort, limit, cursor)
    except CursorError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return QueuePage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/stats",
    summary="the review workflow per day",
    responses=UNAUTHORIZED | {422: INVALID},
)
def get_stats(
    state: StateDep,
    _principal: RiskKey,
    days: Annotated[int, Query(ge=1, le=366, description="days up to today (UTC)")] = 30,
) -> ReviewStats:
    """The review workflow per UTC day, oldest first.

    Cases opened (flagged, audit), final decisions and holds, the share confirmed as fraud,
    the fraud rate of the audit sample, the cashback saved and the median time to a final
    decision.
    """
    return ReviewStats.model_validate({"days": review_stats(state.db.engine, days)})


@router.get(
    "/{case_id}",
    summary="a review case in full: claim, reasons, norms, history, linked accounts",
    responses=UNAUTHORIZED | {404: NOT_FOUND, 422: INVALID},
)
def get_case(
    case_id: CaseId, state: StateDep, settings: SettingsDep, _principal: RiskKey
) -> CaseDetail:
    """A review case in full.

    The claim, its scoring decision and rule hits, the reasons (null until computed), the
    features beside the customer's own norm, the customer's history (claims and review
    outcomes; purchases and returns when the contract tables are there) and the accounts
    linked by device, IP hash or receipt hash, with their claims.
    """
    detail = case_detail(state.db.engine, settings, case_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no review case {case_id}")
    return CaseDetail.model_validate(detail)


@router.post(
    "/{case_id}/claim",
    summary="take a case: lock it for this analyst",
    responses=UNAUTHORIZED
    | {
        404: NOT_FOUND,
        409: {"model": ErrorResponse, "description": "decided, or locked by another analyst"},
        422: INVALID,
    },
)
def claim_case(case_id: CaseId, state: StateDep, principal: RiskKey) -> CaseLock:
    """Lock an open or held case for the caller for `CASHBACK_SERVING__REVIEW_LOCK_MINUTES`.

    Taking it again extends the lock; an expired lock can be taken by anyone. While it is
    locked, others see who holds it and until when, and their claims and decisions get 409.
    """
    try:
        lock = ReviewService(state.settings, state.db).take(case_id, principal)
    except ReviewError as error:
        raise _refused(error) from None
    return CaseLock.model_validate(lock)


DECISION_ERRORS: dict[int | str, dict[str, Any]] = UNAUTHORIZED | {
    404: NOT_FOUND,
    409: {
        "model": ErrorResponse,
        "description": "a case decided (or held, for a hold) already, locked by another "
        "analyst, or the client_decision_id used for another request",
    },
    422: {
        "model": ValidationErrorResponse | ErrorResponse,
        "description": "invalid fields, an unknown decision, or an amount that does not fit",
    },
}


@router.post(
    "/bulk-decision",
    summary="decide several cases (a ring) in one transaction",
    responses=DECISION_ERRORS,
)
def bulk_decision(
    body: BulkDecisionBody, state: StateDep, principal: RiskKey
) -> BulkDecisionResponse:
    """Decide every case named, or none: one transaction (a partial decision is per case).

    Idempotent on `client_decision_id`. Any case missing (404), decided or locked by another
    analyst (409) refuses the whole request, and nothing is written.
    """
    try:
        request = DecisionRequest.ring(
            body.case_ids, body.decision, body.note, body.client_decision_id, body.abuse_type
        )
    except ReviewError as error:
        raise _refused(error) from None
    try:
        decided = ReviewService(state.settings, state.db).decide(request, principal)
    except ReviewError as error:
        raise _refused(error) from None
    return BulkDecisionResponse.model_validate(
        {"client_decision_id": body.client_decision_id, "decisions": decided}
    )


@router.post(
    "/{case_id}/decision",
    summary="decide a case: approve, reject, partial, clawback or hold",
    responses=DECISION_ERRORS,
)
def decide_case(
    case_id: CaseId, body: DecisionRequestBody, state: StateDep, principal: RiskKey
) -> DecisionResponse:
    """Store the analyst's decision, with the time and the note, and its payout entries.

    approve, reject, partial and clawback close the case with a label (legit for approve,
    fraud otherwise); hold holds the payout and keeps the case open (status `held`) for a
    final decision. Idempotent on `client_decision_id`. Refused with nothing written: a case
    locked by another analyst or decided (409), a partial amount outside (0, cashback] or an
    abuse type with a decision that is not fraud (422).
    """
    request = DecisionRequest(
        case_ids=(case_id,),
        decision=body.decision,
        amount=body.amount,
        note=body.note,
        client_decision_id=body.client_decision_id,
        abuse_type=body.abuse_type,
    )
    try:
        [decided] = ReviewService(state.settings, state.db).decide(request, principal)
    except ReviewError as error:
        raise _refused(error) from None
    return DecisionResponse.model_validate(decided)
