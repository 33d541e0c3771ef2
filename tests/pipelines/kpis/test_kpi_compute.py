"""`cashback kpis compute`: printed tables, exported files, and clear refusals."""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from cashback.settings import Settings
from pipelines.kpi_compute import run
from tests.console_script import run_cashback
from tests.pipelines.kpis.small_program import small_program


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cashback(
        "kpis", "compute", *args, cwd=data_dir, env={"CASHBACK_DATA_DIR": str(data_dir)}
    )


def test_the_cli_prints_and_exports_the_kpis_by_channel(tmp_path: Path) -> None:
    # given a small program
    data = tmp_path / "data"
    small_program(data)

    # when its KPIs by channel are exported as parquet
    done = _cli(data, "--by", "channel", "--out", str(tmp_path / "out"), "--format", "parquet")

    # then the files hold what the library computes, and the tables are printed
    assert done.returncode == 0, done.stderr
    expected = run(Settings(data_dir=data, ip_pepper="test-pepper-not-a-secret"), by="channel")
    written = pl.read_parquet(tmp_path / "out" / "kpis.parquet")
    assert_frame_equal(written, expected.result.table)
    assert (tmp_path / "out" / "cashback.parquet").exists()
    assert "customers 2025-01-01" in done.stdout
    for channel in ("online", "store", "app"):
        assert channel in done.stdout
    assert "no randomized exposures" in done.stdout


def test_a_window_after_the_data_is_refused_with_the_reason(tmp_path: Path) -> None:
    # given a small program whose orders end in 2025
    small_program(tmp_path)

    # when KPIs are asked for a window that ends before it starts
    done = _cli(tmp_path, "--from", "2025-03-01", "--to", "2025-02-01")

    # then the command fails with one line naming the window, and writes nothing
    assert done.returncode == 1
    assert "holds no month" in done.stderr
    assert "Traceback" not in done.stderr
