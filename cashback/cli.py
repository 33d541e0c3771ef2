"""The `cashback` command line: one group per resource, each command a thin call into a job."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cashback.errors import CashbackError
from cashback.progress import enable_progress, progress_bar
from cashback.settings import get_settings

app = typer.Typer(
    name="cashback",
    help="cashback-ml: features, models, experiments and an API for cashback programs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Simulate, import and validate contract data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
features_app = typer.Typer(
    help="Build the feature tables and register them in the Feast repo.", no_args_is_help=True
)
app.add_typer(features_app, name="features")

out_console = Console()
err_console = Console(stderr=True)


class Preset(StrEnum):
    """Worlds the simulator can build."""

    DEFAULT = "default"
    HARD = "hard"


class Source(StrEnum):
    """Importable sources: built-in mappings, or `mapped` with a YAML mapping."""

    ONLINE_RETAIL = "online_retail"
    HILLSTROM = "hillstrom"
    COOKIE_CATS = "cookie_cats"
    MAPPED = "mapped"


@app.callback()
def _root() -> None:
    enable_progress(sys.stderr.isatty())


@data_app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option(help="directory to write the contract tables and truth/")],
    customers: Annotated[int | None, typer.Option(help="number of customers", min=10)] = None,
    days: Annotated[int | None, typer.Option(help="days simulated", min=14)] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (same seed, same bytes)")] = None,
    preset: Annotated[
        Preset, typer.Option(help="default, or hard: weaker signals")
    ] = Preset.DEFAULT,
    start: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
) -> None:
    """Simulate a cashback program with ground truth (written under OUT/truth)."""
    from pipelines.simulate import run, world_config  # noqa: PLC0415 (keeps --help fast)

    settings = get_settings()
    config = world_config(
        settings, customers=customers, days=days, seed=seed, preset=preset.value, start=start
    )
    summary = run(config, out, settings)
    _print_counts(f"simulated world written to {out}", summary.rows)


@data_app.command("import")
def import_data(
    source: Annotated[Source, typer.Argument(help="which mapping to apply")],
    path: Annotated[Path, typer.Argument(help="the file (or folder) to import")],
    out: Annotated[Path, typer.Option(help="directory to write the contract tables")],
    mapping: Annotated[
        Path | None, typer.Option(help="YAML column mapping (with SOURCE=mapped)")
    ] = None,
) -> None:
    """Import a real data set onto the contract (built-in mappings or a YAML mapping)."""
    from pipelines.data_import import run  # noqa: PLC0415

    with progress_bar(f"importing {path.name} ({source.value})"):
        summary = run(source.value, path, out, get_settings(), mapping=mapping)
    _print_counts(f"imported {path.name} into {out}", summary.rows)
    if summary.left_out:
        _print_counts("rows left out, by reason", summary.left_out)
    for note in summary.notes:
        out_console.print(f"note: {escape(note)}", soft_wrap=True)


@data_app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="a directory of contract tables")],
) -> None:
    """Check every table in DIRECTORY against the contract; exit 1 on any violation."""
    from cashback.tables import validate_directory  # noqa: PLC0415

    with progress_bar(f"validating {directory}"):
        report = validate_directory(directory)
    if report.ok:
        out_console.print(f"{directory}: all tables satisfy the contract")
        return
    table = Table("table", "row", "column", "rule", "message", title=f"{report.total} violation(s)")
    for v in report.violations.iter_rows(named=True):
        cells = (v["table"], str(v["row"] or "-"), v["column"], v["rule"], v["message"])
        table.add_row(*(escape(str(c)) for c in cells))
    out_console.print(table)
    counts = Table("table", "column", "rule", "rows", title="violations per rule")
    for c in report.counts.iter_rows(named=True):
        counts.add_row(*(escape(str(c[k])) for k in ("table", "column", "rule", "n")))
    out_console.print(counts)
    raise typer.Exit(code=1)


def _parse_close(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        msg = f"close {text!r} is not a date: expected YYYY-MM-DD (the close is 00:00 UTC)"
        raise CashbackError(msg) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@features_app.command("build")
def features_build(
    close: Annotated[
        str | None, typer.Option(help="close date YYYY-MM-DD (default: after the last event)")
    ] = None,
) -> None:
    """Compute every batch feature table as of a daily close (00:00 UTC)."""
    from pipelines.build_features import run  # noqa: PLC0415

    built = run(get_settings(), _parse_close(close))
    _print_counts(f"feature tables as of {built.close:%Y-%m-%d %H:%M} UTC", built.rows)


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.store import apply  # noqa: PLC0415

    settings = get_settings()
    with progress_bar("feast apply"):
        names = apply(settings)
    out_console.print(
        f"registered {len(names)} Feast objects in {settings.feature_dir}: {', '.join(names)}",
        soft_wrap=True,
        highlight=False,
    )


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None,
        typer.Option(help="rows up to this time, ISO 8601 (default: the built tables' close)"),
    ] = None,
) -> None:
    """Load the batch tables into the online store, incrementally (newer rows only)."""
    from features.store import materialize_tables  # noqa: PLC0415

    settings = get_settings()
    with progress_bar(f"materializing into the {settings.feature_store.online_store} store"):
        reports = materialize_tables(settings, _parse_time(end) if end else None)
    table = Table("view", "window", "entities", "written", "seconds", title="materialized")
    for r in reports:
        window = (
            f"{r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M}"
            if r.start
            else f".. {r.end:%Y-%m-%d %H:%M}"
        )
        table.add_row(
            r.feature_view, window, f"{r.entities:,}", f"{r.written:,}", f"{r.seconds:.1f}"
        )
    out_console.print(table)


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"time {text!r} is not ISO 8601 (e.g. 2025-12-31T00:00:00+00:00)"
        raise CashbackError(msg) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("demo")
def demo() -> None:
    """Build the demo world (if absent) and every artefact later steps add; say where they are."""
    from pipelines.demo import run  # noqa: PLC0415

    for line in run(get_settings()):
        out_console.print(escape(line), soft_wrap=True, highlight=False)


def _print_counts(title: str, counts: dict[str, int]) -> None:
    table = Table("what", "rows", title=title)
    for name, n in counts.items():
        table.add_row(escape(name), f"{n:,}")
    out_console.print(table)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except (CashbackError, FileNotFoundError, PermissionError, ValidationError) as error:
        message = " ".join(str(error).split()) if isinstance(error, ValidationError) else error
        err_console.print(
            f"[red]error:[/red] {escape(str(message))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
