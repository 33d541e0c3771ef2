"""Any decision the API gave, from its decision_id: what went in, what came out, and a replay.

Every decision (a claim's or an offer's) is stored with a `decision_id` that leads
back to its inputs (never a raw IP: only its keyed hash), its features, the model version
and the policy behind it, and the answer given. `find_decision` reads it back,
`decision_policy` adds what the stored row only names (a fraud model version's thresholds),
and `replay_decision` computes it again and says whether the answer is the same.

A claim is replayed with the fraud model version that decided it (not the champion), loaded
from the registry by its number, and the rules configured now (claims do not record the
rules file they were scored with: a changed rule shows as a difference in `rule_hits`). Its
stored inputs and features are scored again; `risk_score` (relative tolerance 1e-9),
`decision`, `rule_hits` and `fallback` must be the same. A fallback (no model) has nothing
to recompute: it matches when the stored answer is the fallback answer.

An offer priced by the policy is replayed with the rates model version that priced it,
on its stored inputs (features, fraud share, segment), and the stored exploration draw and
share: the rate, the propensity and the source must be the same. A holdout offer is
replayed from the holdout hash; a cold-start or fallback offer from today's rate card (a
changed card shows as a difference); an experiment's fixed rate or offer has nothing to
recompute.

Kinds: `KINDS` holds, per kind of decision, how to find one by id, the policy behind it and
how to replay it (`DecisionKind`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, select
from sqlalchemy.orm import Session

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.vocab import Lifecycle
from models.experiments.assignment import assign
from models.fraud.artifacts import META
from models.fraud.rules import RuleSet
from models.fraud.scorer import FraudScorer
from serving.claims import SAME_INPUTS, fallback_answer
from serving.offer_book import load_offer_book
from serving.offer_schemas import OfferSource
from serving.offers import allowed_grid, explore, price_inputs
from serving.runtime import LoadedRates
from serving.tables import ClaimDecision, OfferDecision

logger = logging.getLogger(__name__)

CLAIM = "claim"
FRAUD = "fraud"  # the fraud model's short name in the registry
RELATIVE_TOLERANCE = 1e-9
NOTHING_TO_RECOMPUTE = "fallback answer; nothing to recompute"
CLAIM_INPUTS = ("claim_id", *SAME_INPUTS)
# what the engine was told about a claim
CLAIM_ANSWER = ("risk_score", "probability", "decision", "abuse_type", "rule_hits", "reasons")
# what a replay of a claim compares
CLAIM_REPLAYED = ("risk_score", "decision", "rule_hits", "fallback")
CLAIMS = cast(Table, ClaimDecision.__table__)
FIND_CLAIM = select(CLAIMS).where(CLAIMS.c.decision_id == bindparam("decision_id"))
OFFER = "offer"
NEW_SEGMENT = Lifecycle.NEW.value  # the rate card's row for customers the store lacks
# an offer's request and what the policy drew for it
OFFER_INPUTS = (
    "customer_id", "sequence", "ts", "context", "exploration_draw", "exploration_share"
)  # fmt: skip
OFFER_POLICY = ("policy_version", "model_version", "experiment_id", "variant", "source")
# what the engine was told about an offer
OFFER_ANSWER = (
    "rate", "offer_id", "offer_kind", "payout", "category", "valid_until", "reasons",
    "propensity", "source", "experiment_id", "variant",
)  # fmt: skip
# what a replay of an offer compares
OFFER_REPLAYED = ("rate", "propensity", "source")
OFFERS = cast(Table, OfferDecision.__table__)
FIND_OFFER = select(OFFERS).where(OFFERS.c.decision_id == bindparam("decision_id"))

Bind = Session | Engine | Connection
_thresholds: dict[tuple[str, str, str], dict[str, Any]] = {}


class DecisionReplayError(CashbackError):
    """A decision cannot be replayed (its model version is gone, its features missing)."""


@dataclass(frozen=True)
class DecisionRecord:
    """A stored decision, whatever its kind.

    Attributes:
        kind: "claim" (or, later, "offer").
        decision_id: its id, as given to the caller.
        created_at: when it was made (UTC).
        inputs: the request as stored (a claim: no raw IP, only its keyed hash).
        features: the features it was made with (None in a fallback).
        model_version: the registered model version that made it (None in a fallback).
        policy_version: the policy version (offers; None for claims).
        policy: what the row stores about the policy beyond its version.
        answer: what the caller was told.
        fallback: whether it was the safe answer given without a model.
        api_key_id: the key that asked for it.
    """

    kind: str
    decision_id: str
    created_at: datetime
    inputs: dict[str, Any]
    features: dict[str, Any] | None
    model_version: str | None
    policy_version: str | None
    policy: dict[str, Any]
    answer: dict[str, Any]
    fallback: bool
    api_key_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """Its fields as a mapping (times stay datetimes)."""
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """A field whose recomputed value is not the stored one."""

    field: str
    stored: Any
    recomputed: Any


@dataclass(frozen=True)
class ReplayResult:
    """A decision computed again, beside the stored answer.

    Attributes:
        kind: the decision's kind.
        decision_id: its id.
        matches: whether every compared field is the same.
        basis: what it was recomputed with, in words.
        compared: the fields compared.
        differences: the fields that differ, with both values.
        recomputed: the recomputed values (None when there was nothing to recompute).
    """

    kind: str
    decision_id: str
    matches: bool
    basis: str
    compared: tuple[str, ...]
    differences: tuple[Difference, ...] = ()
    recomputed: dict[str, Any] | None = field(default=None)

    def describe(self) -> list[str]:
        """The result in words, one line per statement."""
        verdict = "matches" if self.matches else "does NOT match"
        lines = [f"{self.kind} decision {self.decision_id} {verdict} ({self.basis})"]
        lines += [
            f"{d.field}: stored {d.stored!r}, recomputed {d.recomputed!r}" for d in self.differences
        ]
        return lines


@dataclass(frozen=True)
class DecisionKind:
    """How one kind of decision is found, described and replayed.

    Attributes:
        name: the kind, e.g. "claim".
        find: its record for a decision_id (None when it is not of this kind).
        policy: the policy behind a record, looked up beyond the stored row.
        replay: the record computed again.
    """

    name: str
    find: Callable[[Connection, str], DecisionRecord | None]
    policy: Callable[[Settings, DecisionRecord], dict[str, Any]]
    replay: Callable[[Settings, DecisionRecord], ReplayResult]


# --------------------------------------------------------------------------- any kind


@contextmanager
def _connection(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    elif isinstance(bind, Session):
        yield bind.connection()
    else:
        with bind.connect() as connection:
            yield connection


def find_decision(bind: Bind, decision_id: str) -> DecisionRecord | None:
    """The decision with this id, of whichever kind, or None.

    Args:
        bind: the app database (a session, an engine or a connection).
        decision_id: the id the caller was given.
    """
    with _connection(bind) as connection:
        for kind in KINDS.values():
            record = kind.find(connection, decision_id)
            if record is not None:
                return record
    return None


def _kind(record: DecisionRecord) -> DecisionKind:
    kind = KINDS.get(record.kind)
    if kind is None:
        msg = f"decisions of kind {record.kind!r} are not known here"
        raise CashbackError(msg)
    return kind


def decision_policy(settings: Settings, record: DecisionRecord) -> dict[str, Any]:
    """The policy behind a decision: the stored fields and what they name (thresholds).

    Args:
        settings: the service settings (the model registry).
        record: a found decision.
    """
    return _kind(record).policy(settings, record)


def replay_decision(settings: Settings, record: DecisionRecord) -> ReplayResult:
    """The decision computed again with the model version that made it, beside the stored one.

    Args:
        settings: the service settings (the model registry, the rules).
        record: a found decision.

    Raises:
        DecisionReplayError: the model version is no longer registered, or the decision
            was stored without its features.
    """
    return _kind(record).replay(settings, record)


def _same(stored: object, recomputed: object) -> bool:
    if isinstance(stored, float) and isinstance(recomputed, float):
        return math.isclose(stored, recomputed, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)
    return stored == recomputed


def differences(
    stored: Mapping[str, Any], recomputed: Mapping[str, Any], fields: tuple[str, ...]
) -> tuple[Difference, ...]:
    """The fields whose values differ (floats within a relative 1e-9 are the same)."""
    return tuple(
        Difference(name, stored.get(name), recomputed.get(name))
        for name in fields
        if not _same(stored.get(name), recomputed.get(name))
    )


# --------------------------------------------------------------------------- claims


def _find_claim(connection: Connection, decision_id: str) -> DecisionRecord | None:
    row = connection.execute(FIND_CLAIM, {"decision_id": decision_id}).mappings().one_or_none()
    if row is None:
        return None
    return DecisionRecord(
        kind=CLAIM,
        decision_id=row["decision_id"],
        created_at=row["created_at"],
        inputs={k: row[k] for k in CLAIM_INPUTS},
        features=row["features"],
        model_version=row["model_version"],
        policy_version=None,
        policy={},
        answer={k: row[k] for k in CLAIM_ANSWER},
        fallback=row["fallback"],
        api_key_id=row["api_key_id"],
    )


def _fraud_artifacts(settings: Settings, record: DecisionRecord) -> Path:
    """The artifacts of the fraud model version that made a claim decision.

    Raises:
        DecisionReplayError: the registry no longer has that version.
    """
    from models.registry import registered_name, version_artifacts  # noqa: PLC0415 - MLflow

    version = str(record.model_version)
    try:
        return version_artifacts(settings, FRAUD, version)
    except CashbackError as error:
        name = registered_name(settings, FRAUD)
        msg = (
            f"decision {record.decision_id} was made by {name} version {version}, which "
            f"cannot be loaded from the model registry ({error}): it cannot be replayed"
        )
        raise DecisionReplayError(msg) from None


def _claim_policy(settings: Settings, record: DecisionRecord) -> dict[str, Any]:
    """The fraud model version's decision thresholds (None when it cannot be read)."""
    if record.model_version is None:
        return {"thresholds": None}
    key = (settings.mlflow_tracking_uri, settings.models.name_prefix, record.model_version)
    if key not in _thresholds:
        try:
            meta = json.loads((_fraud_artifacts(settings, record) / META).read_text())
        # the registry or its files may be down: the decision is still shown
        except Exception:  # noqa: BLE001
            logger.warning("thresholds of fraud model v%s unavailable", record.model_version)
            return {"thresholds": None}
        _thresholds[key] = dict(meta["thresholds"])  # a version's files never change
    return {"thresholds": _thresholds[key]}


