"""Feature speed and memory: ours against a plain pandas baseline, in the same run.

Two jobs, each in its own fresh process (see `conftest.measure`):

- latest close: every customer's features as of the world's last close (what materialize
  needs), with `customer_features`, every feature;
- training frame: features for random (customer, ts) rows at random times of the world's
  year, with `features_at` (the close is 00:00 UTC of ts's day), every feature.

The baseline (`tests/benchmarks/pandas_features.py`) computes a subset of the same windowed
aggregates (purchases and spend over 7/30/90/365 days, days since the last purchase) for the
same rows with a pandas merge, filter and groupby. Both read the contract tables from parquet
and write their output frame to parquet inside the measured call. Rows/s = requested rows /
wall time of the call (`run_s`). The time and memory targets apply to ours computing every
feature; the speed-up target (5x) to ours computing the same windowed aggregates as the
baseline, with the same engine (`features.windows`) that computes every feature. Ours on
every feature against the baseline on its subset is reported too. Outputs are asserted equal
on the subset for a random sample of rows (floats to 1e-6).

The full benchmark (`make bench`) runs on a simulated world of 1,000,000 customers over 365
days; the smoke version runs in `make test` on 3,000 customers over 120 days and 2,000 rows
and checks that both agree and that the figures are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cashback.settings import FeatureSettings, Settings
from features.asof import cents, days, elapsed_days
from features.customer_frame import (
    CLOSE,
    KEY,
    FeatureSources,
    close_of,
    customer_features,
    features_at,
)
from features.windows import Latest, window_aggregates
from pipelines.simulate import run, world_config
from tests.benchmarks.conftest import (
    GIB,
    SAMPLE_SECONDS,
    Measurement,
    measure,
    print_table,
    write_results,
)
from tests.benchmarks.pandas_features import SUBSET, WINDOWS

OURS_LATEST = "tests.benchmarks.test_features_bench:latest_close_ours"
OURS_TRAINING = "tests.benchmarks.test_features_bench:training_frame_ours"
PANDAS_LATEST = "tests.benchmarks.pandas_features:latest_close_pandas"
PANDAS_TRAINING = "tests.benchmarks.pandas_features:training_frame_pandas"
PEPPER = "bench-pepper-not-a-secret"
SEED = 7
FULL_CUSTOMERS, FULL_DAYS, FULL_ROWS = 1_000_000, 365, 1_000_000
SMOKE_CUSTOMERS, SMOKE_DAYS, SMOKE_ROWS = 3_000, 120, 2_000
SAMPLE_ROWS = 5_000
TIME_LIMIT_S = 120.0
MEMORY_LIMIT_BYTES = 8 * GIB
MIN_SPEEDUP = 5.0
US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class World:
    """A simulated data directory and its time span.

    Attributes:
        path: the data directory.
        start: 00:00 UTC of the first simulated day.
        days: number of simulated days.
    """

    path: Path
    start: datetime
    days: int

    @property
    def last_close(self) -> datetime:
        """The close after the last simulated day: every event of the world is before it."""
        return self.start + timedelta(days=self.days)


def _simulate(root: Path, customers: int, days: int) -> World:
    settings = Settings(ip_pepper=PEPPER, data_dir=root)
    config = world_config(settings, customers=customers, days=days, seed=SEED)
    run(config, root / "world", settings)
    start = datetime.combine(config.start, datetime.min.time(), tzinfo=UTC)
    return World(root / "world", start, days)


def _write_rows(world: World, n: int, path: Path, seed: int = SEED) -> Path:
    """`n` random (customer_id, ts) rows: customers with replacement, times uniform in the year."""
    rng = np.random.default_rng(seed)
    customers = pl.scan_parquet(world.path / "customers.parquet").select("customer_id").collect()
    picks = customers["customer_id"].gather(rng.integers(0, customers.height, n))
    offsets = rng.integers(0, world.days * US_PER_DAY, n)
    rows = pl.DataFrame({"customer_id": picks, "offset": offsets}).select(
        "customer_id",
        (pl.lit(world.start).cast(pl.Datetime("us", "UTC")) + pl.duration(microseconds="offset"))
        .cast(pl.Datetime("us", "UTC"))
        .alias("ts"),
    )
    rows.write_parquet(path)
    return path


def subset_features(transactions: pl.LazyFrame, rows: pl.LazyFrame) -> pl.LazyFrame:
    """The baseline's subset with our engine (`features.windows`).

    Args:
        transactions: the contract table.
        rows: requested rows with customer_id and close_ts.

    Returns:
        `rows` with the `SUBSET` columns, defined as in `features.behaviour`.
    """
    frame = window_aggregates(
        transactions.filter(pl.col("amount") > 0),
        KEY,
        rows,
        sums={"n": pl.lit(1, dtype=pl.Int64), "s": cents(pl.col("amount"))},
        windows={str(w): days(w) for w in WINDOWS},
        latest={"last": Latest(pl.col("ts"))},
    )
    return frame.with_columns(
        *(pl.col(f"n@{w}").alias(f"purchases_{w}d") for w in WINDOWS),
        *((pl.col(f"s@{w}") / 100).alias(f"spend_{w}d") for w in WINDOWS),
        elapsed_days(pl.col(CLOSE) - pl.col("last")).alias("days_since_last_purchase"),
    ).drop(*(f"{v}@{w}" for v in ("n", "s") for w in WINDOWS), "last")


def _features(sources: FeatureSources, rows: pl.LazyFrame, which: str) -> pl.DataFrame:
    """Every customer feature (`all`) or the baseline's subset (`subset`) for the rows."""
    if which == "subset":
        return subset_features(sources.transactions, rows).collect()
    return customer_features(sources, rows, FeatureSettings()).collect()


