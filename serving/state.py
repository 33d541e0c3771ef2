"""Everything the app holds while it runs, built by its lifespan and closed at shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cashback.settings import Settings
from models.fraud.scorer import FraudScorer
from serving.auth import KeyCache
from serving.champions import ChampionWatcher
from serving.claims import ClaimService
from serving.db import Database
from serving.metrics import Metrics
from serving.offers import OfferService
from serving.reasons import ReasonWorker
from serving.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """The app's database, loaded components, services and metrics.

    `champions` follows promotions while serving (None when
    `serving.champion_check_seconds` is 0).
    """

    settings: Settings
    db: Database
    runtime: Runtime
    metrics: Metrics
    reasons: ReasonWorker
    claims: ClaimService
    offers: OfferService
    keys: KeyCache
    champions: ChampionWatcher | None = None

    def close(self) -> None:
        """Stop following champions, finish the queued reasons, close components and database."""
        if self.champions is not None:
            self.champions.stop()
        self.reasons.stop()
        self.runtime.close()
        self.db.close()


def start(settings: Settings, metrics: Metrics) -> AppState:
    """Open the database (migrated when configured), load what serving needs, start workers.

    The workers: the reasons of flagged claims, and the champions' follower (see
    `serving.champions`; each worker process of a multi-worker server runs its own).

    Nothing missing stops the start: see `serving.runtime`.
    """
    db = Database(settings)
    if settings.serving.migrate_on_startup:
        revision = db.upgrade()
        logger.info("app database (%s) at revision %s", db.backend, revision)
    runtime = Runtime(settings)
    runtime.load()

    def scorer() -> FraudScorer | None:
        return None if runtime.fraud is None else runtime.fraud.scorer

    reasons = ReasonWorker(
        db,
        scorer,
        metrics,
        settings.serving.reasons_batch,
        settings.fraud.reason_count,
        niceness=settings.serving.reasons_niceness,
    )
    reasons.start()
    queued = reasons.recover()
    if queued:
        logger.info("%d review cases queued again for their reasons", queued)
    pepper = settings.ip_pepper_bytes()
    claims = ClaimService(settings, runtime, db, metrics, reasons, pepper)
    offers = OfferService(settings, runtime, db, metrics)
    keys = KeyCache(settings.serving.key_cache_seconds)
    champions = None
    if settings.serving.champion_check_seconds > 0:
        champions = ChampionWatcher(runtime, metrics, settings.serving.champion_check_seconds)
        champions.start()
    return AppState(settings, db, runtime, metrics, reasons, claims, offers, keys, champions)