def _rules_basis(rules: RuleSet) -> str:
    """The rules in words: their file and the start of its sha256."""
    path = Path(rules.source)
    if not path.is_file():
        return f"rules {rules.source}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"rules {rules.source} (sha256 {digest}...)"


def _replay_claim(settings: Settings, record: DecisionRecord) -> ReplayResult:
    if record.model_version is None:
        return _replay_fallback(record)
    if record.features is None:
        msg = f"decision {record.decision_id} was stored without its features: no replay"
        raise DecisionReplayError(msg)
    from models.registry import registered_name  # noqa: PLC0415 - MLflow: slow import
    from pipelines.train_fraud import configured_rules  # noqa: PLC0415

    rules = configured_rules(settings)
    scorer = FraudScorer.from_directory(_fraud_artifacts(settings, record), rules)
    score = scorer.score_one({**record.inputs, **record.features})
    recomputed = {
        "risk_score": score.risk_score,
        "probability": score.probability,
        "decision": score.decision,
        "rule_hits": list(score.rule_hits),
        "fallback": False,
    }
    name = registered_name(settings, FRAUD)
    found = differences(_claim_stored(record), recomputed, CLAIM_REPLAYED)
    return ReplayResult(
        kind=CLAIM,
        decision_id=record.decision_id,
        matches=not found,
        basis=f"recomputed with {name} v{record.model_version} and the {_rules_basis(rules)}",
        compared=CLAIM_REPLAYED,
        differences=found,
        recomputed=recomputed,
    )


