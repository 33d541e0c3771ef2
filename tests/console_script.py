"""Run the installed `cashback` console script as a user would, in a plain, wide terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASHBACK = Path(sys.executable).with_name("cashback")


def run_cashback(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cashback ARGS` in `cwd`, without the caller's CASHBACK_* variables, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CASHBACK_")}
    clean.update(COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONIOENCODING="utf-8")
    clean.update(env or {})
    return subprocess.run(
        [str(CASHBACK), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=clean,
        timeout=120,
        check=False,
    )