def latest_close_ours(world: str, close: str, out: str, which: str = "all") -> dict[str, Any]:
    """Benchmark entry point: the features of every customer as of one close.

    Args:
        world: the data directory.
        close: the close (ISO time, UTC).
        out: the parquet file to write (the whole feature frame).
        which: `all` (every customer feature) or `subset` (the baseline's).

    Returns:
        Rows and features computed, and the output path.
    """
    sources = FeatureSources.from_directory(Path(world))
    rows = sources.customers.select(KEY).with_columns(
        pl.lit(datetime.fromisoformat(close)).cast(pl.Datetime("us", "UTC")).alias(CLOSE)
    )
    frame = _features(sources, rows, which)
    frame.write_parquet(out)
    return {"rows": frame.height, "features": frame.width - 2, "out": out}


def training_frame_ours(world: str, rows: str, out: str, which: str = "all") -> dict[str, Any]:
    """Benchmark entry point: the features of (customer_id, ts) rows, as of ts's close.

    Args:
        world: the data directory.
        rows: a parquet file of rows with customer_id and ts (UTC).
        out: the parquet file to write (the rows, close_ts and the features).
        which: `all` (every customer feature, with `features_at`) or `subset` (the
            baseline's).

    Returns:
        Rows and features computed, and the output path.
    """
    sources = FeatureSources.from_directory(Path(world))
    requests = pl.scan_parquet(rows).with_columns(close_of(pl.col("ts")).alias(CLOSE))
    if which == "subset":
        frame = _features(sources, requests, which)
    else:
        frame = features_at(sources, pl.scan_parquet(rows), FeatureSettings()).collect()
    frame.write_parquet(out)
    return {"rows": frame.height, "features": frame.width - 3, "out": out}


def _mismatches(outputs: dict[str, str], sample: int, seed: int = SEED) -> list[str]:
    """Differences on the subset between two outputs of the same rows, on a random sample.

    Args:
        outputs: two labels (e.g. ours, pandas) to the parquet files they wrote.
        sample: how many random rows to compare.
        seed: of the sample.

    Returns:
        Up to three differences per column, each naming the row and both values; a sampled
        row is compared feature by feature: integers exactly, floats to 1e-6, a null only
        with a null.
    """
    columns = ["customer_id", "close_ts", *SUBSET]
    (name_a, path_a), (name_b, path_b) = outputs.items()
    a, b = (pl.read_parquet(p, columns=columns) for p in (path_a, path_b))
    if a.height != b.height:
        return [f"rows: {name_a} {a.height}, {name_b} {b.height}"]
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(a.height, size=min(sample, a.height), replace=False))
    a, b = a[index], b[index]
    problems: list[str] = []
    for column in columns:
        left, right = a[column], b[column]
        if left.dtype.is_float() or right.dtype.is_float():
            both_null = left.is_null() & right.is_null()
            close = (left.cast(pl.Float64) - right.cast(pl.Float64)).abs() <= 1e-6
            bad = ~(both_null | close.fill_null(value=False))
        else:
            bad = ~left.eq_missing(right.cast(left.dtype))
        problems.extend(
            f"{column} row {index[i]}: {name_a} {left[int(i)]!r}, {name_b} {right[int(i)]!r}"
            for i in np.flatnonzero(bad.to_numpy())[:3]
        )
    return problems


def _figures(m: Measurement) -> dict[str, Any]:
    """The measurement with rows/s added."""
    out = m.figures()
    out["rows_per_s"] = round(m.result["rows"] / m.run_s)
    return out


def _speedup(ours: Measurement, pandas: Measurement) -> float:
    """Ours rows/s over the baseline's rows/s (above 1: ours is faster)."""
    return float((ours.result["rows"] / ours.run_s) / (pandas.result["rows"] / pandas.run_s))


