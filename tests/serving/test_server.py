"""`cashback serve` end to end: uvicorn; SIGKILL loses no acknowledged claim, exposure or
review decision, and repeats no payout entry.

The server runs in its own process group on a free loopback port, against the served world
and the backend's app database: two workers on SQLite (they share its files: the app
database and the claim log), one on PostgreSQL (each worker imports and loads the models:
about 15 s of CPU). Claims and offer requests (each a new exposure) are sent in turn, one
after the other; the whole group is killed with SIGKILL while they flow. Read afresh from
the database, every claim the server acknowledged must be stored with the decision it was
told, every acknowledged exposure stored exactly once, and the server's output must hold no
customer id or IP. Likewise three analysts decide review cases concurrently until the group
is killed: every acknowledged decision must be stored as told, and the payout feed, read
through the API after a restart, must hold each of its entries exactly once, numbered
1..N without gaps.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import ServingSettings, Settings
from cashback.vocab import ReviewDecision, Role
from serving.auth import create_key
from serving.db import open_database
from serving.payouts import actions
from serving.tables import (
    CaseDecision,
    ClaimDecision,
    OfferDecision,
    PayoutDecision,
    ReviewRequest,
)
from tests.serving.conftest import PEPPER, RULES, Api, StartApi, base_settings
from tests.serving.helpers import claim_body
from tests.serving.load import WorldOffers
from tests.serving.postgres import free_port
from tests.serving.reviews_helpers import FEED, REVIEWS

pytestmark = pytest.mark.xdist_group("serving")
ACKNOWLEDGED_BEFORE_KILL = 40


@pytest.fixture
def server_env(served_world: Path, database_url: str | None, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHBACK_")}
    env |= {
        "CASHBACK_DATA_DIR": str(served_world),
        "CASHBACK_IP_PEPPER": PEPPER,
        "CASHBACK_FRAUD__RULES_FILE": str(RULES),
        "CASHBACK_SERVING__DIRECTORY": str(tmp_path / "serving"),
        "CASHBACK_SERVING__AUDIT_SHARE": "0",
    }
    if database_url is not None:
        env["CASHBACK_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def server(
    server_env: dict[str, str], backend: str, tmp_path: Path
) -> Iterator[tuple[str, Path, int]]:
    """A `cashback serve` process group; yields (base URL, its output, pid)."""
    port = free_port()
    workers = "2" if backend == "sqlite" else "1"
    output = tmp_path / "server.log"
    command = [sys.executable, "-c", "from cashback.cli import main; main()", "serve",
               "--host", "127.0.0.1", "--port", str(port), "--workers", workers]  # fmt: skip
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, env=server_env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, output)
        yield base, output, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _wait_ready(base: str, process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {output.read_text()[-3000:]}")
        try:
            if httpx2.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"the server was not ready in time: {output.read_text()[-3000:]}")


def _engine_key(server_env: dict[str, str], database_url: str | None) -> str:
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    database = open_database(settings)
    try:
        with database.session() as session:
            return create_key(session, Role.ENGINE, "load").key
    finally:
        database.close()


def _stored(settings: Settings) -> tuple[dict[str, str], Counter[tuple[str, str, str]]]:
    """The stored claims (claim_id -> decision_id) and exposures (counted by content)."""
    database = open_database(settings, migrate=False)
    try:
        with database.session() as session:
            rows = session.execute(select(ClaimDecision.claim_id, ClaimDecision.decision_id))
            claims = dict(rows.tuples().all())
            exposures = session.execute(
                select(OfferDecision.customer_id, OfferDecision.ts, OfferDecision.decision_id)
            ).tuples()
            counted = Counter(
                (customer, ts.astimezone(UTC).isoformat().replace("+00:00", "Z"), decision)
                for customer, ts, decision in exposures
            )
    finally:
        database.close()
    return claims, counted


def test_a_killed_server_loses_no_acknowledged_claim_or_exposure(
    server: tuple[str, Path, int], server_env: dict[str, str], database_url: str | None
) -> None:
    # given a running server and an engine key
    base, output, pid = server
    headers = {"X-API-Key": _engine_key(server_env, database_url)}
    claims: dict[str, str] = {}  # claim_id -> decision_id told
    exposures: dict[str, str] = {}  # customer|ts -> decision_id told
    customers = [f"C{n:08d}" for n in range(1, 200)]
    offers = WorldOffers(None, customers=customers)  # each request a new exposure

    # when claims and offer requests are sent in turn, and the whole server is killed
    # (SIGKILL) once 40 of each have been acknowledged
    with httpx2.Client(base_url=base, headers=headers, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        for n in range(1000):
            if n % 2 == 0:
                body = claim_body(customer_id=customers[n % len(customers)])
                path, key, told = "/v1/claims/score", body["claim_id"], claims
            else:
                request = offers.next()
                path, body, key, told = request.path, request.body, request.key, exposures
            try:
                response = client.post(path, json=body)
            except httpx2.TransportError:
                break  # killed
            assert response.status_code == 200, response.text
            told[key] = response.json()["decision_id"]
            if len(claims) + len(exposures) == 2 * ACKNOWLEDGED_BEFORE_KILL:
                os.killpg(pid, signal.SIGKILL)
    assert len(claims) >= ACKNOWLEDGED_BEFORE_KILL
    assert len(exposures) >= ACKNOWLEDGED_BEFORE_KILL

    # then, read afresh from the database, every acknowledged claim is stored with the
    # decision told, and every acknowledged exposure is stored exactly once, as told
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    stored_claims, stored_exposures = _stored(settings)
    assert {k: stored_claims.get(k) for k in claims} == claims
    for key, decision in exposures.items():
        customer, ts = key.split("|")
        assert stored_exposures[(customer, ts, decision)] == 1, key
        same_window = [k for k in stored_exposures if k[:2] == (customer, ts)]
        assert same_window == [(customer, ts, decision)], key
    log = output.read_text()
    assert "Uvicorn running" in log or "Started server process" in log
    assert not any(customer in log for customer in customers)
    assert "198.51.100.23" not in log


# ------------------------------------------------------------------ review decisions

CASES = 120  # flagged claims scored through the server: each opens a review case
ANALYSTS = 3
DECISIONS_BEFORE_KILL = 40
KINDS = ("approve", "reject", "partial", "hold", "clawback", "bulk")
BULK_KINDS = ("reject", "hold", "approve", "clawback")


@dataclass(frozen=True)
class Ask:
    """A decision request of an analyst: where it goes, its body, the cases it decides."""

    path: str
    body: dict[str, Any]
    case_ids: tuple[int, ...]

    @property
    def client_id(self) -> str:
        """Its client_decision_id."""
        return str(self.body["client_decision_id"])


@dataclass
class Told:
    """What the analysts' threads sent and were answered; the first to see enough kills."""

    pid: int
    answered: list[tuple[str, Ask, dict[str, Any]]] = field(default_factory=list)
    unanswered: list[tuple[str, Ask]] = field(default_factory=list)  # in flight at the kill
    decisions: int = 0
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self, key: str, ask: Ask, answer: dict[str, Any]) -> None:
        with self.lock:
            self.answered.append((key, ask, answer))
            self.decisions += len(_decisions(answer))
            if self.decisions >= DECISIONS_BEFORE_KILL and not self.killed.is_set():
                self.killed.set()
                os.killpg(self.pid, signal.SIGKILL)


