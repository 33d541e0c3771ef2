"""GET /v1/payouts/decisions: the payout feed the cashback engine polls.

Role: engine (and admin). The entries are numbered 1, 2, 3, ... in commit order: a reader
never sees an entry before every earlier one is visible (see `serving.payouts`), so polling
with the last sequence handled never skips or repeats an entry.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from serving.deps import EngineKey, StateDep
from serving.payouts import read_feed
from serving.review_schemas import PayoutFeed
from serving.schemas import MAX_ROW_ID, ErrorResponse, ValidationErrorResponse

router = APIRouter(prefix="/v1/payouts", tags=["payouts"])


@router.get(
    "/decisions",
    summary="hold, release or claw back: the review decisions' payout actions, in order",
    responses={
        401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
        403: {"model": ErrorResponse, "description": "the key's role may not read the feed"},
        422: {"model": ValidationErrorResponse, "description": "invalid cursor or limit"},
    },
)
def payout_decisions(
    state: StateDep,
    _principal: EngineKey,
    after: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_ROW_ID,
            description="the last sequence handled (next_cursor); 0 from the start",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PayoutFeed:
    """The entries after `after`, at most `limit`, strictly ordered by sequence.

    release: pay the amount; hold: do not pay it (reject: ever; hold: until a later
    decision); clawback: take it back. A partial decision adds a release of the approved
    amount, then a hold of the rest.
    """
    entries = read_feed(state.db.engine, after, limit)
    last = entries[-1]["sequence"] if entries else after
    return PayoutFeed.model_validate({"entries": entries, "next_cursor": str(last)})
