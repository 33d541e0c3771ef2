"""Reasons of flagged claims, computed off the request path.

Tree SHAP costs milliseconds a claim, more than the rest of scoring, so a flagged claim is
answered first and explained after: a worker thread takes the queued review cases, explains
them in batches with the model that scored them, and stores the reasons and the abuse type
on the case, usually well within a second. The thread runs at a lower priority
(`serving.reasons_niceness`), so that under load the requests get the core first and the
reasons wait. Cases left unexplained when the process stopped
are queued again when it starts (their features are stored with the decision).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update

from models.fraud.reasons import Explanation
from models.fraud.scorer import FraudScorer
from serving.db import Database
from serving.metrics import Metrics
from serving.tables import CaseReason, ClaimDecision, ReviewCase, utc_now

logger = logging.getLogger(__name__)

CASES = cast(Table, ReviewCase.__table__)
STORE_REASONS = (
    update(CASES)
    .where(CASES.c.id == bindparam("case_id"))
    .values(
        reasons=bindparam("reasons"),
        abuse_type=bindparam("abuse_type"),
        explained_at=bindparam("explained_at"),
    )
)


@dataclass(frozen=True)
class ReasonJob:
    """A review case to explain.

    Attributes:
        case_id: the case.
        features: the claim's features, as stored with its decision.
        queued_at: `time.monotonic()` when queued.
    """

    case_id: int
    features: Mapping[str, Any]
    queued_at: float


def explain_rows(
    scorer: FraudScorer, rows: list[Mapping[str, Any]], count: int
) -> list[Explanation]:
    """Reasons and abuse type of claims given as feature mappings (one SHAP call)."""
    return scorer.explain_rows(rows, count)


def json_safe(features: Mapping[str, Any]) -> dict[str, Any]:
    """Features as JSON values: NaN and infinities become null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()
    }


class ReasonWorker:
    """A thread that explains queued review cases and stores their reasons.

    Args:
        db: the app database.
        scorer: gives the scorer to explain with (None while no model is loaded: the cases
            wait for the next start).
        metrics: records how long cases waited for their reasons.
        batch: at most this many cases per SHAP call.
        count: reasons per case.
        niceness: how much the thread lowers its own priority (Linux; ignored elsewhere).
    """

    def __init__(
        self,
        db: Database,
        scorer: Callable[[], FraudScorer | None],
        metrics: Metrics,
        batch: int,
        count: int,
        niceness: int = 0,
    ) -> None:
        self._db = db
        self._scorer = scorer
        self._metrics = metrics
        self._batch = batch
        self._count = count
        self._niceness = niceness
        self._queue: queue.Queue[ReasonJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="reasons", daemon=True)
        self._running = threading.Event()

    def start(self) -> None:
        """Start the thread; return once it runs at its priority."""
        self._thread.start()
        self._running.wait()

    def submit(self, case_id: int, features: Mapping[str, Any]) -> None:
        """Queue a case."""
        self._queue.put(ReasonJob(case_id, features, time.monotonic()))

    def wait(self) -> None:
        """Block until every queued case is handled."""
        self._queue.join()

    def stop(self, timeout: float = 10.0) -> None:
        """Explain what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def recover(self) -> int:
        """Queue the flagged cases whose reasons were never stored; how many."""
        query = (
            select(ReviewCase.id, ClaimDecision.features)
            .join(ClaimDecision, ClaimDecision.id == ReviewCase.claim_decision_id)
            .where(
                ReviewCase.reason == CaseReason.FLAGGED.value,
                ReviewCase.reasons.is_(None),
                ClaimDecision.fallback.is_(False),
            )
            .order_by(ReviewCase.id)
        )
        with self._db.session() as session, session.begin():
            rows = session.execute(query).all()
        for case_id, features in rows:
            if features is not None:
                self.submit(case_id, features)
        return len(rows)

    def _lower_priority(self) -> None:
        """Lower this thread's priority: Linux gives each thread its own nice value."""
        if self._niceness <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            thread = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + self._niceness
            )
        except OSError:
            logger.warning("could not lower the priority of the reasons thread", exc_info=True)

    def _run(self) -> None:
        self._lower_priority()
        self._running.set()
        while True:
            job = self._queue.get()
            jobs = [] if job is None else [job]
            stop = job is None
            while not stop and len(jobs) < self._batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                stop = more is None
                if more is not None:
                    jobs.append(more)
            try:
                if jobs:
                    self._explain(jobs)
            except Exception:  # a failure leaves these cases for the next start
                logger.exception("could not store the reasons of %d review cases", len(jobs))
            finally:
                for _ in range(len(jobs) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return

    def _explain(self, jobs: list[ReasonJob]) -> None:
        scorer = self._scorer()
        if scorer is None:
            return
        explanations = explain_rows(scorer, [j.features for j in jobs], self._count)
        now = utc_now()
        values = [
            {
                "case_id": job.case_id,
                "reasons": list(explanation.reasons),
                "abuse_type": explanation.abuse_type,
                "explained_at": now,
            }
            for job, explanation in zip(jobs, explanations, strict=True)
        ]
        # one executemany in one transaction (ORM updates cost a millisecond each here)
        with self._db.engine.begin() as connection:
            connection.execute(STORE_REASONS, values)
        done = time.monotonic()
        for job in jobs:
            self._metrics.reasons_latency.observe(done - job.queued_at)
