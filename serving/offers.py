"""Recommending offers: exposures, the holdout, experiments, the policy and its exploration.

For each customer asked about (DESIGN.md, Exposures):

1. a valid exposure (asked before `valid_until`) comes back unchanged: rates are stable for
   the customer and windows never overlap;
2. otherwise a new exposure from `context.ts` (default now) for `exposure_days`, decided in
   this order: the global holdout gets the default rate card; a running experiment's
   variant gets its policy (no exploration); else the personalized policy (the `rates`
   champion pricing the customer's online features) with exploration: with probability
   `exploration_share` the rate is drawn uniformly from the K allowed rates, and the
   propensity is (1 - e) [r = policy(x)] + e / K;
3. a customer the feature store does not know gets the rate card of the new-customer segment
   (`cold_start`); without the policy model or the store, the customer's segment's rate
   card cell (`fallback`), never an error.

The exploration draw is a hash of (customer, exposure sequence), stored with the decision, so
`cashback decisions replay` recomputes the same rate. A customer's exposures are numbered;
storing number n + 1 fails when a concurrent request stored it first, and that one is
returned, so a customer never holds two valid exposures.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, cast

import numpy as np
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from cashback.settings import Settings
from cashback.vocab import Lifecycle
from features.cold_start import cold_start
from models.experiments.assignment import Assignment, assign, hash64
from models.experiments.definition import OFFER_PREFIX, RATE_PREFIX, ExperimentDefinition
from models.experiments.store import ExperimentStore
from models.fraud.dataset import encode_row
from models.rates.dataset import DEFAULT_OFFER, OFFER_COLUMNS
from models.rates.lifecycle import price_matrix
from models.rates.policy import allowed_rates
from models.rates.response import RateValues
from serving.auth import Principal
from serving.db import Database
from serving.metrics import Metrics
from serving.offer_book import Offer, OfferBook
from serving.offer_schemas import OfferRequest, OfferSource
from serving.reasons import json_safe
from serving.runtime import LoadedRates, Runtime
from serving.tables import OfferDecision, utc_now

logger = logging.getLogger(__name__)

ENDPOINT: Final = "offers.recommend"
EXPLORATION_SALT: Final = "explore"
TWO_64: Final = float(2**64)
DEFAULT_CARD: Final = "default rate card"
PERSONALIZED: Final = "personalized"
POLICY_NAME: Final = "cashback-rates"  # the personalized policy, as decisions name it
RATE_CARD: Final = "rate card"
OFFERS = cast(Table, OfferDecision.__table__)
LATEST = (
    select(OFFERS)
    .where(OFFERS.c.customer_id == bindparam("customer_id"))
    .order_by(OFFERS.c.sequence.desc())
    .limit(1)
)
INSERT_OFFER = insert(OFFERS)


class ExperimentCache:
    """The running experiments, re-read at most every `seconds` (each worker its own).

    Args:
        settings: the service settings (data directory, refresh period).
    """

    def __init__(self, settings: Settings) -> None:
        self._store = ExperimentStore.from_settings(settings)
        self._seconds = settings.serving.experiments_refresh_seconds
        self._read_at: float | None = None
        self._running: list[ExperimentDefinition] = []

    def running(self) -> list[ExperimentDefinition]:
        """The running experiments with a definition (the last good read if reading fails).

        The age of the read is the worker's clock, not the requests' times: a request
        dated ahead must not hold off the next read.
        """
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self._seconds:
            try:
                self._running = self._store.running()
            except Exception:  # a broken store must not stop offers: keep the last good read
                logger.exception("could not read the running experiments")
            self._read_at = now
        return self._running


Priced = tuple[float, list[str], str]  # the policy's rate, its reasons, the model version


@dataclass(frozen=True)
class CustomerView:
    """What serving knows of a customer when deciding.

    Attributes:
        features: the rates features (cold-start values for an unknown customer), or None
            when the store could not be read.
        segment: the customer's segment (the lifecycle stage without customer scores).
        lifecycle: the lifecycle stage.
        known: whether the store has the customer.
    """

    features: dict[str, Any] | None
    segment: str | None
    lifecycle: str | None
    known: bool


@dataclass(frozen=True)
class Decided:
    """A new exposure's content, before it is stored."""

    rate: float
    offer: Offer
    source: OfferSource
    propensity: float
    policy_version: str
    reasons: list[str]
    experiment: str | None = None
    variant: str | None = None
    exploration_draw: float | None = None
    exploration_share: float | None = None
    model_version: str | None = None
    fallback: bool = False


