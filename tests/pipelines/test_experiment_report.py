"""`cashback experiments report`: the page's numbers are the analysis', and Chromium draws it.

The content tests read the report's blocks and its rendered text; the browser tests render
the simulated world's rate-boost report and Hillstrom's in the system's headless Chromium,
at desktop and phone widths, and check the key numbers are shown and every plot drew.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from cashback import cli
from cashback.errors import CashbackError
from cashback.reports import KeyNumbers, Note, Plot, Report, Table, Verdict, render
from cashback.settings import Settings
from models.experiments.analysis import AnalysisOptions, Design, ExperimentAnalysis, analyze
from models.experiments.report import experiment_report
from pipelines.data_import import run as import_data
from pipelines.experiment_report import run
from tests.browser import DESKTOP, PHONE, OpenPage, Viewport
from tests.conftest import shared_file
from tests.models.experiments import handmade
from tests.models.experiments.test_analysis import SPECS, synthetic
from tests.models.experiments.test_analysis import design as synthetic_design
from tests.pipelines.test_experiment_analysis import write

POWER = 0.8


class _Text(HTMLParser):
    """The text of a page, outside <style> and the plots' SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in {"style", "svg"}

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in {"style", "svg"}

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(report: Report) -> str:
    parser = _Text()
    parser.feed(render(report))
    return " ".join(" ".join(parser.parts).split())


def blocks(report: Report, kind: type) -> list:
    return [b for s in report.sections for b in s.blocks if isinstance(b, kind)]


def section(report: Report, heading: str) -> list:
    return list(next(s for s in report.sections if s.heading == heading).blocks)


def table_named(report: Report, caption: str) -> Table:
    return next(t for t in blocks(report, Table) if t.caption.startswith(caption))


def primary_words(analysis: ExperimentAnalysis, variant: str) -> tuple[str, str]:
    """The primary lift as the analysis words it, recomputed here from its numbers."""
    relative = analysis.lift(analysis.primary_metric, variant).relative
    return (
        f"{relative.estimate:+.1%}",
        f"95 % CI {relative.ci_low:+.1%} to {relative.ci_high:+.1%}",
    )


def key_numbers_of(analysis: ExperimentAnalysis) -> list[str]:
    """Customers per variant, the primary lift with its CI, the chance to beat control."""
    numbers = [f"{n:,}" for n in analysis.srm.observed]
    for variant in analysis.design.treatments:
        lift = analysis.lift(analysis.primary_metric, variant)
        assert lift.bayesian is not None
        numbers += [
            *primary_words(analysis, variant),
            f"{lift.bayesian.absolute.chance_to_win:.0%}",
        ]
    return numbers


def spend_analysis(
    frame: pl.DataFrame, *, design: Design | None = None, guardrail_metrics: Sequence[str] = ()
) -> ExperimentAnalysis:
    """The analysis of synthetic customers, spend as the primary metric."""
    return analyze(
        design or synthetic_design(),
        frame,
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
        guardrail_metrics=guardrail_metrics,
    )


# ----------------------------------------------------------------------------- content


def test_the_page_shows_the_analysis_numbers_as_the_analysis_words_them(
    settings: Settings, tmp_path: Path
) -> None:
    # given the hand-made experiment on the contract tables
    write(settings)
    # when writing its report
    done = run(settings, handmade.KEY, tmp_path / "report.html")
    analysis = done.analysis
    report = experiment_report(analysis, power=POWER)
    # then the page is written whole, and the report is built from the analysis alone
    assert done.path.read_text(encoding="utf-8") == render(report)
    text = page_text(report)
    # the verdict comes first, in the analysis' words
    verdict = section(report, "Verdict")[0]
    assert isinstance(verdict, Verdict)
    assert verdict.text == analysis.verdicts[0].text
    assert analysis.verdicts[0].text in text
    # and the key numbers: customers per variant, primary lift and CI, chance to win
    (numbers,) = blocks(report, KeyNumbers)
    items = {item.label: item for item in numbers.items}
    assert items["Customers in control"].value == "3"
    assert items["Customers in treatment"].value == "4"
    estimate, interval = primary_words(analysis, "treatment")
    primary = items["net incremental margin lift, treatment"]
    assert (primary.value, primary.detail) == (estimate, interval)
    assert f"{estimate} ({interval})" in analysis.verdicts[0].text  # the verdict's words
    lift = analysis.lift(analysis.primary_metric, "treatment")
    assert lift.bayesian is not None
    chance = f"{lift.bayesian.absolute.chance_to_win:.0%}"
    assert items["Chance treatment beats control"].value == chance
    for number in key_numbers_of(analysis):
        assert number in text
    # and the SRM status, the day-by-day plot, one table row per metric, the notes
    assert f"The split is as designed: chi-square p = {analysis.srm.p_value:.2g}" in text
    names = [p.title for p in blocks(report, Plot)]
    assert "net incremental margin: the lift day by day" in names
    assert "Relative lift per metric" in names
    lifts = table_named(report, "Lift per metric")
    assert len(lifts.rows) == len(analysis.lifts)
    spend = next(r for r in lifts.rows if r[0] == "spend per customer")
    spend_lift = analysis.lift("spend_per_customer", "treatment")
    assert spend[5] == f"{spend_lift.relative.estimate:+.1%}"
    assert "fraud loss (guardrail, lower is better)" in [r[0] for r in lifts.rows]
    assert "net incremental margin (primary)" in [r[0] for r in lifts.rows]
    for message in analysis.messages:
        assert message in text


