"""OnlineReader returns what Feast's get_online_features returns, marks missing ids, or fails."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from cashback.errors import CashbackError
from features.online import OnlineReader, check_fresh, materialize, newest_event_time, write_online
from tests.features.online.conftest import T0, T1, ToyRepo, device_frame, risk_frame, stats_frame

KNOWN = [f"c{i:03d}" for i in range(12)]


def same(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    """Equal dicts of columns, where NaN equals NaN (none is expected: NaN is stored as null)."""
    if a.keys() != b.keys():
        return False
    for key, column in a.items():
        for x, y in zip(column, b[key], strict=True):
            nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
            if not nan and (x != y or type(x) is not type(y)):
                return False
    return True


@pytest.fixture
def written(repo: ToyRepo) -> ToyRepo:
    """The toy repo with every view written by write_online."""
    write_online(repo.store, "toy_stats", stats_frame())
    write_online(repo.store, "toy_risk", risk_frame())
    write_online(repo.store, "toy_device", device_frame())
    return repo


@pytest.mark.parametrize("service", ["toy_v1", "toy_full"])
def test_read_returns_exactly_what_the_feast_sdk_returns(written: ToyRepo, service: str) -> None:
    # given known ids, unknown ids and a repeated id, in a scrambled order
    ids = [*reversed(KNOWN), "nobody", "c003", "", "c000"]

    # when read by ours and by the plain Feast SDK
    ours = OnlineReader(written.store, service).read(ids).to_dict()
    feasts = written.sdk(service, ids)

    # then the results are identical, values and Python types alike
    assert same(ours, feasts), (ours, feasts)


def test_full_feature_names_match_the_sdks(written: ToyRepo) -> None:
    # given the two-view service read with full feature names
    reader = OnlineReader(written.store, "toy_full", full_feature_names=True)

    # when read
    ours = reader.read(["c000", "c005", "zz"]).to_dict()
    store = written.reopen()
    feasts = store.get_online_features(
        features=store.get_feature_service("toy_full"),
        entity_rows=[{"customer_id": i} for i in ["c000", "c005", "zz"]],
        full_feature_names=True,
    ).to_dict()

    # then the names and values are Feast's
    assert same(ours, feasts)
    assert "toy_risk__score" in ours


def test_unknown_ids_give_nulls_marked_missing_per_view(written: ToyRepo) -> None:
    # given customers with rows in both views, in one view only, and in none
    reader = OnlineReader(written.store, "toy_full")

    # when read
    result = reader.read(["c000", "c002", "ghost"])

    # then values are null where absent, and the masks say which view lacked the entity
    assert result.features["spend"][2] is None
    assert result.features["score"] == [0.9, None, None]
    assert result.found == {"toy_stats": [True, True, False], "toy_risk": [True, False, False]}
    assert result.missing == [False, True, True]


def test_a_service_with_two_join_keys_is_read_by_columns(written: ToyRepo) -> None:
    # given a service over customers and devices (an int64 join key)
    reader = OnlineReader(written.store, "toy_claims")
    rows = {"customer_id": ["c001", "c004", "nobody"], "device_id": [2, -3, 99]}

    # when read by columns
    ours = reader.read_rows(rows).to_dict()
    store = written.reopen()
    entity_rows = [
        {"customer_id": c, "device_id": d}
        for c, d in zip(rows["customer_id"], rows["device_id"], strict=True)
    ]
    feasts = store.get_online_features(
        features=store.get_feature_service("toy_claims"), entity_rows=entity_rows
    ).to_dict()

    # then it matches the SDK, and read() by one id list is refused with the join keys named
    assert same(ours, feasts)
    with pytest.raises(CashbackError, match=r"join keys \['customer_id', 'device_id'\]"):
        reader.read(["c001"])


def test_stores_written_by_feast_materialize_are_read_the_same(repo: ToyRepo) -> None:
    # given a store filled by Feast's own materialize
    repo.reopen().materialize(T0 - timedelta(days=1), T1)

    # when read by ours
    ours = OnlineReader(repo.reopen(), "toy_full").read([*KNOWN, "x"]).to_dict()

    # then it equals the SDK
    assert same(ours, repo.sdk("toy_full", [*KNOWN, "x"]))


def test_concurrent_reads_from_threads_agree(written: ToyRepo) -> None:
    # given one reader shared by several threads
    reader = OnlineReader(written.store, "toy_v1")
    expected = reader.read(KNOWN).to_dict()

    # when each thread reads the same ids many times
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: reader.read(KNOWN).to_dict(), range(40)))

    # then every answer is the same
    assert all(same(r, expected) for r in results)


# ---------------------------------------------------------------- bad input


def test_an_unknown_feature_service_lists_the_known_ones(written: ToyRepo) -> None:
    with pytest.raises(
        CashbackError, match="unknown feature service 'fraud_v9'; known: toy_claims, toy_full"
    ):
        OnlineReader(written.store, "fraud_v9")


def test_ids_of_the_wrong_type_or_unknown_join_keys_are_refused(written: ToyRepo) -> None:
    reader = OnlineReader(written.store, "toy_v1")
    with pytest.raises(CashbackError, match="join key 'customer_id' is a string; got int 42"):
        reader.read([42])
    with pytest.raises(CashbackError, match=r"takes join keys \['customer_id'\]; got \['device"):
        reader.read_rows({"device_id": [1]})
    with pytest.raises(CashbackError, match="a sequence of ids, not one id"):
        reader.read("c000")


def test_an_empty_online_store_names_the_command_to_run(repo: ToyRepo) -> None:
    # given an applied repo whose online store was never filled
    # when a reader is built, then the error names the materialize command
    with pytest.raises(CashbackError, match=r"no rows for feature view 'toy_stats'.*materialize"):
        OnlineReader(repo.store, "toy_v1")


@pytest.mark.parametrize("online", ["sqlite"], indirect=True)
def test_a_missing_sqlite_file_names_the_apply_command(repo: ToyRepo) -> None:
    (repo.root / "online.db").unlink()
    with pytest.raises(CashbackError, match="does not exist: run `cashback features apply`"):
        OnlineReader(repo.store, "toy_v1")


def test_a_stale_store_is_reported_with_its_age_and_the_command(written: ToyRepo) -> None:
    # given rows written at T0
    # when checked one hour later, and three days later with a one-day limit
    fresh = check_fresh(written.store, "toy_stats", timedelta(days=1), now=T0 + timedelta(hours=1))

    # then the first passes with the newest time and the second names the command
    assert fresh == T0
    assert newest_event_time(written.store, "toy_stats") == T0
    stale = r"stale .*3\.0 days old \(max 1\.0 days\): run `cashback features materialize`"
    with pytest.raises(CashbackError, match=stale):
        check_fresh(written.store, "toy_stats", timedelta(days=1), now=T0 + timedelta(days=3))
    with pytest.raises(CashbackError, match="stale for feature view 'toy_stats'"):
        OnlineReader(written.store, "toy_v1", max_age=timedelta(hours=1))


def test_check_fresh_on_an_empty_view_names_the_command(repo: ToyRepo) -> None:
    materialize(repo.store, end=T1, feature_views=["toy_risk"])
    with pytest.raises(CashbackError, match=r"no rows for feature view 'toy_stats'.*materialize"):
        check_fresh(repo.store, "toy_stats", timedelta(days=1))
