"""A short load on a real `cashback serve`: no errors, each acknowledged decision stored once.

The smoke version of `tests/benchmarks/test_api_load_bench.py` (same server harness and load
generator, `tests/serving/live.py` and `tests/serving/load.py`): one uvicorn worker on the
served world and a fresh SQLite app database, 8 requests in flight, 5 seconds of fresh
claims of the world's customers, then 5 seconds of offer requests of distinct customers (each
a new exposure: the world's customers in turn, the context's `ts` 8 days later each round).
It prints the throughput and latency but asserts no speed: the benchmark does.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cashback.settings import ServingSettings
from serving.db import open_database
from serving.tables import ClaimDecision, OfferDecision
from tests.serving.live import api_key, cashback_serve
from tests.serving.load import LoadResult, RequestSource, WorldClaims, WorldOffers, run_load
from tests.serving.world import base_settings

pytestmark = pytest.mark.xdist_group("serving")
CONCURRENCY = 8
SECONDS = 5.0  # per endpoint


def _show(name: str, result: LoadResult) -> None:
    figures = result.summary()
    print(
        f"\nload smoke, {name}: {figures['throughput_rps']} req/s, p50 {figures['p50_ms']} ms, "
        f"p99 {figures['p99_ms']} ms, {figures['requests']} requests, {figures['errors']} errors"
    )


def test_a_short_load_gets_no_error_and_stores_each_acknowledged_decision_once(
    served_world: Path, tmp_path: Path
) -> None:
    # given our API served by uvicorn on the served world, with an engine key
    started = time.monotonic()
    settings = base_settings(
        served_world, serving=ServingSettings(directory=tmp_path / "serving", audit_share=0.0)
    )
    headers = {"X-API-Key": api_key(settings)}

    # when fresh claims, then offer requests of distinct customers, are sent 8 at a time
    with cashback_serve(settings, tmp_path / "server") as server:

        def load(source: RequestSource) -> LoadResult:
            return run_load(server.base_url, source, concurrency=CONCURRENCY, seconds=SECONDS,
                            headers=headers, server_pid=server.pid)  # fmt: skip

        claims = load(WorldClaims(served_world))
        offers = load(WorldOffers(served_world))
    _show("claims", claims)
    _show("offers", offers)
    print(f"server ready in {server.started_s:.1f} s, {time.monotonic() - started:.1f} s in all")

    # then every request was answered 200, and each answer is stored once, as told
    for result in (claims, offers):
        assert result.errors == 0, result.summary()
        assert len(result.acknowledged) == result.requests > 0
    database = open_database(settings, migrate=False)
    try:
        with database.session() as session:
            rows = session.execute(select(ClaimDecision.claim_id, ClaimDecision.decision_id))
            stored_claims = dict(rows.tuples().all())
            claim_rows = session.scalar(select(func.count()).select_from(ClaimDecision))
            exposures = session.execute(
                select(OfferDecision.decision_id, OfferDecision.customer_id)
            ).all()
    finally:
        database.close()
    assert claim_rows == len(stored_claims) == len(claims.acknowledged)
    assert stored_claims == claims.acknowledged
    told = {decision: key.split("|")[0] for key, decision in offers.acknowledged.items()}
    assert len(exposures) == len(told)  # one row per acknowledged exposure, no other
    assert dict(exposures) == told
