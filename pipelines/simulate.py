"""Job: simulate a cashback program with ground truth (`cashback data simulate`)."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, cast

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.progress import progress_bar
from cashback.settings import Settings
from cashback.tables import staged_directory, write_parquet_atomic, write_table, write_table_part
from pipelines.simulation.catalog import build_experiments, build_merchants, build_offers
from pipelines.simulation.chunk import WorldContext, simulate_chunk
from pipelines.simulation.world import (
    OFFERS,
    WorldConfig,
    calendar_days,
    season_components,
    season_matrix,
    segment_arrays,
)

MERCHANT_STREAM = 1 << 20  # spawn key of the merchants' random stream (chunks use 0..)


@dataclass(frozen=True)
class SimulationSummary:
    """Rows written per table."""

    out: Path
    rows: dict[str, int]


def world_config(
    settings: Settings,
    *,
    customers: int | None = None,
    days: int | None = None,
    seed: int | None = None,
    preset: str = "default",
    start: str | None = None,
) -> WorldConfig:
    """The world to simulate: settings, overridden by what the caller gives.

    Raises:
        CashbackError: for an unknown preset or a malformed start date.
    """
    sim = settings.simulation
    if preset not in ("default", "hard"):
        msg = f"unknown preset {preset!r}: expected default or hard"
        raise CashbackError(msg)
    start_text = start or sim.start
    try:
        start_day = date.fromisoformat(start_text)
    except ValueError:
        msg = f"start {start_text!r} is not a date: expected YYYY-MM-DD"
        raise CashbackError(msg) from None
    return WorldConfig(
        customers=customers or sim.customers,
        days=days or sim.days,
        seed=sim.seed if seed is None else seed,
        start=start_day,
        preset=cast("Literal['default', 'hard']", preset),
        fraud_share=sim.fraud_share,
        audit_share=sim.audit_share,
        exploration=sim.exploration,
        rate_grid=tuple(sorted(sim.rate_grid)),
        holdout_share=sim.holdout_share,
        default_rate=settings.default_rate,
        exposure_days=settings.exposure_days,
        chunk_customers=sim.chunk_customers,
    )


def world_context(config: WorldConfig, pepper: bytes) -> tuple[WorldContext, pl.DataFrame]:
    """What every chunk of the world shares, and the merchants table."""
    segments = segment_arrays(config)
    days = calendar_days(config)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(MERCHANT_STREAM,)))
    merchants, cdfs = build_merchants(config, segments, rng)
    context = WorldContext(
        config=config,
        segments=segments,
        season=season_matrix(segments, days),
        seasonal_offer_days=season_components(days)["seasonal_offer"],
        merchant_cdf=cdfs,
        merchant_ids=merchants["merchant_id"].to_list(),
        pepper=pepper,
    )
    return context, merchants


def _simulate_parts(
    ctx: WorldContext, number: int, offset: int, n: int, stage: Path
) -> dict[str, int]:
    """Simulate one chunk and write its part of every table; rows written per table."""
    rows: dict[str, int] = {}
    for name, frame in simulate_chunk(ctx, number, offset, n).items():
        if name.startswith("truth/"):
            write_parquet_atomic(frame, stage / f"{name}.parquet" / f"part-{number:05d}.parquet")
        else:
            write_table_part(stage, name, number, frame)
        rows[name] = frame.height
    return rows


def _chunk_rows(
    ctx: WorldContext, offsets: list[int], workers: int, stage: Path
) -> Iterator[dict[str, int]]:
    """Simulate and write every chunk with up to `workers` processes; rows per chunk.

    Each chunk has its own random stream and writes its own parts, so the files do not
    depend on the number of workers.
    """
    size, total = ctx.config.chunk_customers, ctx.config.customers
    jobs = [(ctx, i, off, min(size, total - off), stage) for i, off in enumerate(offsets)]
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            yield _simulate_parts(*job)
        return
    spawn = multiprocessing.get_context("spawn")  # polars is not fork-safe
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        futures = [pool.submit(_simulate_parts, *job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def run(config: WorldConfig, out: Path, settings: Settings) -> SimulationSummary:
    """Simulate the world chunk by chunk, streaming every table to parquet under `out`.

    The directory is built aside and swapped in only when complete; `truth/` holds the
    ground truth (segments, parameters, true fraud, explored exposures, world.json).

    Args:
        config: the world.
        out: the data directory to write.
        settings: for the IP pepper.

    Returns:
        Rows written per table.
    """
    ctx, merchants = world_context(config, settings.ip_pepper_bytes())
    workers = settings.simulation.workers
    offsets = list(range(0, config.customers, config.chunk_customers))
    rows: Counter[str] = Counter()
    with staged_directory(out) as stage:
        title = f"simulating {config.customers:,} customers"
        with progress_bar(title, len(offsets)) as advance:
            for chunk_rows in _chunk_rows(ctx, offsets, workers, stage):
                rows.update(chunk_rows)
                advance(1)
        write_table(stage, "merchants", merchants)
        write_table(stage, "offers", build_offers(config))
        write_table(stage, "experiments", build_experiments(config))
        (stage / "truth" / "world.json").write_text(config.to_json())
    rows.update(merchants=merchants.height, offers=len(OFFERS) + 1, experiments=1)
    return SimulationSummary(out=out, rows=dict(rows))