def _claim_stored(record: DecisionRecord) -> dict[str, Any]:
    return {**record.answer, "fallback": record.fallback}


def _replay_fallback(record: DecisionRecord) -> ReplayResult:
    """A fallback matches when the stored answer is the fallback answer."""
    safe = fallback_answer()
    expected = {
        "risk_score": safe.risk_score,
        "probability": safe.probability,
        "decision": safe.decision,
        "rule_hits": safe.rule_hits,
        "reasons": safe.reasons,
        "fallback": True,
    }
    fields = (*CLAIM_REPLAYED, "reasons")
    found = differences(_claim_stored(record), expected, fields)
    return ReplayResult(
        kind=record.kind,
        decision_id=record.decision_id,
        matches=not found,
        basis=NOTHING_TO_RECOMPUTE,
        compared=fields,
        differences=found,
    )


# --------------------------------------------------------------------------- offers


def _find_offer(connection: Connection, decision_id: str) -> DecisionRecord | None:
    row = connection.execute(FIND_OFFER, {"decision_id": decision_id}).mappings().one_or_none()
    if row is None:
        return None
    return DecisionRecord(
        kind=OFFER,
        decision_id=row["decision_id"],
        created_at=row["created_at"],
        inputs={k: row[k] for k in OFFER_INPUTS},
        features=row["features"],
        model_version=row["model_version"],
        policy_version=row["policy_version"],
        policy={k: row[k] for k in OFFER_POLICY},
        answer={k: row[k] for k in OFFER_ANSWER},
        fallback=row["fallback"],
        api_key_id=row["api_key_id"],
    )


