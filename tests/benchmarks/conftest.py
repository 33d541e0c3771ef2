"""Benchmark helpers: run a function in a fresh process, measure it, write the figures.

`measure` starts `python -c WRAPPER module:function kwargs` so that every run pays its own
imports and starts from an empty heap. While it runs, the parent samples the resident set
size (RSS) of the whole process tree with psutil: the peak of the sum over processes, and
the sum of each process's own peak (an upper bound of the first, for sampling can miss a
short spike). The wrapper adds the kernel's figures for a cross-check: `ru_maxrss` of the
process itself and of its largest waited-for child.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
SAMPLE_SECONDS = 0.2
GIB = 1024**3

WRAPPER = """
import importlib, json, resource, sys, time
root, target, kwargs, result_path = sys.argv[1:5]
sys.path.insert(0, root)
module, _, name = target.partition(":")
function = getattr(importlib.import_module(module), name)
started = time.perf_counter()
result = function(**json.loads(kwargs))
elapsed = time.perf_counter() - started
own = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
with open(result_path, "w") as f:
    json.dump({"result": result, "run_s": elapsed, "cpu_s": cpu,
               "ru_maxrss_self": own.ru_maxrss * 1024,
               "ru_maxrss_children": children.ru_maxrss * 1024}, f)
"""


class BenchmarkProcessError(RuntimeError):
    """The measured process failed; the message holds the end of its output."""


@dataclass
class Measurement:
    """What one measured run cost.

    Attributes:
        target: `module:function` that ran.
        kwargs: its arguments.
        result: what the function returned (JSON).
        run_s: wall time of the function call alone.
        process_s: wall time of the whole process (interpreter start and imports included).
        cpu_s: user and system CPU time of the process and its children (imports included).
        other_cpu_s: CPU time the rest of the machine used during the run (busy CPU time of
            all processes minus `cpu_s`): other work slows the run, a pool of worker
            processes the most.
        peak_rss_tree: peak of the summed RSS of the process and its descendants (sampled).
        sum_of_process_peaks: sum over processes of each one's peak RSS (sampled).
        ru_maxrss_self: the kernel's peak RSS of the main process.
        ru_maxrss_children: the kernel's peak RSS of its largest waited-for child.
        processes: number of distinct processes seen in the tree.
        samples: number of samples taken.
    """

    target: str
    kwargs: dict[str, Any]
    result: dict[str, Any]
    run_s: float
    process_s: float
    cpu_s: float
    other_cpu_s: float
    peak_rss_tree: int
    sum_of_process_peaks: int
    ru_maxrss_self: int
    ru_maxrss_children: int
    processes: int
    samples: int

    def figures(self) -> dict[str, Any]:
        """The measurement as a JSON-ready dict, with sizes also in GiB."""
        out = asdict(self)
        for key in ("peak_rss_tree", "sum_of_process_peaks"):
            out[f"{key}_gib"] = round(out[key] / GIB, 3)
        return out


def _tree_rss(root: psutil.Process, peaks: dict[int, int]) -> int:
    """Summed RSS of `root` and its descendants now; updates each process's peak."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in processes:
        try:
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += rss
        peaks[proc.pid] = max(peaks.get(proc.pid, 0), rss)
    return total


def _busy_cpu_s() -> float:
    """CPU time spent by every process on the machine so far (all cores, idle excluded)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def _kill_tree(proc: psutil.Process) -> None:
    """Kill the measured process and its descendants (only those: it started them)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.kill()
    proc.wait()


def measure(
    target: str, kwargs: dict[str, Any], workdir: Path, timeout_s: float = 1800.0
) -> Measurement:
    """Run `target(**kwargs)` in a fresh Python process and measure time and memory.

    Args:
        target: `module:function`, importable from the project root; it returns a JSON-able
            dict.
        kwargs: JSON-able keyword arguments.
        workdir: where the process's output log and result file go.
        timeout_s: the process is killed after this long.

    Returns:
        The measurement.

    Raises:
        BenchmarkProcessError: when the process fails or times out.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    name = target.rsplit(":", 1)[-1]
    result_path, log_path = workdir / f"{name}.result.json", workdir / f"{name}.log"
    argv = [sys.executable, "-c", WRAPPER, str(PROJECT_ROOT), target, json.dumps(kwargs)]
    peaks: dict[int, int] = {}
    peak_sum = samples = 0
    busy_before = _busy_cpu_s()
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = psutil.Popen([*argv, str(result_path)], stdout=log, stderr=subprocess.STDOUT)
        while True:
            peak_sum = max(peak_sum, _tree_rss(proc, peaks))
            samples += 1
            try:
                code = proc.wait(timeout=SAMPLE_SECONDS)
                break
            except psutil.TimeoutExpired:
                if time.perf_counter() - started > timeout_s:
                    _kill_tree(proc)
                    code = None
                    break
        process_s = time.perf_counter() - started
    busy = _busy_cpu_s() - busy_before
    if code != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        msg = f"{target} failed (exit {code}, {process_s:.0f} s); its output ends:\n{tail}"
        raise BenchmarkProcessError(msg)
    done = json.loads(result_path.read_text())
    return Measurement(
        target=target,
        kwargs=kwargs,
        result=done["result"],
        run_s=done["run_s"],
        process_s=process_s,
        cpu_s=done["cpu_s"],
        other_cpu_s=max(busy - done["cpu_s"], 0.0),
        peak_rss_tree=peak_sum,
        sum_of_process_peaks=sum(peaks.values()),
        ru_maxrss_self=done["ru_maxrss_self"],
        ru_maxrss_children=done["ru_maxrss_children"],
        processes=len(peaks),
        samples=samples,
    )


def _git_commit() -> str | None:
    """The commit measured (a read-only `git rev-parse`), None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """The machine and library versions the figures were measured with."""
    libraries = {}
    for lib in ("numpy", "pandas", "polars", "pyarrow", "psutil"):
        libraries[lib] = version(lib)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_gib": round(psutil.virtual_memory().total / GIB, 1),
        "libraries": libraries,
        "git_commit": _git_commit(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` with the payload, the machine and the time."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """Print an aligned plain-text table (shown by `make bench`, which runs with -s)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