def exploration_draw(customer_id: str, sequence: int) -> float:
    """A uniform number in [0, 1) fixed by the customer and the exposure's number."""
    return hash64(EXPLORATION_SALT, f"{customer_id}:{sequence}") / TWO_64


def explore(rate: float, allowed: np.ndarray, share: float, draw: float) -> tuple[float, float]:
    """The rate given and its propensity, from the policy's rate and the exploration draw.

    With probability `share` (draw < share) the rate is the allowed rate at position
    floor(draw / share x K), uniform over the K allowed rates; the propensity of the rate
    given is (1 - share) [rate = policy's] + share / K.
    """
    k = len(allowed)
    given = rate
    if draw < share:
        given = float(allowed[min(int(draw / share * k), k - 1)])
    return given, (1 - share) * (abs(given - rate) < 1e-12) + share / k


def allowed_grid(rates: LoadedRates, segment: str | None) -> np.ndarray:
    """The grid rates a customer of this segment may get (limits and segment caps)."""
    grid = np.asarray(rates.response.grid)
    mask = allowed_rates(
        grid,
        None if segment is None else np.asarray([segment]),
        min_rate=rates.params.min_rate,
        max_rate=rates.params.max_rate,
        segment_caps=rates.params.segment_caps,
    )[0]
    return cast(np.ndarray, grid[mask])


def price_inputs(
    rates: LoadedRates, inputs: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, RateValues]:
    """The policy's rate, and every grid rate's values, for customers' inputs.

    Each customer's inputs (features, `fraud_share`, `segment`) with the flat offer's
    columns are encoded row by row, as the fraud scorer encodes a claim: a request prices
    its customers without building a data frame (same numbers as `price` on a frame).
    """
    features = list(rates.response.features)
    offer = {c: DEFAULT_OFFER.get(c, 0.0) for c in OFFER_COLUMNS}
    x = np.vstack([encode_row(dict(row) | offer, features) for row in inputs])
    share = np.asarray([float(row.get("fraud_share") or 0.0) for row in inputs])
    segments = np.asarray([str(row.get("segment")) for row in inputs])
    return price_matrix(rates.response, rates.params, x, share, segments)


def policy_version(model_version: str) -> str:
    """The policy version of the personalized policy priced by a rates model version."""
    return f"{POLICY_NAME} v{model_version}"


def percent(rate: float) -> str:
    """A rate in words, e.g. 3% or 2.5%."""
    return f"{rate * 100:.1f}".removesuffix(".0") + "%"


