"""Helpers of the statistics tests: the Cookie Cats data, and reference libraries run apart.

gbstats 0.8 needs pandas<2 and numpy<2, so it cannot live in the project's environment; nor
is statsmodels a project dependency. Both run in one isolated throw-away environment built
by uv, fed JSON and answering JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_file

REFERENCE_ENV = (
    "run", "--isolated", "--no-project",
    "--with", "gbstats==0.8.0", "--with", "statsmodels==0.14.4", "python",
)  # fmt: skip


def _uv() -> list[str] | None:
    """How to call uv: `UV_COMMAND` (the Makefile exports the one it uses), else `uv`."""
    command = os.environ.get("UV_COMMAND")
    if command:
        return shlex.split(command)
    found = shutil.which("uv")
    return [found] if found else None


READY = "references imported"

# the marker checks the env was built; each script imports only what it uses (imports are slow)
HEADER = f"""\
import json
from importlib.metadata import version
version("gbstats"), version("statsmodels")
print({READY!r}, flush=True)
with open("payload.json") as handle:
    payload = json.load(handle)
"""

FOOTER = """
print(json.dumps(result))
"""


def run_reference(script: str, payload: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """Run a script under gbstats 0.8.0 and statsmodels 0.14.4 in an isolated env (or skip).

    The script finds its input as `payload` and leaves its answer, JSON-serializable, in
    `result`. Before the marker line the environment could not be built or imported (skip);
    after it, any failure is the test's.
    """
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed")
    (directory / "payload.json").write_text(json.dumps(payload))
    path = directory / "reference.py"
    path.write_text(HEADER + textwrap.dedent(script) + FOOTER)
    try:
        done = subprocess.run(
            [*uv, *REFERENCE_ENV, str(path)],
            capture_output=True, text=True, timeout=300, check=False, cwd=directory,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("isolated reference env timed out")
    if READY not in done.stdout:
        pytest.skip(f"isolated reference env unavailable: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True)
class Variants:
    """Per-customer metric arrays of control (gate_30) and treatment (gate_40)."""

    control: dict[str, np.ndarray]
    treatment: dict[str, np.ndarray]


COOKIE_METRICS = ("retention_1", "retention_7", "sum_gamerounds")


@cache
def load_cookie_cats(path: Path) -> Variants:
    """Cookie Cats per player: gate_30 is the control, gate_40 the treatment."""
    frame = pl.read_csv(path)

    def arrays(version: str) -> dict[str, np.ndarray]:
        rows = frame.filter(pl.col("version") == version)
        return {m: rows[m].cast(pl.Float64).to_numpy() for m in COOKIE_METRICS}

    return Variants(control=arrays("gate_30"), treatment=arrays("gate_40"))


def cookie_cats() -> Variants:
    """The real Cookie Cats data of ../shared/data (skip when absent)."""
    return load_cookie_cats(shared_file("cookie_cats/cookie_cats.csv"))
