"""Scoring a claim: features, the champion and the rules, the stored decision, review cases.

The request path, for a claim_id not seen before:

1. the raw IP is hashed (it goes no further);
2. features: the fraud service's stored views from the online store (an entity the store
   does not know gets its cold-start values, a missing device or IP gets nulls, as in
   training), fresh features from the claim log, request-time features from the claim;
3. the champion's score, the rules and the decision (reasons too with `explain`);
4. one transaction stores the decision and, for a review or block (or an allowed claim drawn
   for the audit), its review case. The claim_id is unique: when a concurrent retry stored
   first, this answer is dropped and the stored one returned;
5. the claim is recorded in the claim log; a flagged case is queued for its reasons.

A claim_id already stored gets the stored answer at once (409 if the retry's inputs
differ). Without a model, a store or a claim log, or when reading them fails, the claim
goes to review with the reason "model unavailable" and `fallback` true: never a 500.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from cashback.privacy import hash_ip
from cashback.settings import Settings
from features.catalog import views
from features.cold_start import cold_start
from features.fresh import on_demand_row
from models.fraud.decisions import Decision
from models.fraud.reasons import Explanation
from serving.auth import Principal
from serving.db import Database
from serving.metrics import Metrics
from serving.reasons import ReasonWorker, explain_rows, json_safe
from serving.runtime import LoadedFraud, Runtime
from serving.schemas import ClaimScoreRequest
from serving.tables import CaseReason, CaseStatus, ClaimDecision, ReviewCase, utc_now

logger = logging.getLogger(__name__)

MODEL_UNAVAILABLE = "model unavailable"
ENDPOINT = "claims.score"
# inputs a retry must repeat (the raw IP only through its hash)
SAME_INPUTS = (
    "customer_id",
    "txn_id",
    "amount",
    "cashback_amount",
    "payout_method",
    "device_id",
    "ip_hash",
    "receipt_hash",
    "ts",
)
_random = secrets.SystemRandom()
DECISIONS = cast(Table, ClaimDecision.__table__)
CASES = cast(Table, ReviewCase.__table__)
# built once: executed with parameters, each compiles once per engine
FIND = select(DECISIONS).where(DECISIONS.c.claim_id == bindparam("claim_id"))
INSERT_DECISION = insert(DECISIONS).returning(DECISIONS.c.id)
INSERT_CASE = insert(CASES).returning(CASES.c.id)


class ClaimConflictError(Exception):
    """The claim_id was scored before with other inputs."""


@dataclass(frozen=True)
class Scored:
    """The answer for a claim, before it is stored."""

    risk_score: float | None
    probability: float | None
    decision: str
    abuse_type: str | None
    rule_hits: list[str]
    reasons: list[str] | None
    model_version: str | None
    features: dict[str, Any] | None

    @property
    def fallback(self) -> bool:
        """Whether this is the safe answer given without a model."""
        return self.model_version is None


def fallback_answer() -> Scored:
    """The safe answer: review, because the model or its features are unavailable."""
    return Scored(
        risk_score=None,
        probability=None,
        decision=Decision.REVIEW.value,
        abuse_type=None,
        rule_hits=[],
        reasons=[MODEL_UNAVAILABLE],
        model_version=None,
        features=None,
    )


def claim_inputs(request: ClaimScoreRequest, pepper: bytes) -> dict[str, Any]:
    """The claim as stored and as the features see it: the IP replaced by its hash."""
    fields = request.model_dump(exclude={"ip"})
    fields["payout_method"] = request.payout_method.value
    fields["ip_hash"] = None if request.ip is None else hash_ip(str(request.ip), pepper)
    return fields


def claim_features(
    runtime: Runtime, settings: Settings, claim: Mapping[str, Any]
) -> dict[str, Any]:
    """Every fraud_v1 feature of a claim at its time (see the module docstring).

    Raises:
        RuntimeError: the online store or the claim log is not loaded.
    """
    reader, log = runtime.online, runtime.claim_log
    if reader is None or log is None:
        msg = "online store or claim log not loaded"
        raise RuntimeError(msg)
    keys = {k: claim.get(k) for k in reader.join_keys}
    online = reader.read_rows({k: ["" if v is None else v] for k, v in keys.items()})
    row: dict[str, Any] = {name: values[0] for name, values in online.features.items()}
    catalog, defaults = views(settings.features), cold_start(settings.features)
    for view, found in online.found.items():
        known = catalog.get(view)
        if known is not None and claim.get(known.key) is None:  # no device / IP: nulls
            row |= dict.fromkeys(defaults[view])
        elif not found[0]:  # unknown to the store: a new entity
            row |= defaults.get(view, {})
    row |= log.features(claim)
    row |= on_demand_row(claim, row.get("avg_basket_90d"))
    return row


class ClaimService:
    """Scores claims and stores the decisions (one per process, shared by requests).

    Args:
        settings: the service settings.
        runtime: the loaded model, store and claim log.
        db: the app database.
        metrics: decisions and fallbacks are counted here.
        reasons: the worker that explains flagged claims.
        pepper: the IP hashing key.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        db: Database,
        metrics: Metrics,
        reasons: ReasonWorker,
        pepper: bytes,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.db = db
        self.metrics = metrics
        self.reasons = reasons
        self.pepper = pepper

    def score(
        self, request: ClaimScoreRequest, principal: Principal, *, explain: bool = False
    ) -> Mapping[str, Any]:
        """The decision on a claim: the stored one for a known claim_id, else a new one.

        Returns:
            The stored `claim_decisions` row, as a mapping of its columns.

        Raises:
            ClaimConflictError: the claim_id was scored before with other inputs.
        """
        claim = claim_inputs(request, self.pepper)
        stored = self._stored(request.claim_id)
        if stored is not None:
            return self._replay(stored, claim)
        scored = self._score(claim, explain=explain)
        row, case = self._rows(claim, scored, principal)
        try:
            case_id = self._insert(row, case)
        except IntegrityError:
            stored = self._stored(request.claim_id)
            if stored is None:  # not the claim_id's uniqueness: a real error
                raise
            logger.debug(
                "claim decision %s stored first by a concurrent request", stored["decision_id"]
            )
            return self._replay(stored, claim)
        self._after_insert(claim, row, case_id, scored)
        return row

    def _stored(self, claim_id: str) -> Mapping[str, Any] | None:
        with self.db.engine.connect() as connection:
            row = connection.execute(FIND, {"claim_id": claim_id}).mappings().one_or_none()
        return None if row is None else dict(row)

    def _replay(self, stored: Mapping[str, Any], claim: Mapping[str, Any]) -> Mapping[str, Any]:
        changed = [k for k in SAME_INPUTS if stored[k] != claim[k]]
        if changed:
            msg = (
                f"claim_id {stored['claim_id']!r} was scored before with other inputs "
                f"({', '.join(changed)}): a retry must repeat the request"
            )
            raise ClaimConflictError(msg)
        self.metrics.claim_replays.inc()
        return stored

    def _score(self, claim: Mapping[str, Any], *, explain: bool) -> Scored:
        fraud = self.runtime.fraud
        if fraud is None:
            return self._fallback("no_model")
        try:
            features = claim_features(self.runtime, self.settings, claim)
            result = fraud.scorer.score_one({**claim, **features})
        # a store or model failure of any kind gets the safe answer, never a 500
        except Exception:
            logger.warning("claim scored without its model or features", exc_info=True)
            return self._fallback("store_or_model_error")
        explanation = self._explain(fraud, features) if explain else None
        return Scored(
            risk_score=result.risk_score,
            probability=result.probability,
            decision=result.decision,
            abuse_type=None if explanation is None else explanation.abuse_type,
            rule_hits=list(result.rule_hits),
            reasons=None if explanation is None else list(explanation.reasons),
            model_version=fraud.version,
            features=json_safe(features),
        )

    def _fallback(self, reason: str) -> Scored:
        self.metrics.fallbacks.labels(ENDPOINT, reason).inc()
        return fallback_answer()

    def _explain(self, fraud: LoadedFraud, features: Mapping[str, Any]) -> Explanation | None:
        """The reasons, by the model that scored the claim (a promotion may swap it since)."""
        try:
            return explain_rows(fraud.scorer, [features], self.settings.fraud.reason_count)[0]
        except Exception:  # reasons are extra: the decision stands without them
            logger.exception("could not explain a claim inline")
            return None

    def _rows(
        self, claim: Mapping[str, Any], scored: Scored, principal: Principal
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The decision's row and, when one opens, its review case's (without ids)."""
        now = utc_now()
        row = {
            "decision_id": str(uuid.uuid4()),
            **{k: claim[k] for k in ("claim_id", *SAME_INPUTS)},
            "risk_score": scored.risk_score,
            "probability": scored.probability,
            "decision": scored.decision,
            "abuse_type": scored.abuse_type,
            "rule_hits": scored.rule_hits,
            "reasons": scored.reasons,
            "model_version": scored.model_version,
            "fallback": scored.fallback,
            "features": scored.features,
            "api_key_id": principal.key_id,
            "created_at": now,
        }
        reason = self._case_reason(scored.decision)
        if reason is None:
            return row, None
        case = {
            "reason": reason.value,
            "status": CaseStatus.OPEN.value,
            "reasons": scored.reasons if reason is CaseReason.FLAGGED else None,
            "abuse_type": scored.abuse_type,
            "opened_at": now,
            "explained_at": now if scored.reasons and not scored.fallback else None,
        }
        return row, case

    def _case_reason(self, decision: str) -> CaseReason | None:
        if decision != Decision.ALLOW.value:
            return CaseReason.FLAGGED
        if _random.random() < self.settings.serving.audit_share:
            return CaseReason.AUDIT
        return None

    def _insert(self, row: dict[str, Any], case: dict[str, Any] | None) -> int | None:
        """Store the decision and its case in one transaction; the case's id.

        Raises:
            IntegrityError: the claim_id (or, never in practice, the decision_id) exists.
        """
        with self.db.engine.begin() as connection:
            decision = connection.execute(INSERT_DECISION, row).scalar_one()
            if case is None:
                return None
            values = case | {"claim_decision_id": decision}
            case_id: int = connection.execute(INSERT_CASE, values).scalar_one()
            return case_id

    def _after_insert(
        self,
        claim: Mapping[str, Any],
        row: Mapping[str, Any],
        case_id: int | None,
        scored: Scored,
    ) -> None:
        self.metrics.claim_decisions.labels(row["decision"]).inc()
        logger.debug("claim decision %s: %s", row["decision_id"], row["decision"])
        log = self.runtime.claim_log
        if log is not None:
            try:
                log.record(claim)
            except Exception:  # the decision is stored; only fresh features lag
                logger.exception("could not record a claim in the claim log")
        to_explain = scored.reasons is None and scored.features and scored.decision != "allow"
        if case_id is not None and to_explain and scored.features:
            self.reasons.submit(case_id, scored.features)