class OfferService:
    """Decides and stores exposures (one per process, shared by requests).

    Args:
        settings: the service settings.
        runtime: the loaded models, stores and offer book.
        db: the app database.
        metrics: offer decisions and fallbacks are counted here.
    """

    def __init__(
        self, settings: Settings, runtime: Runtime, db: Database, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.db = db
        self.metrics = metrics
        self.experiments = ExperimentCache(settings)
        self._cold = cold_start(settings.features)

    # ------------------------------------------------------------------ the entry points

    def recommend(
        self, requests: Sequence[OfferRequest], principal: Principal
    ) -> list[dict[str, Any]]:
        """The exposure of each request's customer: the valid one, else a new one.

        Args:
            requests: the requests (a customer asked twice gets one exposure).
            principal: the caller's key.

        Returns:
            The stored `offer_decisions` rows, in the order of the requests.
        """
        now = utc_now()
        first: dict[str, OfferRequest] = {}
        for request in requests:
            first.setdefault(request.customer_id, request)
        latest = {c: self._latest(c) for c in first}
        answers: dict[str, dict[str, Any]] = {}
        to_decide: list[OfferRequest] = []
        for customer_id, request in first.items():
            at = request.context.ts or now
            row = latest[customer_id]
            if row is not None and at < row["valid_until"]:
                self.metrics.offer_replays.inc()
                answers[customer_id] = row
            else:
                to_decide.append(request)
        if to_decide:
            views = self._views([r.customer_id for r in to_decide])
            plans = [
                self._assign(r, v, r.context.ts or now)
                for r, v in zip(to_decide, views, strict=True)
            ]
            priced = self._price_needed(to_decide, views, plans)
            for k, request in enumerate(to_decide):
                previous = latest[request.customer_id]
                sequence = 1 if previous is None else previous["sequence"] + 1
                decided = self._decide(request, views[k], plans[k], priced.get(k), sequence)
                at = request.context.ts or now
                answers[request.customer_id] = self._store(
                    request, views[k], decided, at, sequence, principal
                )
        return [answers[r.customer_id] for r in requests]

    def policy_rate(self, customer_id: str) -> Priced | None:
        """The personalized policy's rate for a customer now, without exposing them.

        Returns:
            The rate, its reasons and the model version; None without the policy model or
            the store, or for a customer the store does not know.
        """
        rates = self.runtime.rates
        if rates is None:
            return None
        [view] = self._views([customer_id])
        if view.features is None or not view.known:
            return None
        return self._price(rates, [view], [customer_id])[0]

    def card_rate(self, segment: str | None, category: str | None) -> tuple[float, str]:
        """The rate card's rate for a segment and category, and where it came from."""
        return self._book().card_rate(segment, category)

    # ------------------------------------------------------------------ reading

    def _latest(self, customer_id: str) -> dict[str, Any] | None:
        with self.db.engine.connect() as connection:
            row = connection.execute(LATEST, {"customer_id": customer_id}).mappings().first()
        return None if row is None else dict(row)

    def _views(self, customer_ids: list[str]) -> list[CustomerView]:
        """The customers as the store sees them (features None when it cannot be read)."""
        readers = self.runtime.customers
        if readers is None:
            return [CustomerView(None, None, None, known=False) for _ in customer_ids]
        try:
            result = readers.rates.read(customer_ids)
            scores = None if readers.scores is None else readers.scores.read(customer_ids)
        # a store failure of any kind gets the rate card, never a 500
        except Exception:
            logger.warning("offers decided without the feature store", exc_info=True)
            return [CustomerView(None, None, None, known=False) for _ in customer_ids]
        views = []
        for i in range(len(customer_ids)):
            row = {name: values[i] for name, values in result.features.items()}
            known = not result.missing[i]
            if not known:
                row = self._cold_row()
            segment = None
            if scores is not None and not scores.missing[i]:
                segment = scores.features.get("segment", [None] * len(customer_ids))[i]
            lifecycle = row.get("lifecycle")
            views.append(CustomerView(row, segment or lifecycle, lifecycle, known))
        return views

    def _cold_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for values in self._cold.values():
            row |= values
        return row

    # ------------------------------------------------------------------ deciding

    def _assign(self, request: OfferRequest, view: CustomerView, at: datetime) -> Assignment:
        assignment = assign(
            request.customer_id,
            self.experiments.running(),
            self.settings,
            segment=view.segment,
            lifecycle=view.lifecycle,
            at=at,
        )
        if assignment.error is not None:
            logger.warning("assignment failed (control given): %s", assignment.error)
        return assignment

    def _needs_policy(self, view: CustomerView, assignment: Assignment) -> bool:
        """Whether the decision reads the policy's rate (priced together for a batch)."""
        if assignment.holdout or not view.known or view.features is None:
            return False
        if assignment.experiment_key is None:
            return True
        return self._variant_policy(assignment.experiment_key, assignment.variant) == PERSONALIZED

    def _price_needed(
        self,
        requests: Sequence[OfferRequest],
        views: Sequence[CustomerView],
        plans: Sequence[Assignment],
    ) -> dict[int, Priced]:
        """The policy's rate for the customers whose decision needs it, in one pricing."""
        rates = self.runtime.rates
        need = [k for k in range(len(requests)) if self._needs_policy(views[k], plans[k])]
        if rates is None or not need:
            return {}
        try:
            priced = self._price(
                rates, [views[k] for k in need], [requests[k].customer_id for k in need]
            )
        # a model that fails on these features gets the rate card, never a 500
        except Exception:
            logger.warning("offers priced without the policy", exc_info=True)
            return {}
        return dict(zip(need, priced, strict=True))

    def _decide(
        self,
        request: OfferRequest,
        view: CustomerView,
        assignment: Assignment,
        priced: Priced | None,
        sequence: int,
    ) -> Decided:
        if assignment.holdout:
            return self._default(["in the global holdout: the default rate card"])
        if assignment.experiment_key is not None:
            return self._experiment(request, view, assignment, priced)
        if not view.known and view.features is not None:
            return self._cold_start(request)
        if priced is None:
            return self._fallback(request, view)
        return self._personalized(request, view, priced, sequence)

    def _default(self, reasons: list[str], source: OfferSource = OfferSource.HOLDOUT) -> Decided:
        book = self._book()
        offer = book.flat_offer(self.settings.serving.default_offer_id)
        return Decided(
            rate=self.settings.default_rate,
            offer=offer,
            source=source,
            propensity=1.0,
            policy_version=DEFAULT_CARD,
            reasons=reasons,
        )

    def _card(self, request: OfferRequest, segment: str | None) -> tuple[float, str]:
        return self._book().card_rate(segment, request.context.category)

    def _fallback(self, request: OfferRequest, view: CustomerView) -> Decided:
        reason = "no policy model" if self.runtime.rates is None else "feature store unavailable"
        self.metrics.fallbacks.labels(ENDPOINT, reason.replace(" ", "_")).inc()
        rate, where = self._card(request, view.segment)
        return Decided(
            rate=rate,
            offer=self._book().flat_offer(self.settings.serving.policy_offer_id),
            source=OfferSource.FALLBACK,
            propensity=1.0,
            policy_version=RATE_CARD,
            reasons=[f"{reason}: {percent(rate)} from the {where}"],
            fallback=True,
        )

    def _cold_start(self, request: OfferRequest) -> Decided:
        rate, where = self._card(request, Lifecycle.NEW.value)
        return Decided(
            rate=rate,
            offer=self._book().flat_offer(self.settings.serving.policy_offer_id),
            source=OfferSource.COLD_START,
            propensity=1.0,
            policy_version=RATE_CARD,
            reasons=[f"a customer we do not know yet: {percent(rate)} from the {where}"],
        )

    def _experiment(
        self,
        request: OfferRequest,
        view: CustomerView,
        assignment: Assignment,
        priced: Priced | None,
    ) -> Decided:
        key, variant = assignment.experiment_key, assignment.variant
        policy = self._variant_policy(key, variant)
        where = f"experiment {key}, variant {variant}"
        if policy.startswith(RATE_PREFIX):
            rate = float(policy.removeprefix(RATE_PREFIX))
            decided = self._with_offer(rate, [f"{where}: a fixed rate of {percent(rate)}"])
        elif policy.startswith(OFFER_PREFIX):
            decided = self._catalog_offer(policy.removeprefix(OFFER_PREFIX), where)
        elif policy == PERSONALIZED and priced is not None:
            rate, reasons, version = priced
            decided = replace(
                self._with_offer(rate, [f"{where}: the personalized policy", *reasons]),
                model_version=version,
            )
        elif policy == PERSONALIZED and view.known:  # no policy model or store: the card
            decided = replace(self._fallback(request, view), source=OfferSource.EXPERIMENT)
            return replace(decided, experiment=key, variant=variant)
        else:  # the rate card (also a personalized variant's answer for an unknown customer)
            rate, card = self._card(request, view.segment)
            decided = self._with_offer(rate, [f"{where}: {percent(rate)} from the {card}"])
        return replace(
            decided,
            source=OfferSource.EXPERIMENT,
            experiment=key,
            variant=variant,
            policy_version=f"{key}/{variant}: {policy}",
        )

    def _variant_policy(self, key: str | None, variant: str | None) -> str:
        for experiment in self.experiments.running():
            if experiment.key == key:
                for arm in experiment.variants:
                    if arm.name == variant:
                        return arm.policy
        return "rate_card"

    def _with_offer(self, rate: float, reasons: list[str]) -> Decided:
        return Decided(
            rate=rate,
            offer=self._book().flat_offer(self.settings.serving.policy_offer_id),
            source=OfferSource.POLICY,
            propensity=1.0,
            policy_version=RATE_CARD,
            reasons=reasons,
        )

    def _catalog_offer(self, offer_id: str, where: str) -> Decided:
        offer = self._book().offer(offer_id)
        if offer is None:
            decided = self._default([f"{where}: offer {offer_id!r} is not in the catalog"])
            return replace(decided, fallback=True)
        rate = self.settings.default_rate if offer.rate is None else offer.rate
        return replace(
            self._with_offer(rate, [f"{where}: the {offer.kind} offer {offer_id}"]), offer=offer
        )

    def _personalized(
        self, request: OfferRequest, view: CustomerView, priced: Priced, sequence: int
    ) -> Decided:
        rates = self.runtime.rates
        assert rates is not None  # it priced the customer
        rate, reasons, version = priced
        allowed = allowed_grid(rates, view.segment)
        share = self.settings.serving.exploration_share
        draw = exploration_draw(request.customer_id, sequence)
        explored, propensity = explore(rate, allowed, share, draw)
        source = OfferSource.POLICY
        if draw < share:
            if abs(explored - rate) > 1e-12:
                why = (
                    f"{percent(explored)} drawn at random among the allowed rates (exploration: "
                    f"the policy keeps learning); the policy's rate is {percent(rate)}"
                )
                reasons = [why]
            rate, source = explored, OfferSource.EXPLORATION
        return Decided(
            rate=rate,
            offer=self._book().flat_offer(self.settings.serving.policy_offer_id),
            source=source,
            propensity=propensity,
            policy_version=policy_version(version),
            model_version=version,
            reasons=reasons,
            exploration_draw=draw,
            exploration_share=share,
        )

    def _price(
        self, rates: LoadedRates, views: Sequence[CustomerView], customer_ids: Sequence[str]
    ) -> list[Priced]:
        """The policy's rate for each customer, with the reason in words and the version."""
        inputs = [self._policy_inputs(v, c) for v, c in zip(views, customer_ids, strict=True)]
        rates_given, values = price_inputs(rates, inputs)
        grid = list(rates.response.grid)
        default = self.settings.default_rate
        out: list[Priced] = []
        for k, given in enumerate(rates_given):
            rate, column = float(given), grid.index(given)
            value, cost = float(values.value[k, column]), float(values.cost[k, column])
            reason = (
                f"{percent(rate)} rather than the default {percent(default)}: expected margin "
                f"{value:+.2f} against the default, net of cashback and fraud; "
                f"{cost:.2f} of cashback over the {self.settings.exposure_days}-day offer"
            )
            out.append((rate, [reason], rates.version))
        return out

    def _policy_inputs(self, view: CustomerView, customer_id: str) -> dict[str, Any]:
        """What the policy prices a customer on: features, fraud share, segment."""
        extra = {"fraud_share": self._book().fraud_share(customer_id), "segment": view.segment}
        return (view.features or {}) | extra

    def _stored_features(self, view: CustomerView, customer_id: str) -> dict[str, Any] | None:
        """The policy's inputs as stored with the decision (for its replay)."""
        if view.features is None:
            return None
        return json_safe(self._policy_inputs(view, customer_id))

    def _book(self) -> OfferBook:
        book = self.runtime.offer_book
        if book is None:  # the catalog or card could not be read: the built-in defaults
            return OfferBook({}, {}, {}, {}, self.settings.default_rate, "none")
        return book

    # ------------------------------------------------------------------ storing

    def _store(
        self,
        request: OfferRequest,
        view: CustomerView,
        decided: Decided,
        at: datetime,
        sequence: int,
        principal: Principal,
    ) -> dict[str, Any]:
        row = self._row(request, view, decided, at, sequence, principal)
        try:
            with self.db.engine.begin() as connection:
                connection.execute(INSERT_OFFER, row)
        except IntegrityError:
            stored = self._latest(request.customer_id)
            if stored is None or stored["sequence"] < sequence:  # not the race: a real error
                raise
            logger.debug("exposure %s stored first by a concurrent request", stored["decision_id"])
            self.metrics.offer_replays.inc()
            return stored
        self.metrics.offer_decisions.labels(decided.source.value).inc()
        return row

    def _row(
        self,
        request: OfferRequest,
        view: CustomerView,
        decided: Decided,
        at: datetime,
        sequence: int,
        principal: Principal,
    ) -> dict[str, Any]:
        offer = decided.offer
        return {
            "decision_id": str(uuid.uuid4()),
            "exposure_id": str(uuid.uuid4()),
            "customer_id": request.customer_id,
            "sequence": sequence,
            "ts": at,
            "valid_until": at + timedelta(days=self.settings.exposure_days),
            "offer_id": offer.offer_id,
            "offer_kind": offer.kind,
            "payout": offer.payout,
            "category": offer.category,
            "rate": decided.rate,
            "policy_version": decided.policy_version,
            "model_version": decided.model_version,
            "experiment_id": decided.experiment,
            "variant": decided.variant,
            "propensity": decided.propensity,
            "source": decided.source.value,
            "exploration_draw": decided.exploration_draw,
            "exploration_share": decided.exploration_share,
            "reasons": decided.reasons,
            "features": self._stored_features(view, request.customer_id),
            "context": request.context.model_dump(mode="json"),
            "fallback": decided.fallback,
            "cold_start": view.features is not None and not view.known,
            "api_key_id": principal.key_id,
            "created_at": utc_now(),
        }


def offer_of(row: Mapping[str, Any], book: OfferBook | None) -> dict[str, Any]:
    """The offer part of a stored exposure, with the catalog's tiers when it has them."""
    known = None if book is None else book.offer(row["offer_id"])
    return {
        "offer_id": row["offer_id"],
        "kind": row["offer_kind"],
        "payout": row["payout"],
        "category": row["category"],
        "tiers": None if known is None else known.tiers,
    }
