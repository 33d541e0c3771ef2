"""Prometheus metrics of the API, and the middleware that records requests.

Each app has its own registry (two apps in one process do not mix their counts). The route
label is the route's template (`/v1/claims/score`), never the raw path, so that ids in paths
neither reach the metrics nor multiply their series; unmatched paths share one label.

With several uvicorn workers, `cashback serve` gives them one directory
(`serving.metrics_directory`, and prometheus_client's `PROMETHEUS_MULTIPROC_DIR`, set
before the workers start): each process writes its counts to its own files there, and
/metrics, whichever worker answers, sums every worker's files. (Importing Feast before
prometheus_client switches the latter to its multiprocess mode, values kept in files per
process: counts stay right with one app per process, but two apps in one process, as in
tests, share them.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
# request latencies of a lean service: most well under 5 ms
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    """The API's metrics, in their own registry.

    Attributes:
        registry: where this process's metrics are registered.
        shared_directory: the workers' shared counts (see the module doc); None: this
            process's counts alone.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    shared_directory: Path | None = None

    def __post_init__(self) -> None:
        self.requests = Counter(
            "cashback_http_requests",
            "HTTP requests by method, route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cashback_http_request_duration_seconds",
            "time to answer, by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.claim_decisions = Counter(
            "cashback_claim_decisions",
            "claim decisions made (not retries), by decision",
            ["decision"],
            registry=self.registry,
        )
        self.claim_replays = Counter(
            "cashback_claim_replays",
            "claim scores answered from a stored decision (retries of a claim_id)",
            registry=self.registry,
        )
        self.offer_decisions = Counter(
            "cashback_offer_decisions",
            "new exposures (offers decided, not repeats), by source: holdout, experiment, "
            "policy, exploration, cold_start, fallback",
            ["source"],
            registry=self.registry,
        )
        self.offer_replays = Counter(
            "cashback_offer_replays",
            "offer requests answered with the customer's valid exposure",
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "cashback_fallbacks",
            "safe answers given because a model or the feature store was unavailable",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.model_reloads = Counter(
            "cashback_model_reloads",
            "newly promoted champions loaded while serving, by model and outcome "
            "(success: swapped in; failure: the old champion kept serving)",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.reasons_latency = Histogram(
            "cashback_reasons_seconds",
            "time from a flagged claim's decision to its reasons being stored",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (every worker's, summed, when shared)."""
        if self.shared_directory is None:
            return generate_latest(self.registry)
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=str(self.shared_directory))  # type: ignore[no-untyped-call]
        return generate_latest(workers)


class RequestMetricsMiddleware:
    """Counts every HTTP request and times it, labelled by route template and status.

    Args:
        app: the ASGI app to wrap.
        metrics: where to record.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, recording its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or UNMATCHED
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - start)