@dataclass(frozen=True)
class StoredReviews:
    """The review requests, decisions and payout feed, as read afresh from the database."""

    requests: dict[str, int]  # client_decision_id -> request id
    decisions: dict[int, dict[str, Any]]  # decision id -> its row with its client id
    feed: list[dict[str, Any]]  # the feed's rows by sequence


def _decisions(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The decisions of an answer (a bulk decision's list, or the one decision)."""
    return list(answer["decisions"]) if "decisions" in answer else [dict(answer)]


def _keys(settings: Settings, *roles: tuple[Role, str]) -> list[str]:
    """New API keys of these roles and names."""
    database = open_database(settings)
    try:
        with database.session() as session:
            return [create_key(session, role, name).key for role, name in roles]
    finally:
        database.close()


def _asks(cases: Sequence[Mapping[str, Any]], analyst: int) -> list[Ask]:
    """An analyst's work on their cases: each kind in turn (rings of 2 or 3 cases in bulk),
    and a final decision on each held case three requests later."""
    asks: list[Ask] = []
    todo, held = list(cases), list[tuple[int, Mapping[str, Any]]]()  # (due, case) when held
    kinds = itertools.islice(itertools.cycle(KINDS), analyst, None)
    ring_kinds = itertools.islice(itertools.cycle(BULK_KINDS), analyst, None)
    ring_sizes = itertools.cycle((2, 3))
    while todo or held:
        client_id = f"a{analyst}-{len(asks)}-{uuid.uuid4().hex[:8]}"
        if held and (held[0][0] <= len(asks) or not todo):
            _due, case = held.pop(0)
            final = "reject" if len(asks) % 2 else "approve"
            body: dict[str, Any] = {"decision": final, "note": "after the hold",
                                    "client_decision_id": client_id}  # fmt: skip
            asks.append(Ask(f"{REVIEWS}/{case['case_id']}/decision", body, (case["case_id"],)))
            continue
        kind = next(kinds)
        if kind == "bulk":
            size = next(ring_sizes)
            ring, todo, kind = todo[:size], todo[size:], next(ring_kinds)
            ids = tuple(sorted(case["case_id"] for case in ring))
            body = {"case_ids": list(ids), "decision": kind, "note": "a ring",
                    "client_decision_id": client_id}  # fmt: skip
            asks.append(Ask(f"{REVIEWS}/bulk-decision", body, ids))
        else:
            ring = [todo.pop(0)]
            body = {"decision": kind, "note": kind, "client_decision_id": client_id}
            if kind == "partial":
                body["amount"] = round(float(ring[0]["cashback_amount"]) * 0.4, 2)
            asks.append(Ask(f"{REVIEWS}/{ring[0]['case_id']}/decision", body,
                            (ring[0]["case_id"],)))  # fmt: skip
        if kind == "hold":
            held += [(len(asks) + 2, case) for case in ring]
    return asks


def _decide(base: str, key: str, asks: Sequence[Ask], told: Told) -> None:
    """Take each case, then decide it, as fast as the server answers, until it is killed."""
    with httpx2.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        for ask in asks:
            sent = False
            try:
                for case_id in ask.case_ids:
                    taken = client.post(f"{REVIEWS}/{case_id}/claim")
                    assert taken.status_code == 200, taken.text
                sent = True
                response = client.post(ask.path, json=ask.body)
            except httpx2.TransportError:
                if not told.killed.is_set():
                    raise
                if sent:
                    told.unanswered.append((key, ask))
                return
            assert response.status_code == 200, response.text
            told.acknowledged(key, ask, response.json())
    pytest.fail("the analysts ran out of work before the server was killed")


def _stored_reviews(settings: Settings) -> StoredReviews:
    database = open_database(settings, migrate=False)
    try:
        with database.session() as session:
            requests = dict(
                session.execute(select(ReviewRequest.client_decision_id, ReviewRequest.id)).all()
            )
            client_of = {request_id: client_id for client_id, request_id in requests.items()}
            decisions = {
                row.id: {"client_decision_id": client_of[row.request_id], "case_id": row.case_id,
                         "decision": row.decision, "amount": row.amount, "label": row.label}
                for row in session.scalars(select(CaseDecision))
            }  # fmt: skip
            feed = [
                {"sequence": row.sequence, "review_decision_id": row.review_decision_id,
                 "claim_id": row.claim_id, "action": row.action, "amount": row.amount}
                for row in session.scalars(select(PayoutDecision).order_by(PayoutDecision.sequence))
            ]  # fmt: skip
    finally:
        database.close()
    return StoredReviews(requests, decisions, feed)


def _feed_through_api(api: Api, key: str) -> list[dict[str, Any]]:
    """The whole payout feed as the engine reads it: page after page from cursor 0."""
    entries: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        response = api.client.get(
            FEED, params={"after": cursor, "limit": 17}, headers={"X-API-Key": key}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["entries"]:
            assert page["next_cursor"] == cursor
            return entries
        entries += page["entries"]
        cursor = page["next_cursor"]


def _check_acknowledged(told: Told, stored: StoredReviews) -> None:
    """Every acknowledged decision is stored as told, with exactly the feed entries told."""
    entries_of = defaultdict(list)
    for entry in stored.feed:
        entries_of[entry["review_decision_id"]].append(
            {k: entry[k] for k in ("sequence", "action", "amount")}
        )
    for _key, ask, answer in told.answered:
        assert ask.client_id in stored.requests, ask.client_id
        told_decisions = _decisions(answer)
        assert sorted(d["case_id"] for d in told_decisions) == list(ask.case_ids)
        mine = {i for i, d in stored.decisions.items() if d["client_decision_id"] == ask.client_id}
        assert mine == {d["id"] for d in told_decisions}, ask.client_id
        for decision in told_decisions:
            fields = ("case_id", "decision", "amount", "label")
            row = stored.decisions[decision["id"]]
            assert {k: row[k] for k in fields} == {k: decision[k] for k in fields}
            assert entries_of[decision["id"]] == decision["payouts"], decision


def _check_feed(
    stored: StoredReviews, cases: Mapping[int, Mapping[str, Any]], sent: Mapping[str, Ask]
) -> None:
    """The feed is 1..N; each stored request is one that was sent, whole; each entry belongs
    to a stored decision, which has exactly the entries its decision implies."""
    assert [e["sequence"] for e in stored.feed] == list(range(1, len(stored.feed) + 1))
    assert set(stored.requests) <= set(sent)
    for client_id in stored.requests:
        decided = [d for d in stored.decisions.values() if d["client_decision_id"] == client_id]
        assert sorted(d["case_id"] for d in decided) == list(sent[client_id].case_ids)
    assert {e["review_decision_id"] for e in stored.feed} <= set(stored.decisions)
    implied = Counter[tuple[int, str, str, float]]()
    for decision_id, row in stored.decisions.items():
        case = cases[row["case_id"]]
        for action in actions(
            ReviewDecision(row["decision"]), float(case["cashback_amount"]), row["amount"]
        ):
            implied[(decision_id, case["claim_id"], action.action, action.amount)] += 1
    fed = Counter(
        (e["review_decision_id"], e["claim_id"], e["action"], e["amount"]) for e in stored.feed
    )
    assert fed == implied


def _check_retries(api: Api, told: Told) -> None:
    """After the restart, a retry of an acknowledged request gets the stored answer."""
    for key, ask, answer in told.answered:
        again = api.client.post(ask.path, json=ask.body, headers={"X-API-Key": key})
        assert again.status_code == 200, again.text
        assert again.json() == answer


def _claim_decisions(base: str) -> int:
    """Claim decisions counted by /metrics, read on a new connection."""
    text = httpx2.get(f"{base}/metrics", timeout=30).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "cashback_claim_decisions"
            for sample in family.samples
            if sample.name == "cashback_claim_decisions_total"
        )
    )


def test_a_killed_server_loses_no_acknowledged_review_decision_nor_repeats_a_payout(
    server: tuple[str, Path, int],
    server_env: dict[str, str],
    database_url: str | None,
    start_api: StartApi,
) -> None:
    # given a running server, 120 flagged claims scored through it (each opens a review
    # case; their reasons are computed off the request path meanwhile), and three analysts
    base, _output, pid = server
    settings = base_settings(
        Path(server_env["CASHBACK_DATA_DIR"]),
        serving=ServingSettings(directory=Path(server_env["CASHBACK_SERVING__DIRECTORY"])),
        database_url=database_url,
    )
    engine, *analysts = _keys(
        settings, (Role.ENGINE, "engine"), *((Role.RISK, f"analyst-{n}") for n in range(ANALYSTS))
    )
    with httpx2.Client(base_url=base, headers={"X-API-Key": engine}, timeout=30) as client:
        for n in range(CASES):
            body = claim_body(customer_id=f"C{n % 150 + 1:08d}", amount=3000.0,
                              cashback_amount=51.0 + n / 4)  # fmt: skip
            assert client.post("/v1/claims/score", json=body).status_code == 200
    # (the claims came over one connection, so one worker scored them all: /metrics, from
    # whichever worker answers, sums every worker's counts)
    assert {_claim_decisions(base) for _ in range(10)} == {CASES}
    queue = httpx2.get(f"{base}{REVIEWS}", params={"limit": 200, "sort": "age"},
                       headers={"X-API-Key": analysts[0]}, timeout=30)  # fmt: skip
    assert queue.status_code == 200, queue.text
    cases = {item["case_id"]: item for item in queue.json()["items"]}
    assert len(cases) == CASES
    ordered = sorted(cases.values(), key=lambda item: int(item["case_id"]))
    work = [_asks(ordered[n::ANALYSTS], n) for n in range(ANALYSTS)]
    sent = {ask.client_id: ask for asks in work for ask in asks}

    # when the analysts decide their own cases concurrently (approve, reject, partial, hold,
    # clawback, rings in bulk, final decisions on held cases), each taking a case before
    # deciding it, and the whole server is killed (SIGKILL) once 40 decisions are acknowledged
    told = Told(pid)
    with ThreadPoolExecutor(ANALYSTS) as pool:
        futures = [pool.submit(_decide, base, key, asks, told)
                   for key, asks in zip(analysts, work, strict=True)]  # fmt: skip
        for future in futures:
            future.result()
    assert told.killed.is_set()
    assert told.decisions >= DECISIONS_BEFORE_KILL

    # then, read afresh after a restart (an app on the same database), every acknowledged
    # decision is stored as told with the feed entries told; the feed is 1..N without gaps or
    # repeats, each of its entries belongs to a stored decision (requests in flight at the
    # kill are stored whole or not at all), and the engine reads exactly that through the API
    api = start_api()
    stored = _stored_reviews(settings)
    _check_acknowledged(told, stored)
    _check_feed(stored, cases, sent)
    feed_key = api.key(Role.ENGINE, "engine after the restart")
    fields = ("sequence", "claim_id", "action", "amount")
    assert [{k: e[k] for k in fields} for e in _feed_through_api(api, feed_key)] == [
        {k: e[k] for k in fields} for e in stored.feed
    ]
    # and a retry of each acknowledged request gets the stored answer, writing nothing more
    _check_retries(api, told)
    assert _stored_reviews(settings) == stored
    # and a retry of each request left unanswered by the kill is stored once, the feed
    # going on from where it was without gaps
    for key, ask in told.unanswered:
        retried = api.client.post(ask.path, json=ask.body, headers={"X-API-Key": key})
        assert retried.status_code == 200, retried.text
        told.answered.append((key, ask, retried.json()))
    after = _stored_reviews(settings)
    _check_acknowledged(told, after)
    _check_feed(after, cases, sent)
    assert after.feed[: len(stored.feed)] == stored.feed


def test_the_demo_ends_by_serving_with_a_demo_key_shown_once(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the demo's artefacts (stubbed: the pipeline has its own test) and uvicorn stubbed
    served: list[tuple[str, int, int]] = []
    monkeypatch.setattr("pipelines.demo.run", lambda _settings: iter(["demo world found"]))
    monkeypatch.setattr("serving.server.serve", lambda _settings, *address: served.append(address))
    runner = CliRunner()
    # when the demo runs twice, then once without serving
    first = runner.invoke(app, ["demo"])
    second = runner.invoke(app, ["demo"])
    third = runner.invoke(app, ["demo", "--no-serve"])
    # then the first run creates and shows an admin key, and each serving run serves
    assert first.exit_code == 0, first.output
    assert "demo admin API key (shown once, stored hashed): cbk_" in first.output
    assert "no demo key made" in second.output
    assert "cbk_" not in second.output
    assert third.exit_code == 0
    assert "serving" not in third.output
    assert served == [("127.0.0.1", 8000, 1), ("127.0.0.1", 8000, 1)]