HEADER = (
    "job",
    "rows",
    "features",
    "run s",
    "process s",
    "cpu s",
    "rows/s",
    "peak RSS GiB (tree)",
    "max ru_maxrss GiB",
    "other cpu s",
)


def _row(label: str, m: Measurement) -> tuple[str, ...]:
    rows = m.result["rows"]
    return (
        label,
        f"{rows:,}",
        str(m.result["features"]),
        f"{m.run_s:.1f}",
        f"{m.process_s:.1f}",
        f"{m.cpu_s:.0f}",
        f"{rows / m.run_s:,.0f}",
        f"{m.peak_rss_tree / GIB:.2f}",
        f"{max(m.ru_maxrss_self, m.ru_maxrss_children) / GIB:.2f}",
        f"{m.other_cpu_s:.0f}",
    )


@dataclass
class Job:
    """One job measured for ours (every feature, and the subset) and the baseline.

    Attributes:
        name: the job.
        ours: our every-feature run (the one the targets apply to).
        ours_subset: our engine on the baseline's subset only (for an equal comparison).
        pandas: the baseline.
        mismatches: differences on the subset between ours and the baseline, and between
            our two runs, on a random sample of rows (empty when they agree).
    """

    name: str
    ours: Measurement
    ours_subset: Measurement
    pandas: Measurement
    mismatches: list[str]

    def figures(self) -> dict[str, Any]:
        """The job's figures for the results file."""
        return {
            "ours": _figures(self.ours),
            "ours_subset": _figures(self.ours_subset),
            "pandas": _figures(self.pandas),
            "ratios": {
                "rows_per_s_ours_over_pandas": round(_speedup(self.ours, self.pandas), 3),
                "rows_per_s_ours_subset_over_pandas": round(
                    _speedup(self.ours_subset, self.pandas), 3
                ),
                "peak_rss_ours_over_pandas": round(
                    self.ours.peak_rss_tree / self.pandas.peak_rss_tree, 3
                ),
            },
            "compared_rows": min(SAMPLE_ROWS, self.pandas.result["rows"]),
            "mismatches": self.mismatches[:20],
        }

    def table_rows(self) -> list[tuple[str, ...]]:
        """The job's lines in the printed table."""
        return [
            _row(f"{self.name}: ours", self.ours),
            _row(f"{self.name}: ours, subset", self.ours_subset),
            _row(f"{self.name}: pandas, subset", self.pandas),
        ]


def _run_job(name: str, ours: str, pandas: str, kwargs: dict[str, Any], tmp: Path) -> Job:
    """Ours (every feature, then the subset) and the baseline, each in its own process."""
    runs = {
        label: measure(target, {**kwargs, **extra, "out": str(tmp / f"{label}.pq")}, tmp / label)
        for label, target, extra in (
            ("ours", ours, {}),
            ("ours_subset", ours, {"which": "subset"}),
            ("pandas", pandas, {}),
        )
    }
    outputs = {label: m.result["out"] for label, m in runs.items()}
    mismatches = [
        *_mismatches({k: outputs[k] for k in ("ours", "pandas")}, SAMPLE_ROWS),
        *_mismatches({k: outputs[k] for k in ("ours", "ours_subset")}, SAMPLE_ROWS),
    ]
    return Job(name, runs["ours"], runs["ours_subset"], runs["pandas"], mismatches)


def _latest_close(world: World, tmp: Path) -> Job:
    """Every customer at the world's last close."""
    kwargs = {"world": str(world.path), "close": world.last_close.isoformat()}
    return _run_job("latest close", OURS_LATEST, PANDAS_LATEST, kwargs, tmp)


def _training_frame(world: World, tmp: Path, rows: int) -> Job:
    """The same random (customer, ts) rows for every implementation."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = _write_rows(world, rows, tmp / "rows.parquet")
    kwargs = {"world": str(world.path), "rows": str(path)}
    return _run_job("training frame", OURS_TRAINING, PANDAS_TRAINING, kwargs, tmp)


def _report(title: str, jobs: list[Job]) -> None:
    print_table(title, [line for job in jobs for line in job.table_rows()], HEADER)
    for job in jobs:
        print(
            f"  {job.name}: rows/s ours over pandas {_speedup(job.ours, job.pandas):.2f} "
            f"(ours on the subset: {_speedup(job.ours_subset, job.pandas):.2f})"
        )


NOTE = (
    "rows/s = requested rows / wall time of the measured call (run_s: reading the parquet "
    "tables, computing, writing the output frame; interpreter start and imports excluded, "
    "process_s includes them). `ours` computes every customer feature (features): the time and "
    "memory targets apply to it. The pandas baseline computes only purchases and spend over "
    f"{'/'.join(map(str, WINDOWS))} days and days since the last purchase, on every requested "
    "row; `ours_subset` is our engine (features.windows) on those same aggregates, and the "
    "speed-up target applies to rows_per_s_ours_subset_over_pandas. "
    "rows_per_s_ours_over_pandas (every feature against the subset) is reported too. Outputs "
    f"are compared on the subset for a random sample of {SAMPLE_ROWS:,} rows. Peak RSS = "
    f"sampled peak of the summed RSS of the process tree (every {SAMPLE_SECONDS} s); "
    "ru_maxrss = the kernel's peak of one process. Other work on the machine (other_cpu_s) "
    "slows every run."
)


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A small simulated world for the smoke run."""
    return _simulate(tmp_path_factory.mktemp("features-smoke"), SMOKE_CUSTOMERS, SMOKE_DAYS)


