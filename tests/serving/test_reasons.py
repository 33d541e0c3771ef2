"""The thread that explains flagged claims off the request path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cashback.settings import Settings
from serving.db import Database
from serving.metrics import Metrics
from serving.reasons import ReasonWorker

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)


def _worker(tmp_path: Path, niceness: int) -> ReasonWorker:
    database = Database(Settings(data_dir=tmp_path))
    return ReasonWorker(database, lambda: None, Metrics(), batch=8, count=3, niceness=niceness)


@pytest.mark.parametrize("niceness", [0, 7])
def test_the_reasons_thread_yields_the_core_to_requests_by_its_niceness(
    tmp_path: Path, niceness: int
) -> None:
    # given a worker set to lower its priority, started from this thread
    worker = _worker(tmp_path, niceness)
    before = os.getpriority(os.PRIO_PROCESS, 0)

    # when it runs
    worker.start()
    thread = worker._thread.native_id
    assert thread is not None
    priority = os.getpriority(os.PRIO_PROCESS, thread)
    worker.stop()

    # then only its own thread runs lower, by the niceness; the caller's priority is unchanged
    assert priority == min(before + niceness, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