def test_a_sample_ratio_mismatch_puts_a_warning_box_first() -> None:
    # given 1,000 control and 820 treatment customers of a 50/50 design
    analysis = spend_analysis(synthetic({"control": 1000, "treatment": 820}, {"treatment": 0.5}))
    # when building its report
    report = experiment_report(analysis, power=POWER)
    # then the verdict section opens on a warning, and the verdict calls the results invalid
    warning, verdict = section(report, "Verdict")[:2]
    assert isinstance(warning, Note)
    assert warning.tone == "negative"
    assert warning.text.startswith("Sample ratio mismatch")
    assert f"p = {analysis.srm.p_value:.2g}" in warning.text
    assert isinstance(verdict, Verdict)
    assert verdict.headline == "treatment: results not valid, fix the split first"
    assert "Sample ratio mismatch" in section(report, "Is the split as designed?")[1].text


def test_a_guardrail_that_got_worse_is_flagged() -> None:
    # given a clear win on spend whose guardrail (loss, lower is better) got worse
    analysis = spend_analysis(
        synthetic({"control": 2000, "treatment": 2000}, {"treatment": 0.3}, loss_effect=1.0),
        guardrail_metrics=["loss"],
    )
    # when building its report
    report = experiment_report(analysis, power=POWER)
    # then the verdict says do not ship, and a warning names the guardrail with its lift
    verdict = section(report, "Verdict")[0]
    assert isinstance(verdict, Verdict)
    assert (verdict.headline, verdict.tone) == ("Do not ship treatment", "negative")
    warnings = [b for b in section(report, "Lift per metric") if isinstance(b, Note)]
    loss = analysis.lift("loss", "treatment")
    words = f"{loss.relative.estimate:+.1%} (95 % CI {loss.relative.ci_low:+.1%}"
    (warning,) = warnings
    assert warning.text.startswith(f"Guardrail loss got worse with treatment: {words}")


def test_an_imported_experiment_says_it_has_no_series_and_no_segments() -> None:
    # given an experiment of imported outcomes: no time, no segment
    frame = synthetic({"control": 800, "treatment": 800}, {"treatment": 0.1})
    imported = replace(synthetic_design(), source="outcomes", data_end=None)
    analysis = spend_analysis(frame.with_columns(segment=pl.lit("all")), design=imported)
    # when building its report
    report = experiment_report(analysis, power=POWER)
    text = page_text(report)
    # then it says why there is no day-by-day series and no breakdown, and draws the rest
    assert "No day-by-day series: imported outcomes carry no timestamps" in text
    assert "These customers carry no segment" in text
    assert "Data until imported outcomes" in text
    assert [p.title for p in blocks(report, Plot)] == [
        "Relative lift per metric",
        "Smallest detectable lift by duration",
    ]


