"""`cashback experiments report KEY --out FILE.html`: the analysis as one page for marketers.

Analyses the experiment as `cashback experiments analyze` does (same options, results not
written), builds the page with `models.experiments.report` and writes it atomically: one
self-contained HTML file, to open in any browser or attach to an e-mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cashback.reports import write_report
from cashback.settings import Settings
from models.experiments.analysis import ExperimentAnalysis
from models.experiments.multiple_testing import Method
from models.experiments.report import experiment_report
from models.experiments.store import ExperimentStore
from pipelines.experiment_analysis import run as analyze


@dataclass(frozen=True)
class Reported:
    """The analysis and the page it was written to."""

    analysis: ExperimentAnalysis
    path: Path


def hypothesis(settings: Settings, key: str) -> str | None:
    """The stored definition's hypothesis (None for simulated or imported experiments)."""
    store = ExperimentStore.from_settings(settings)
    defined = {row.key: row.defined for row in store.list_experiments()}
    return store.get(key).hypothesis if defined.get(key) else None


def run(
    settings: Settings,
    key: str,
    out: Path,
    *,
    cap: float | None = None,
    correction: Method | None = None,
    primary: str | None = None,
    as_of: datetime | None = None,
) -> Reported:
    """Analyse experiment `key` and write its report to `out`.

    Args:
        settings: the data directory and `experiments` settings.
        key: the experiment's key (or experiment_id).
        out: the HTML file to write.
        cap: cap mean metrics at this pooled quantile (default: the setting).
        correction: "holm" or "bh" (default: the setting).
        primary: the primary metric (default: the definition's, else the setting's).
        as_of: analyse the data before this time only (default: all of it).

    Returns:
        The analysis and the file written.

    Raises:
        CashbackError: as `pipelines.experiment_analysis.run`.
    """
    analysis = analyze(
        settings, key, cap=cap, correction=correction, primary=primary, as_of=as_of, write=False
    ).analysis
    report = experiment_report(
        analysis,
        power=settings.experiments.power,
        hypothesis=hypothesis(settings, analysis.design.key),
    )
    return Reported(analysis, write_report(report, out))