def test_smoke_both_implementations_agree_and_the_figures_are_written(
    smoke_world: World, tmp_path: Path
) -> None:
    # given a small world and random (customer, ts) rows
    # when ours and the baseline run each job in fresh processes
    jobs = [
        _latest_close(smoke_world, tmp_path / "latest"),
        _training_frame(smoke_world, tmp_path / "training", SMOKE_ROWS),
    ]
    path = write_results(
        "features_smoke",
        {
            "note": "smoke size only: the figures say nothing about scale. " + NOTE,
            "world": {"customers": SMOKE_CUSTOMERS, "days": SMOKE_DAYS, "seed": SEED},
            "latest_close": jobs[0].figures(),
            "training_frame": jobs[1].figures(),
        },
    )
    _report("features smoke (ours vs pandas baseline)", jobs)

    # then every run computed every row, they agree on the subset, and the figures are there
    for job in jobs:
        assert job.mismatches == []
        assert job.ours.result["rows"] == job.pandas.result["rows"]
        assert job.ours.result["features"] > len(SUBSET)
    assert jobs[0].ours.result["rows"] == SMOKE_CUSTOMERS
    assert jobs[1].ours.result["rows"] == SMOKE_ROWS
    written = path.read_text()
    assert '"rows_per_s_ours_over_pandas"' in written
    assert '"peak_rss_tree"' in written


@pytest.fixture(scope="module")
def full_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The 1,000,000-customer world over a year (about 20M transactions, 15M claims)."""
    return _simulate(tmp_path_factory.mktemp("features-full"), FULL_CUSTOMERS, FULL_DAYS)


@pytest.mark.bench
def test_one_million_customers_latest_close_and_training_frame_within_2_minutes_and_8_gib(
    full_world: World, tmp_path: Path
) -> None:
    # given the full world, and 1,000,000 random (customer, ts) rows
    # when ours and the baseline run each job in their own processes
    jobs = [
        _latest_close(full_world, tmp_path / "latest"),
        _training_frame(full_world, tmp_path / "training", FULL_ROWS),
    ]
    write_results(
        "features",
        {
            "note": NOTE,
            "world": {"customers": FULL_CUSTOMERS, "days": FULL_DAYS, "seed": SEED},
            "limits": {
                "process_s": TIME_LIMIT_S,
                "peak_rss_bytes": MEMORY_LIMIT_BYTES,
                "min_rows_per_s_ours_subset_over_pandas": MIN_SPEEDUP,
            },
            "latest_close": jobs[0].figures(),
            "training_frame": jobs[1].figures(),
        },
    )
    _report("features benchmark (ours: every feature; pandas: the subset)", jobs)

    # then all agree, and ours meets the time, memory and speed-up targets on both jobs
    for job in jobs:
        assert job.mismatches == [], job.name
        assert job.ours.result["rows"] == job.pandas.result["rows"], job.name
    assert _missed_targets(jobs) == []


def _missed_targets(jobs: list[Job]) -> list[str]:
    """Every target a job of ours misses, with the figure (all of them, not the first)."""
    missed = []
    for job in jobs:
        ours, speedup = job.ours, _speedup(job.ours_subset, job.pandas)
        if ours.process_s >= TIME_LIMIT_S:
            missed.append(f"{job.name}: {ours.process_s:.0f} s >= {TIME_LIMIT_S:.0f} s")
        peak = max(ours.peak_rss_tree, ours.sum_of_process_peaks)
        if peak >= MEMORY_LIMIT_BYTES:
            missed.append(f"{job.name}: peak RSS {peak / GIB:.2f} GiB >= 8 GiB")
        if speedup < MIN_SPEEDUP:
            missed.append(
                f"{job.name}: rows/s ours (subset) over pandas {speedup:.2f} < {MIN_SPEEDUP}"
            )
    return missed
