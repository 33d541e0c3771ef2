"""Importing the real Hillstrom and Cookie Cats files, checked against the raw CSVs."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from cashback.settings import Settings
from cashback.tables import load_table, validate_directory
from pipelines.data_import import run
from tests.conftest import shared_file

pytestmark = pytest.mark.realdata


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _sums(out: Path) -> dict[tuple[str, str], float]:
    """Sum of each metric per variant, from the written tables."""
    joined = load_table(out, "outcomes").join(
        load_table(out, "assignments"), on=["experiment_id", "customer_id"]
    )
    sums = joined.group_by("variant", "metric").agg(pl.col("value").sum())
    return {(r["variant"], r["metric"]): r["value"] for r in sums.iter_rows(named=True)}


def test_hillstrom_imports_every_customer_with_the_raw_outcomes(
    tmp_path: Path, settings: Settings
) -> None:
    # given the raw file, read independently
    path = shared_file("hillstrom/hillstrom.csv")
    raw = _rows(path)
    names = {"No E-Mail": "control", "Womens E-Mail": "womens", "Mens E-Mail": "mens"}
    units = Counter(names[r["segment"]] for r in raw)
    expected: dict[tuple[str, str], float] = defaultdict(float)
    for r in raw:
        for metric in ("visit", "conversion", "spend", "history"):
            expected[(names[r["segment"]], metric)] += float(r[metric])

    # when it is imported
    out = tmp_path / "out"
    summary = run("hillstrom", path, out, settings)

    # then every customer is assigned, with the raw outcomes, and the contract holds
    assert len(raw) == 64_000
    assert summary.rows == {
        "customers": 64_000,
        "experiments": 1,
        "assignments": 64_000,
        "outcomes": 4 * 64_000,
    }
    assignments = load_table(out, "assignments")
    assert dict(assignments.group_by("variant").len().rows()) == dict(units)
    assert _sums(out) == pytest.approx(dict(expected))
    variants = load_table(out, "experiments")["variants"][0].to_list()
    assert [v["name"] for v in variants] == ["control", "womens", "mens"]
    assert round(sum(v["weight"] for v in variants), 9) == 1.0
    for v in variants:
        assert v["weight"] == pytest.approx(units[v["name"]] / len(raw), abs=5e-5)
    assert validate_directory(out).ok


def test_cookie_cats_imports_every_player_with_the_raw_outcomes(
    tmp_path: Path, settings: Settings
) -> None:
    # given the raw file, read independently
    path = shared_file("cookie_cats/cookie_cats.csv")
    raw = _rows(path)
    units = Counter(r["version"] for r in raw)
    expected: dict[tuple[str, str], float] = defaultdict(float)
    for r in raw:
        expected[(r["version"], "sum_gamerounds")] += float(r["sum_gamerounds"])
        for metric in ("retention_1", "retention_7"):
            expected[(r["version"], metric)] += r[metric] == "TRUE"

    # when it is imported
    out = tmp_path / "out"
    summary = run("cookie_cats", path, out, settings)

    # then every player is assigned, with the raw outcomes, and the contract holds
    assert len(raw) == 90_189
    assert summary.rows == {"experiments": 1, "assignments": 90_189, "outcomes": 3 * 90_189}
    assignments = load_table(out, "assignments")
    assert dict(assignments.group_by("variant").len().rows()) == dict(units)
    assert _sums(out) == pytest.approx(dict(expected))
    variants = load_table(out, "experiments")["variants"][0].to_list()
    assert [(v["name"], v["weight"]) for v in variants] == [
        ("gate_30", 0.4956),
        ("gate_40", 0.5044),
    ]
    assert validate_directory(out).ok
