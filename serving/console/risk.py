"""The risk team's pages: the review queue, a case, decisions, the daily summary.

They call what the review API calls (`serving.review_queue`, `serving.reviews`): the same
queue and filters, the same case details, locks and decisions, the same statistics.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, func, select

from cashback.vocab import AbuseType, ReviewDecision
from serving.console.deps import FormError, RiskSession, app_state, form_of, read_query
from serving.console.graph import LINK_NAMES, link_graph
from serving.console.rendering import PREFIX, render
from serving.console.security import ConsoleUser
from serving.review_queue import CursorError, QueueFilters, case_detail, queue, review_stats
from serving.review_schemas import BulkDecisionBody, DecisionRequestBody, QueueSort
from serving.reviews import DecisionRequest, ReviewError, ReviewService
from serving.routes.reviews import CaseId
from serving.tables import CaseReason, CaseStatus, ClaimDecision, ReviewCase

router = APIRouter(prefix=f"{PREFIX}/risk", include_in_schema=False)
RISK: Final = f"{PREFIX}/risk"
NEIGHBOURS_LIMIT: Final = 200  # queue cases searched for the previous and next case
PENDING: Final = (CaseStatus.OPEN.value, CaseStatus.HELD.value)
NOTICES: Final = {  # ?done=... after a redirect: fixed texts, nothing of the URL is shown
    "taken": "You hold this case now: others cannot decide it until your lock ends.",
    "decided": "Decision recorded.",
    "ring": "Decision recorded for every case of the ring.",
}
SORT_NAMES: Final = {
    QueueSort.EXPECTED_LOSS: "expected loss",
    QueueSort.SCORE: "risk score",
    QueueSort.AGE: "age (oldest first)",
}


class QueueQuery(BaseModel):
    """The queue page's filters (those of `GET /v1/reviews`)."""

    model_config = ConfigDict(extra="ignore")

    status: list[CaseStatus] = Field(default=[CaseStatus.OPEN, CaseStatus.HELD])
    min_score: float | None = Field(default=None, ge=0, le=100)
    abuse_type: AbuseType | None = None
    reason: CaseReason | None = None
    max_age_hours: float | None = Field(default=None, gt=0, le=24 * 366 * 100)
    sort: QueueSort = QueueSort.EXPECTED_LOSS
    limit: int = Field(default=25, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)

    def filters(self) -> QueueFilters:
        """As the queue's filters."""
        return QueueFilters(
            statuses=tuple(self.status),
            min_score=self.min_score,
            abuse_type=None if self.abuse_type is None else self.abuse_type.value,
            reason=None if self.reason is None else self.reason.value,
            max_age_hours=self.max_age_hours,
        )

    def link(self, cursor: str | None) -> str:
        """The queue page with these filters, at this cursor."""
        params: list[tuple[str, str]] = [("status", s.value) for s in self.status]
        for name in ("min_score", "abuse_type", "reason", "max_age_hours"):
            value = getattr(self, name)
            if value is not None:
                params.append((name, str(value)))
        params += [("sort", self.sort.value), ("limit", str(self.limit))]
        if cursor:
            params.append(("cursor", cursor))
        return f"{RISK}/queue?{urlencode(params)}"


class SummaryQuery(BaseModel):
    """The summary page's period."""

    model_config = ConfigDict(extra="ignore")

    days: int = Field(default=14, ge=1, le=90)


@router.get("")
def risk_home(_user: RiskSession) -> Response:
    """The risk area starts at the queue."""
    return RedirectResponse(f"{RISK}/queue", status.HTTP_303_SEE_OTHER)


@router.get("/queue")
def queue_page(request: Request, user: RiskSession) -> HTMLResponse:
    """The queue of flagged and audit cases, filtered and ordered as the API's, a page at once."""
    context: dict[str, Any] = {
        "statuses": list(CaseStatus),
        "abuse_types": list(AbuseType),
        "reasons": list(CaseReason),
        "sorts": SORT_NAMES,
        "items": [],
        "next_link": None,
    }
    try:
        query = read_query(request, QueueQuery)
        items, cursor = queue(
            app_state(request).db.engine, query.filters(), query.sort, query.limit, query.cursor
        )
    except (FormError, CursorError) as error:
        context |= {"query": QueueQuery(), "error": str(error)}
        return render(request, "risk/queue.html", context, user=user, status_code=422)
    context |= {
        "query": query,
        "items": items,
        "next_link": query.link(cursor) if cursor else None,
        "first_link": query.link(None) if query.cursor else None,
    }
    return render(request, "risk/queue.html", context, user=user)


