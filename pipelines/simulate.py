"""Job: simulate a cashback program with ground truth (`cashback data simulate`)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, cast

import numpy as np

from cashback.errors import CashbackError
from cashback.progress import progress_bar
from cashback.settings import Settings
from cashback.tables import ParquetAppender, TableWriter, staged_directory, write_table
from pipelines.simulation.catalog import build_experiments, build_merchants, build_offers
from pipelines.simulation.chunk import WorldContext, simulate_chunk
from pipelines.simulation.world import (
    WorldConfig,
    calendar_days,
    season_components,
    season_matrix,
    segment_arrays,
)

CHUNKED_TABLES = (
    "customers",
    "transactions",
    "exposures",
    "claims",
    "claim_labels",
    "assignments",
)
TRUTH_TABLES = ("truth/customers", "truth/claims", "truth/exposures")
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


def world_context(config: WorldConfig, pepper: bytes) -> WorldContext:
    """What every chunk of the world shares."""
    segments = segment_arrays(config)
    days = calendar_days(config)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(MERCHANT_STREAM,)))
    merchants, cdfs = build_merchants(config, segments, rng)
    return WorldContext(
        config=config,
        segments=segments,
        season=season_matrix(segments, days),
        seasonal_offer_days=season_components(days)["seasonal_offer"],
        merchant_cdf=cdfs,
        merchant_ids=merchants["merchant_id"].to_list(),
        pepper=pepper,
    )


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
    ctx = world_context(config, settings.ip_pepper_bytes())
    chunks = list(range(0, config.customers, config.chunk_customers))
    with staged_directory(out) as stage, ExitStack() as stack:
        writers: dict[str, ParquetAppender] = {
            name: stack.enter_context(TableWriter(stage, name)) for name in CHUNKED_TABLES
        }
        for name in TRUTH_TABLES:
            writers[name] = stack.enter_context(ParquetAppender(stage / f"{name}.parquet"))
        with progress_bar(f"simulating {config.customers:,} customers", len(chunks)) as advance:
            for number, offset in enumerate(chunks):
                n = min(config.chunk_customers, config.customers - offset)
                for name, frame in simulate_chunk(ctx, number, offset, n).items():
                    writers[name].write(frame)
                advance(1)
        merchants, _ = build_merchants(
            config,
            ctx.segments,
            np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(MERCHANT_STREAM,))),
        )
        write_table(stage, "merchants", merchants)
        write_table(stage, "offers", build_offers(config))
        write_table(stage, "experiments", build_experiments(config))
        (stage / "truth" / "world.json").write_text(config.to_json())
        rows = {name: w.rows for name, w in writers.items()}
        rows["merchants"] = merchants.height
    return SimulationSummary(out=out, rows=rows)
