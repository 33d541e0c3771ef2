"""An HTTP load generator for the claim and offer routes, and the requests it sends.

Two modes, both an asyncio loop of httpx2 clients sharing one connection pool, in the calling
process:

- closed loop (`run_load`, saturation): `concurrency` requests kept in flight for `seconds`;
  each request's latency runs from its send to the whole answer read.
- open loop (`run_rate`, a constant arrival rate): request i is due at start + i / rate,
  whatever the server's state, and its latency runs from that *scheduled* time, so a
  server (or generator) that falls behind shows up as queueing in the latencies instead of
  silently lowering the rate (no coordinated omission). How late the generator itself
  sent is recorded too (`send_lag_*`).

The requests: `WorldClaims` makes fresh claims (a unique claim_id and receipt, a customer,
transaction, device and amount taken from the world's own claims, an IP from a small pool,
at a time near the end of the world). `WorldOffers` asks for offers of the world's
customers, each request a *new* decision: an exposure is stable for 7 days, and a customer
asked again inside it gets the stored one back, so the customers are taken in turn and each
round through them moves the context's `ts` on by 8 days. `Alternating` interleaves sources.
Every answer is counted by status (transport errors by type), and the decision_id of every
acknowledged request is kept under its key. The CPU time of the generator's own process and
of the server are measured too, so a reader can tell a saturated generator from a saturated
server.

`cpu_pinning` pins the generator to one core and a server's process tree to another (as
`taskset` would), when the machine has two cores or more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx2
import numpy as np
import psutil

from cashback.tables import scan_parquet_path, table_path

SCORE_PATH = "/v1/claims/score"
RECOMMEND_PATH = "/v1/offers/recommend"
WORLD_END = datetime(2025, 5, 30, 15, 0, tzinfo=UTC)  # the served world runs 150 days from Jan 1
IP_POOL = 255  # 198.51.100.1-254
REQUEST_TIMEOUT_S = 30.0
ROUND_DAYS = 8  # an exposure is valid 7 days: a round later, each customer gets a new one
CATEGORIES = ("fashion", "electronics", "grocery", "home", None)
CHANNELS = ("app", "online", "store")
OPEN_LOOP_CONNECTIONS = 64
DRAIN_S = 5.0  # after an open-loop run's last send, how long answers are awaited


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Request:
    """One request to send.

    Attributes:
        path: the route.
        body: the JSON body.
        key: what its acknowledgement is kept under (claim_id; customer|ts for offers).
    """

    path: str
    body: dict[str, Any]
    key: str


class RequestSource(Protocol):
    """Makes the requests of a run."""

    def next(self) -> Request:
        """The next request."""
        ...


class WorldClaims:
    """Fresh claims of the world's customers (see the module docstring).

    Args:
        data_dir: the world's data directory (its claims table is read).
        seed: the draws.
        sample: claims of the world to draw from.
    """

    def __init__(self, data_dir: Path, seed: int = 7, sample: int = 5_000) -> None:
        claims = scan_parquet_path(table_path(data_dir, "claims")).select(
            "customer_id", "txn_id", "amount", "cashback_amount", "payout_method", "device_id"
        )
        frame = claims.collect()
        self.rows = frame.sample(n=min(sample, frame.height), seed=seed).to_dicts()
        self.rng = np.random.default_rng(seed)

    @property
    def customers(self) -> int:
        """Distinct customers among the claims drawn from."""
        return len({row["customer_id"] for row in self.rows})

    def __call__(self) -> dict[str, Any]:
        """A new claim (a unique claim_id)."""
        row = self.rows[int(self.rng.integers(len(self.rows)))]
        minutes = int(self.rng.integers(0, 24 * 60))
        ts = WORLD_END - timedelta(minutes=minutes)
        return {
            **row,
            "claim_id": f"LD-{uuid.uuid4().hex}",
            "ip": f"198.51.100.{int(self.rng.integers(1, IP_POOL))}",
            "receipt_hash": f"r-{uuid.uuid4().hex[:16]}",
            "ts": _iso(ts),
        }

    def next(self) -> Request:
        """A new claim to score."""
        body = self()
        return Request(SCORE_PATH, body, body["claim_id"])


class WorldOffers:
    """Offer requests of the world's customers, each one a new decision.

    The customers (shuffled once) are asked in turn; each round through them moves the
    context's `ts` on by `ROUND_DAYS` (8) days from the world's end, past the 7-day window of
    the exposure the previous round opened, so no request is answered by a stored exposure.
    Keep one instance per server: a new one would start again at round 0, where the server
    already holds exposures. (Two requests for one customer are never in flight together
    unless more than the world's customers are.)

    Args:
        data_dir: the world's data directory (its customers table is read).
        seed: the order of the customers and the contexts.
        customers: ask only these customers instead (the world's are not read).
    """

    def __init__(
        self, data_dir: Path | None, seed: int = 7, customers: Sequence[str] | None = None
    ) -> None:
        if customers is None:
            assert data_dir is not None, "the world's data directory or the customers"
            frame = scan_parquet_path(table_path(data_dir, "customers")).select("customer_id")
            customers = sorted(frame.collect()["customer_id"].to_list())
        self.rng = np.random.default_rng(seed)
        self.customers = [str(c) for c in self.rng.permutation(np.asarray(customers))]
        self.sent = 0

    def next(self) -> Request:
        """The next customer's offer request, at its round's time."""
        rounds, k = divmod(self.sent, len(self.customers))
        self.sent += 1
        customer = self.customers[k]
        ts = _iso(WORLD_END + timedelta(days=ROUND_DAYS * rounds))
        context: dict[str, Any] = {"channel": CHANNELS[k % len(CHANNELS)], "ts": ts}
        category = CATEGORIES[k % len(CATEGORIES)]
        if category is not None:
            context["category"] = category
        return Request(RECOMMEND_PATH, {"customer_id": customer, "context": context},
                       f"{customer}|{ts}")  # fmt: skip


class Alternating:
    """The requests of several sources, taken in turn.

    Args:
        sources: the sources.
    """

    def __init__(self, *sources: RequestSource) -> None:
        self.sources = sources
        self.sent = 0

    def next(self) -> Request:
        """The next source's next request."""
        source = self.sources[self.sent % len(self.sources)]
        self.sent += 1
        return source.next()


@dataclass
class LoadResult:
    """What a load run saw.

    Attributes:
        seconds: wall time from the first request sent to the last answer.
        concurrency: requests kept in flight (closed loop), or the connections (open loop).
        latencies_s: per answered request (any status): from its send (closed loop) or its
            scheduled time (open loop) to the answer read.
        statuses: answers by HTTP status.
        transport_errors: requests without an answer (connection errors, timeouts, still
            unanswered `DRAIN_S` after an open-loop run's last send), by type.
        acknowledged: request key -> decision_id of every 200.
        client_cpu_s: CPU time of the generator's process meanwhile.
        server_cpu_s: CPU time of the server's process (and its children) meanwhile.
        rate_rps: the arrival rate of an open-loop run (None: closed loop).
        send_lags_s: open loop: how late each request was sent after its scheduled time.
    """

    seconds: float
    concurrency: int
    latencies_s: list[float]
    statuses: Counter[int]
    transport_errors: Counter[str]
    acknowledged: dict[str, str] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    rate_rps: float | None = None
    send_lags_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests answered or failed."""
        return len(self.latencies_s) + sum(self.transport_errors.values())

    @property
    def server_errors(self) -> int:
        """5xx answers."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def errors(self) -> int:
        """Every request that was not a 200: 5xx, other statuses and transport errors."""
        return self.requests - self.statuses.get(200, 0)

    def summary(self) -> dict[str, Any]:
        """The figures, JSON-ready (latencies in ms)."""
        ms = np.array(self.latencies_s) * 1e3 if self.latencies_s else np.zeros(1)
        ok = self.statuses.get(200, 0)
        out: dict[str, Any] = {
            "mode": "closed loop" if self.rate_rps is None else "open loop",
            "seconds": round(self.seconds, 2),
            "concurrency": self.concurrency,
        }
        if self.rate_rps is not None:
            lags = np.array(self.send_lags_s or [0.0]) * 1e3
            out |= {
                "rate_rps": self.rate_rps,
                "send_lag_p99_ms": round(float(np.percentile(lags, 99)), 2),
                "send_lag_max_ms": round(float(lags.max()), 2),
            }
        return out | {
            "requests": self.requests,
            "ok": ok,
            "throughput_rps": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "errors": self.errors,
            "server_errors_5xx": self.server_errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": dict(self.transport_errors),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "server_cpu_ms_per_request": round(1e3 * self.server_cpu_s / max(ok, 1), 3),
        }


def new_result(concurrency: int, rate_rps: float | None = None) -> LoadResult:
    """An empty result for a run at this concurrency (and arrival rate, for open loop)."""
    return LoadResult(0.0, concurrency, [], Counter(), Counter(), rate_rps=rate_rps)


def _tree_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        return 0.0
    return total


def _client(base_url: str, headers: dict[str, str], connections: int) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(
        base_url=base_url,
        headers=headers,
        limits=limits,
        timeout=httpx2.Timeout(REQUEST_TIMEOUT_S),
    )


async def _send(
    client: httpx2.AsyncClient, request: Request, started: float, result: LoadResult
) -> None:
    """Send one request; record its latency from `started` and its answer."""
    try:
        response = await client.post(request.path, json=request.body)
    except httpx2.TransportError as error:
        result.transport_errors[type(error).__name__] += 1
        return
    result.latencies_s.append(time.perf_counter() - started)
    result.statuses[response.status_code] += 1
    if response.status_code == 200:
        result.acknowledged[request.key] = response.json()["decision_id"]


async def _drive(
    base_url: str,
    headers: dict[str, str],
    source: RequestSource,
    concurrency: int,
    seconds: float,
    result: LoadResult,
) -> None:
    async with _client(base_url, headers, concurrency) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                request = source.next()
                await _send(client, request, time.perf_counter(), result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _drive_open(
    base_url: str,
    headers: dict[str, str],
    source: RequestSource,
    rate: float,
    seconds: float,
    connections: int,
    result: LoadResult,
) -> None:
    async with _client(base_url, headers, connections) as client:
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.01
        for i in range(round(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.send_lags_s.append(max(time.perf_counter() - scheduled, 0.0))
            task = asyncio.create_task(_send(client, source.next(), scheduled, result))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            _done, late = await asyncio.wait(set(pending), timeout=DRAIN_S)
            for task in late:
                task.cancel()
            if late:
                result.transport_errors["UnansweredAtEnd"] += len(late)
                await asyncio.gather(*late, return_exceptions=True)


def _measured(run: Any, result: LoadResult, server_pid: int | None) -> LoadResult:
    me = psutil.Process()
    client_before, server_before = me.cpu_times(), _tree_cpu_s(server_pid)
    started = time.perf_counter()
    # its own thread and event loop: a test process may hold a running loop in this thread
    # (Playwright's sync API, for the browser tests of the same worker); a new thread keeps
    # this thread's CPU pinning (threads inherit it)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as runner:
        runner.submit(asyncio.run, run).result()
    result.seconds = time.perf_counter() - started
    client_after = me.cpu_times()
    result.client_cpu_s = (client_after.user + client_after.system) - (
        client_before.user + client_before.system
    )
    result.server_cpu_s = _tree_cpu_s(server_pid) - server_before
    return result


def run_load(
    base_url: str,
    source: RequestSource,
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    server_pid: int | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Closed loop: keep `concurrency` requests in flight against `base_url` for `seconds`.

    Args:
        base_url: the server.
        source: makes each request sent (e.g. `WorldClaims`, `WorldOffers`).
        concurrency: requests in flight.
        seconds: how long new requests are started (the run stops by itself).
        headers: sent with each request (the API key).
        server_pid: the server's process, for its CPU time.
        result: an empty result to fill (another thread may watch it grow), else a new one.

    Returns:
        What the run saw.
    """
    result = new_result(concurrency) if result is None else result
    run = _drive(base_url, headers or {}, source, concurrency, seconds, result)
    return _measured(run, result, server_pid)


def run_rate(
    base_url: str,
    source: RequestSource,
    *,
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    server_pid: int | None = None,
    connections: int = OPEN_LOOP_CONNECTIONS,
    result: LoadResult | None = None,
) -> LoadResult:
    """Open loop: send `rate` requests a second, each at its scheduled time, for `seconds`.

    Latencies run from each request's scheduled time (see the module docstring). A request
    still unanswered `DRAIN_S` after the last one was due counts as an error.

    Args:
        base_url: the server.
        source: makes each request sent.
        rate: requests per second.
        seconds: how long requests are scheduled (rate x seconds of them).
        headers: sent with each request (the API key).
        server_pid: the server's process, for its CPU time.
        connections: the pool's connections (more requests than this in flight wait for
            one, which counts in their latency).
        result: an empty result to fill (another thread may watch it grow), else a new one.

    Returns:
        What the run saw.
    """
    result = new_result(connections, rate) if result is None else result
    result.concurrency, result.rate_rps = connections, rate
    run = _drive_open(base_url, headers or {}, source, rate, seconds, connections, result)
    return _measured(run, result, server_pid)


@dataclass(frozen=True)
class Pinning:
    """Which core the load generator and the server run on (None: not pinned).

    Attributes:
        generator: the generator's core.
        server: the server's core.
        note: what was done, in words (for the results).
    """

    generator: int | None
    server: int | None
    note: str

    def pin_server(self, pid: int) -> None:
        """Pin every thread of a server's process tree to the server's core.

        Threads started later inherit the affinity (as under `taskset -c N`).
        """
        if self.server is None:
            return
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for thread in proc.threads():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(thread.id, {self.server})


@contextlib.contextmanager
def cpu_pinning() -> Iterator[Pinning]:
    """Pin this process (the generator) to its first core, and plan the server on the next.

    The affinity of this thread is restored on exit. With fewer than two cores nothing is
    pinned and a note is printed.

    Yields:
        The plan; call `pin_server` on each server started.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        note = f"not pinned: {len(cores)} core(s) available, the generator and server share them"
        print(f"\n{note}")
        yield Pinning(None, None, note)
        return
    generator, server = cores[0], cores[1]
    os.sched_setaffinity(0, {generator})
    try:
        yield Pinning(
            generator, server, f"load generator on core {generator}, server on core {server}"
        )
    finally:
        os.sched_setaffinity(0, set(cores))
