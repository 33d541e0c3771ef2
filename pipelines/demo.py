"""Job: the demo end to end (`cashback demo`, what `make run` calls).

Builds whatever is absent, in order, on the embedded defaults: the simulated world in the
data directory (later steps add features, models and the API), and says where it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from cashback.settings import Settings
from cashback.tables import present_tables, scan_parquet_path, table_path
from pipelines import simulate


def run(settings: Settings) -> Iterator[str]:
    """Build the demo's artefacts if absent.

    Args:
        settings: the service settings (data directory, simulation defaults).

    Yields:
        Lines saying what was built or found, and where.
    """
    data = settings.data_dir
    if "transactions" in present_tables(data):
        yield f"demo world found in {data}/ (remove it to rebuild: make clean-data)"
    else:
        config = simulate.world_config(settings)
        yield (
            f"simulating the demo world: {config.customers:,} customers over {config.days} "
            f"days from {config.start} (seed {config.seed}, preset {config.preset})"
        )
        simulate.run(config, data, settings)
        yield f"demo world written to {data}/"
    for name in present_tables(data):
        rows = scan_parquet_path(table_path(data, name)).select(pl.len()).collect().item()
        yield f"  {name:<14} {rows:>12,} rows   {table_path(data, name)}"
    yield f"  ground truth: {data / 'truth'}/ (segments, true fraud, explored exposures)"
    yield f"check it: cashback data validate {data}"