# --------------------------------------------------------------------------- one case


def _neighbours(engine: Engine, case_id: int) -> tuple[int | None, int | None]:
    """The cases before and after this one in the default queue (by expected loss)."""
    items, _ = queue(engine, QueueFilters(), QueueSort.EXPECTED_LOSS, NEIGHBOURS_LIMIT)
    ids = [item["case_id"] for item in items]
    if case_id not in ids:
        return None, ids[0] if ids else None
    at = ids.index(case_id)
    return (ids[at - 1] if at > 0 else None), (ids[at + 1] if at + 1 < len(ids) else None)


def _lock_holder_id(engine: Engine, case_id: int) -> int | None:
    with engine.connect() as connection:
        holder: int | None = connection.scalar(
            select(ReviewCase.locked_by_key_id).where(ReviewCase.id == case_id)
        )
        return holder


def _ring_candidates(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """This case and the linked accounts' cases still to decide: a ring to decide at once."""
    case = detail["case"]
    own = {
        "case_id": case["case_id"],
        "claim_id": case["claim_id"],
        "cashback_amount": case["cashback_amount"],
        "case_status": case["status"],
    }
    claims = [("this case", case["customer_id"], own)] + [
        (", ".join(LINK_NAMES.get(k, k) for k in account["linked_by"]), account["customer_id"], c)
        for account in detail["linked_accounts"]
        for c in account["claims"]
    ]
    return [
        {
            "case_id": claim["case_id"],
            "customer_id": customer,
            "claim_id": claim["claim_id"],
            "cashback_amount": claim["cashback_amount"],
            "status": claim["case_status"],
            "via": via,
        }
        for via, customer, claim in claims
        if claim["case_id"] is not None and claim["case_status"] in PENDING
    ]


def _case_page(
    request: Request,
    user: ConsoleUser,
    case_id: int,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    state = app_state(request)
    detail = case_detail(state.db.engine, state.settings, case_id)
    if detail is None:
        missing = {"title": "No such case", "message": f"There is no review case {case_id}."}
        return render(request, "error.html", missing, user=user, status_code=404)
    case = detail["case"]
    holder = _lock_holder_id(state.db.engine, case_id) if case["locked_by"] else None
    previous, following = _neighbours(state.db.engine, case_id)
    history = detail["history"]["claims"]
    done = request.query_params.get("done")
    context = {
        "detail": detail,
        "case": case,
        "mine": holder == user.key_id,
        "locked_by_other": holder is not None and holder != user.key_id,
        "pending": case["status"] in PENDING,
        "previous": previous,
        "following": following,
        "graph": link_graph(case["customer_id"], len(history), detail["linked_accounts"]),
        "link_names": LINK_NAMES,
        "ring": _ring_candidates(detail),
        "decisions": list(ReviewDecision),
        "ring_decisions": [d for d in ReviewDecision if d is not ReviewDecision.PARTIAL],
        "abuse_types": list(AbuseType),
        "client_decision_id": f"console-{uuid.uuid4().hex}",
        "notice": NOTICES.get(done or ""),
        "error": error,
    }
    return render(request, "risk/case.html", context, user=user, status_code=status_code)


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: CaseId, user: RiskSession) -> HTMLResponse:
    """A case in full: reasons, norms, linked accounts, history, and the decision forms."""
    return _case_page(request, user, case_id)


def _done(case_id: int, what: str) -> RedirectResponse:
    return RedirectResponse(f"{RISK}/cases/{case_id}?done={what}", status.HTTP_303_SEE_OTHER)


@router.post("/cases/{case_id}/take")
def take_case(request: Request, case_id: CaseId, user: RiskSession) -> Response:
    """Lock the case for this analyst (the API's `POST /v1/reviews/{id}/claim`)."""
    state = app_state(request)
    try:
        ReviewService(state.settings, state.db).take(case_id, user.principal)
    except ReviewError as error:
        return _case_page(request, user, case_id, error=str(error), status_code=error.status)
    return _done(case_id, "taken")


@router.post("/cases/{case_id}/decision")
def decide_case(
    request: Request,
    case_id: CaseId,
    user: RiskSession,
    form: Annotated[DecisionRequestBody, Depends(form_of(DecisionRequestBody))],
) -> Response:
    """Record a decision on the case (the API's `POST /v1/reviews/{id}/decision`)."""
    decision = DecisionRequest(
        case_ids=(case_id,),
        decision=form.decision,
        amount=form.amount if form.decision is ReviewDecision.PARTIAL else None,
        note=form.note,
        client_decision_id=form.client_decision_id,
        abuse_type=form.abuse_type,
    )
    return _decide(request, user, case_id, decision, "decided")


@router.post("/cases/{case_id}/ring")
def decide_ring(
    request: Request,
    case_id: CaseId,
    user: RiskSession,
    form: Annotated[BulkDecisionBody, Depends(form_of(BulkDecisionBody))],
) -> Response:
    """One decision for the cases of a ring (the API's `POST /v1/reviews/bulk-decision`)."""
    try:
        decision = DecisionRequest.ring(
            form.case_ids, form.decision, form.note, form.client_decision_id, form.abuse_type
        )
    except ReviewError as error:
        return _case_page(request, user, case_id, error=str(error), status_code=error.status)
    return _decide(request, user, case_id, decision, "ring")


def _decide(
    request: Request, user: ConsoleUser, case_id: int, decision: DecisionRequest, done: str
) -> Response:
    state = app_state(request)
    try:
        ReviewService(state.settings, state.db).decide(decision, user.principal)
    except ReviewError as error:
        return _case_page(request, user, case_id, error=str(error), status_code=error.status)
    return _done(case_id, done)


# --------------------------------------------------------------------------- summary


def claims_per_day(engine: Engine, first: date) -> dict[date, int]:
    """Claims scored per UTC day since `first` (the denominator of the flag rate)."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    created: Any = ClaimDecision.created_at
    if engine.dialect.name == "postgresql":  # its date() would use the session's time zone
        created = func.timezone("UTC", created)
    day = func.date(created)
    with engine.connect() as connection:
        rows = connection.execute(
            select(day, func.count()).where(ClaimDecision.created_at >= start).group_by(day)
        ).all()
    return {date.fromisoformat(str(value)[:10]): int(count) for value, count in rows}


def _totals(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The period's figures from its days (shares weighted by their counts)."""
    flagged = sum(d["opened_flagged"] for d in days)
    scored = sum(d["claims_scored"] for d in days)
    decided = sum(d["decided"] for d in days)
    fraud = sum((d["fraud_share"] or 0.0) * d["decided"] for d in days)
    audited = sum(d["audit_decided"] for d in days)
    audit_fraud = sum((d["audit_fraud_rate"] or 0.0) * d["audit_decided"] for d in days)
    return {
        "opened_flagged": flagged,
        "opened_audit": sum(d["opened_audit"] for d in days),
        "claims_scored": scored,
        "flag_rate": flagged / scored if scored else None,
        "decided": decided,
        "held": sum(d["held"] for d in days),
        "fraud_share": fraud / decided if decided else None,
        "audit_decided": audited,
        "audit_fraud_rate": audit_fraud / audited if audited else None,
        "cashback_saved": sum(d["cashback_saved"] for d in days),
    }


@router.get("/summary")
def summary_page(request: Request, user: RiskSession) -> HTMLResponse:
    """The review workflow per day: flag rate, decisions, confirmed share, audit fraud, saved."""
    try:
        query = read_query(request, SummaryQuery)
    except FormError as error:
        invalid = {"title": "Invalid period", "message": str(error)}
        return render(request, "error.html", invalid, user=user, status_code=422)
    engine = app_state(request).db.engine
    days = review_stats(engine, query.days)
    scored = claims_per_day(engine, days[0]["day"])
    for day in days:
        day["claims_scored"] = scored.get(day["day"], 0)
        count = day["claims_scored"]
        day["flag_rate"] = day["opened_flagged"] / count if count else None
    today, week = days[-1], days[-min(7, len(days)) :]
    context = {
        "query": query,
        "days": list(reversed(days)),
        "today": _totals([today]),
        "week": _totals(week),
        "period": _totals(days),
        "first": days[0]["day"],
        "last": days[-1]["day"],
    }
    return render(request, "risk/summary.html", context, user=user)