def _offer_policy(_settings: Settings, record: DecisionRecord) -> dict[str, Any]:
    """The stored policy fields (an offer's row holds them all)."""
    return dict(record.policy)


def _rates_policy(settings: Settings, version: str) -> LoadedRates:
    """The rates model version that priced an offer.

    Raises:
        DecisionReplayError: the registry no longer has that version.
    """
    from models.rates.lifecycle import SHORT, load_policy  # noqa: PLC0415 - MLflow
    from models.registry import version_artifacts  # noqa: PLC0415

    try:
        response, params = load_policy(version_artifacts(settings, SHORT, version))
    except CashbackError as error:
        msg = f"cashback-rates version {version} cannot be loaded ({error}): no replay"
        raise DecisionReplayError(msg) from None
    return LoadedRates(response, params, version)


def _priced_again(settings: Settings, record: DecisionRecord) -> tuple[dict[str, Any], str]:
    """The policy's rate recomputed by its model version, with exploration where it applied."""
    if record.features is None or record.model_version is None:
        msg = f"decision {record.decision_id} was stored without its features: no replay"
        raise DecisionReplayError(msg)
    rates = _rates_policy(settings, record.model_version)
    rate = float(price_inputs(rates, [record.features])[0][0])
    basis = f"recomputed with cashback-rates v{record.model_version}"
    if record.answer["source"] == OfferSource.EXPERIMENT:
        return {"rate": rate, "propensity": 1.0, "source": OfferSource.EXPERIMENT.value}, basis
    share, draw = record.inputs["exploration_share"], record.inputs["exploration_draw"]
    allowed = allowed_grid(rates, record.features.get("segment"))
    given, propensity = explore(rate, allowed, share, draw)
    source = OfferSource.EXPLORATION if draw < share else OfferSource.POLICY
    recomputed = {"rate": given, "propensity": propensity, "source": source.value}
    return recomputed, f"{basis} and the stored exploration draw"


def _holdout_again(settings: Settings, record: DecisionRecord) -> tuple[dict[str, Any], str]:
    """Whether the customer is still drawn into the holdout, and the default rate."""
    held = assign(record.inputs["customer_id"], [], settings).holdout
    source = OfferSource.HOLDOUT.value if held else "not in the holdout"
    recomputed = {"rate": settings.default_rate, "propensity": 1.0, "source": source}
    return recomputed, "the holdout hash and the default rate card"


def _card_again(settings: Settings, record: DecisionRecord) -> tuple[dict[str, Any], str]:
    """The rate card's rate for the stored segment and category, from today's card."""
    book = load_offer_book(settings)
    features = record.features or {}
    segment = NEW_SEGMENT if record.answer["source"] == OfferSource.COLD_START else None
    segment = segment or features.get("segment")
    rate, where = book.card_rate(segment, record.inputs["context"].get("category"))
    recomputed = {"rate": rate, "propensity": 1.0, "source": record.answer["source"]}
    return recomputed, f"today's rate card ({where})"


def _replay_offer(settings: Settings, record: DecisionRecord) -> ReplayResult:
    source = record.answer["source"]
    if source == OfferSource.HOLDOUT:
        recomputed, basis = _holdout_again(settings, record)
    elif record.model_version is not None:
        recomputed, basis = _priced_again(settings, record)
    elif source in {OfferSource.COLD_START, OfferSource.FALLBACK}:
        recomputed, basis = _card_again(settings, record)
    else:  # an experiment's fixed rate, catalog offer or card: the variant's own
        return ReplayResult(
            kind=OFFER,
            decision_id=record.decision_id,
            matches=True,
            basis=f"{record.policy_version}: the variant's fixed policy, nothing to recompute",
            compared=(),
        )
    found = differences(record.answer, recomputed, OFFER_REPLAYED)
    return ReplayResult(
        kind=OFFER,
        decision_id=record.decision_id,
        matches=not found,
        basis=basis,
        compared=OFFER_REPLAYED,
        differences=found,
        recomputed=recomputed,
    )


KINDS: dict[str, DecisionKind] = {
    CLAIM: DecisionKind(CLAIM, _find_claim, _claim_policy, _replay_claim),
    OFFER: DecisionKind(OFFER, _find_offer, _offer_policy, _replay_offer),
}