def test_the_power_plan_is_the_normal_approximation_at_the_observed_traffic() -> None:
    # given an analysis over 30 days of a skewed spend with a pre-period covariate
    analysis = spend_analysis(synthetic({"control": 1500, "treatment": 1500}, {"treatment": 0.05}))
    report = experiment_report(analysis, power=POWER)
    # when reading its power plan
    (row,) = table_named(report, "Power plan for spend").rows
    # then the MDE is (z_0.975 + z_0.8) x the lift's standard error under the control's
    # variance, relative to the control mean, and CUPED takes sqrt(1 - rho^2) of it
    lift = analysis.lift("spend", "treatment")
    assert lift.comparison is not None
    assert lift.cuped is not None
    control, treatment = lift.comparison.control, lift.comparison.treatment
    z = stats.norm.ppf(0.975) + stats.norm.ppf(POWER)
    se = math.sqrt(control.variance * (1 / control.n + 1 / treatment.n))
    mde = z * se / control.mean
    reduction = lift.cuped.variance_reduction
    assert row[:4] == ("treatment", "3,000", "30", f"±{mde:.1%}")
    assert row[4] == f"±{mde * math.sqrt(1 - reduction):.1%}"
    assert row[5] == f"{math.sqrt(reduction):.2f}"
    # and the days the observed lift needs: (z se_1 / lift)^2 customers-days at this traffic
    daily = (control.n + treatment.n) / 30
    customers = (z / lift.absolute.estimate) ** 2 * control.variance / (0.5 * 0.5)
    assert row[6] == f"{math.ceil(customers / daily):,}"


def test_cli_report_writes_the_page(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(settings)
    monkeypatch.setattr(cli, "out_console", Console(width=300))
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(
        cli.app, ["experiments", "report", handmade.KEY, "--out", str(out), "--correction", "bh"]
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert "verdict treatment: " in result.output
    assert f"report written to {out}" in result.output
    assert "Benjamini-Hochberg" in out.read_text(encoding="utf-8")
    result = CliRunner().invoke(
        cli.app, ["experiments", "report", handmade.KEY, "--out", str(out), "--cap", "99"]
    )
    assert isinstance(result.exception, CashbackError)
    assert "--cap is a quantile in (0, 1]" in str(result.exception)
    result = CliRunner().invoke(cli.app, ["experiments", "report", "nope", "--out", str(out)])
    assert isinstance(result.exception, CashbackError)
    assert "no experiment 'nope'" in str(result.exception)


def test_import_does_no_work() -> None:
    code = (
        "import sys, models.experiments.report, pipelines.experiment_report; "
        "print(sorted(m for m in ('matplotlib', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- Chromium

VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])


@pytest.fixture(scope="module")
def rate_boost(
    default_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentAnalysis, Path]:
    """The simulated world's rate-boost report."""
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=default_world)
    done = run(
        settings, "exp-rate-boost", tmp_path_factory.mktemp("report") / "experiment-rate-boost.html"
    )
    return done.analysis, done.path


@pytest.fixture(scope="module")
def hillstrom(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentAnalysis, Path]:
    """The Hillstrom e-mail campaign's report (visits as the primary metric)."""
    path = shared_file("hillstrom/hillstrom.csv")
    root = tmp_path_factory.mktemp("hillstrom")
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=root / "data")
    import_data("hillstrom", path, settings.data_dir, settings)
    done = run(settings, "hillstrom_email", root / "experiment-hillstrom.html", primary="visit")
    return done.analysis, done.path


def check_page(
    open_page: OpenPage, path: Path, viewport: Viewport, numbers: list[str], plots: int
) -> str:
    """Open the page; the numbers are shown, the plots drew, nothing overflows or is fetched."""
    view = open_page(path, viewport)
    text = view.text()
    missing = [n for n in numbers if n not in text]
    assert not missing, missing
    boxes = view.plots()
    assert len(boxes) == plots
    assert view.drawn_plots() == plots
    assert all(100 < box.width <= viewport.width and box.height > 100 for box in boxes)
    assert view.overflow_px() == 0
    assert view.requests == [path.as_uri()]
    assert view.blocked == []
    assert view.console_errors == []
    assert view.screenshot(f"{path.stem}-{viewport.width}").stat().st_size > 0
    return text


@pytest.mark.browser
@pytest.mark.xdist_group("simulated_worlds")
@VIEWPORTS
def test_the_rate_boost_report_in_chromium(
    rate_boost: tuple[ExperimentAnalysis, Path], open_page: OpenPage, viewport: Viewport
) -> None:
    analysis, path = rate_boost
    text = check_page(open_page, path, viewport, key_numbers_of(analysis), plots=4)
    assert analysis.verdicts[0].text in text
    assert "The split is as designed" in text
    assert "always-valid" in text


@pytest.mark.browser
@pytest.mark.realdata
@VIEWPORTS
def test_the_hillstrom_report_in_chromium(
    hillstrom: tuple[ExperimentAnalysis, Path], open_page: OpenPage, viewport: Viewport
) -> None:
    analysis, path = hillstrom
    text = check_page(open_page, path, viewport, key_numbers_of(analysis), plots=2)
    assert "Ship womens" in text
    assert "Ship mens" in text
    assert "No day-by-day series: imported outcomes carry no timestamps" in text
