"""`cashback experiments analyze` and `power`: hand-made tables, real experiments, a world."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from cashback import cli
from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import write_parquet_atomic, write_table
from features.store import EVENT_TS, batch_table_path
from models.experiments.power import days_needed, minimum_detectable_effect
from pipelines.data_import import run as import_data
from pipelines.experiment_analysis import results_dir, run
from pipelines.simulation.truth import expected_returned_share, expected_spend, load_truth
from tests.conftest import shared_file
from tests.models.experiments import handmade

TOL = 1e-6


def write(settings: Settings, *, without: tuple[str, ...] = ()) -> Path:
    for name, frame in handmade.tables().items():
        if name not in without:
            write_table(settings.data_dir, name, frame)
    return settings.data_dir


# ----------------------------------------------------------------------------- by hand


def test_analyze_measures_each_customer_as_computed_by_hand(settings: Settings) -> None:
    # given the hand-made experiment on the contract tables
    write(settings)
    expected = handmade.reference_metrics()
    # when analysing it
    done = run(settings, handmade.KEY)
    analysis = done.analysis
    # then each customer's metrics are those computed by hand from the rows
    customers = {r["customer_id"]: r for r in analysis.customers.iter_rows(named=True)}
    assert set(customers) == set(expected)
    for customer, values in expected.items():
        for name, value in values.items():
            got = customers[customer][name]
            assert got == (None if value is None else pytest.approx(value, abs=1e-9)), name
    # and the spend lift is Welch's on those values
    spend = {
        v: [expected[c]["spend_per_customer"] for c in expected if handmade.ASSIGNED[c][0] == v]
        for v in ("control", "treatment")
    }
    reference = stats.ttest_ind(spend["treatment"], spend["control"], equal_var=False)
    lift = analysis.lift("spend_per_customer", "treatment")
    assert lift.comparison is not None
    assert lift.comparison.statistic == pytest.approx(float(reference.statistic), abs=TOL)
    assert lift.absolute.p_value == pytest.approx(float(reference.pvalue), abs=TOL)
    # and the customers assigned after the end are left out, and said to be
    assert analysis.srm.observed == (3, 4)
    assert any("1 customers assigned after" in m for m in analysis.messages)
    assert analysis.design.end == handmade.END
    assert analysis.design.data_end == handmade.DATA_END
    # and the primary metric's series ends on the whole window's lift
    last = analysis.cumulative.filter(pl.col("day") == pl.col("day").max())
    primary = analysis.lift(analysis.primary_metric, "treatment")
    assert last["absolute"].item() == pytest.approx(primary.absolute.estimate, rel=1e-9)
    assert last["n_control"].item() == 3
    # and the results are written, readable, under the experiment's key
    assert set(done.paths) == {
        "lifts",
        "srm",
        "verdicts",
        "messages",
        "cumulative",
        "segments",
        "customers",
    }
    assert done.paths["lifts"].parent == results_dir(settings, handmade.KEY).resolve()
    written = pl.read_parquet(done.paths["lifts"])
    assert written.equals(analysis.to_frame())
    assert pl.read_parquet(done.paths["cumulative"]).height == analysis.cumulative.height


def test_retention_in_the_pipeline_counts_only_elapsed_windows(settings: Settings) -> None:
    write(settings)
    analysis = run(settings, handmade.KEY, write=False).analysis
    # c3 and c6 were assigned less than 30 days before the data end: not counted
    lift = analysis.lift("retention_30d", "treatment")
    assert lift.comparison is not None
    assert (lift.comparison.control.n, lift.comparison.treatment.n) == (2, 3)
    week = analysis.lift("retention_7d", "treatment")
    assert week.comparison is not None
    assert (week.comparison.control.n, week.comparison.treatment.n) == (3, 4)


def test_metrics_without_data_are_named_with_the_reason(settings: Settings) -> None:
    # given the same experiment without claims (hence without labels)
    write(settings, without=("claims", "claim_labels"))
    # when analysing it
    analysis = run(settings, handmade.KEY, write=False).analysis
    # then the claim metrics say why they have no lift, and the others are there
    for metric in ("participation_rate", "cashback_paid", "fraud_loss"):
        lift = analysis.lift(metric, "treatment")
        assert lift.comparison is None
        assert lift.message == f"{metric}: no claims table: no cashback data"
    assert analysis.lift("spend_per_customer", "treatment").comparison is not None
    assert "no claims table: net_incremental_margin counts no cashback" in analysis.messages
    frame = analysis.to_frame().filter(pl.col("metric") == "fraud_loss")
    assert frame["message"].item().startswith("fraud_loss: no claims table")


def test_fraud_loss_without_labels_is_unknown_not_zero(settings: Settings) -> None:
    write(settings, without=("claim_labels",))
    analysis = run(settings, handmade.KEY, write=False).analysis
    assert analysis.lift("fraud_loss", "treatment").message == (
        "fraud_loss: no claim_labels table: fraud is unknown"
    )
    assert analysis.lift("cashback_paid", "treatment").comparison is not None


def test_segments_come_from_customer_scores_nearest_the_start(settings: Settings) -> None:
    # given scores before the start (c1, c2, c4), only after it (c5), none for the others
    write(settings)
    scores = pl.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c4", "c5", "c5"],
            "segment": ["old", "loyal", "loyal", "bargain", "bargain", "later"],
            EVENT_TS: [
                handmade.at(1, 1),
                handmade.at(2, 1),
                handmade.at(2, 1),
                handmade.at(2, 1),
                handmade.at(3, 20),
                handmade.at(4, 1),
            ],
        },
        schema_overrides={EVENT_TS: pl.Datetime("us", "UTC")},
    )
    write_parquet_atomic(scores, batch_table_path(settings, "customer_scores"))
    # when analysing
    analysis = run(settings, handmade.KEY, write=False).analysis
    # then each customer has the segment scored last before the start, else first after it
    segment = dict(
        zip(analysis.customers["customer_id"], analysis.customers["segment"], strict=True)
    )
    assert segment == {
        "c1": "loyal",
        "c2": "loyal",
        "c3": "unscored",
        "c4": "bargain",
        "c5": "bargain",
        "c6": "unscored",
        "c8": "unscored",
    }
    assert "segments: segment" in analysis.messages
    spend = analysis.segments.filter(pl.col("metric") == "spend_per_customer")
    assert set(spend["segment"]) == {"loyal", "bargain", "unscored"}
    bargain = spend.filter(pl.col("segment") == "bargain")
    assert (bargain["n_control"].item(), bargain["n_treatment"].item()) == (0, 2)
    assert "at least 2 are needed" in bargain["message"].item()


def test_bad_input_gets_a_clear_error(settings: Settings) -> None:
    with pytest.raises(CashbackError, match="no experiments table"):
        run(settings, handmade.KEY)
    write(settings, without=("assignments",))
    with pytest.raises(CashbackError, match=r"no experiment 'nope' \(known: handmade\)"):
        run(settings, "nope")
    with pytest.raises(CashbackError, match="'handmade' has no assignments"):
        run(settings, handmade.KEY)
    write(settings)
    with pytest.raises(CashbackError, match="primary metric 'visits' is not among"):
        run(settings, handmade.KEY, primary="visits")


# ----------------------------------------------------------------------------- real data


def _raw(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _welch_matches(lift_metric: object, control: np.ndarray, treatment: np.ndarray) -> None:
    from models.experiments.analysis import MetricLift

    assert isinstance(lift_metric, MetricLift)
    comparison = lift_metric.comparison
    assert comparison is not None
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert comparison.statistic == pytest.approx(float(reference.statistic), abs=TOL)
    assert comparison.df == pytest.approx(float(reference.df), rel=TOL)
    assert lift_metric.absolute.estimate == pytest.approx(
        treatment.mean() - control.mean(), abs=TOL
    )
    assert lift_metric.absolute.p_value == pytest.approx(float(reference.pvalue), abs=TOL)
    assert lift_metric.absolute.ci_low == pytest.approx(float(ci.low), abs=TOL)
    assert lift_metric.absolute.ci_high == pytest.approx(float(ci.high), abs=TOL)


@pytest.mark.realdata
def test_cookie_cats_through_analyze_equals_scipy_welch(settings: Settings) -> None:
    # given the Cookie Cats test imported onto the contract, and the raw file read apart
    path = shared_file("cookie_cats/cookie_cats.csv")
    import_data("cookie_cats", path, settings.data_dir, settings)
    raw = _raw(path)
    truth = {"TRUE": 1.0, "FALSE": 0.0}
    values = {
        metric: {
            version: np.array(
                [
                    float(r[metric]) if metric == "sum_gamerounds" else truth[r[metric]]
                    for r in raw
                    if r["version"] == version
                ]
            )
            for version in ("gate_30", "gate_40")
        }
        for metric in ("retention_1", "retention_7", "sum_gamerounds")
    }
    # when analysing it, plain and capped at the 99th percentile
    plain = run(settings, "cookie_cats_gate", primary="retention_7").analysis
    capped = run(settings, "cookie_cats_gate", primary="retention_7", cap=0.99).analysis
    # then every metric is scipy's Welch t-test of gate_40 against gate_30, to 1e-6
    assert plain.design.control == "gate_30"
    for metric, arms in values.items():
        _welch_matches(plain.lift(metric, "gate_40"), arms["gate_30"], arms["gate_40"])
    rounds = values["sum_gamerounds"]
    cap = np.percentile(np.concatenate([rounds["gate_30"], rounds["gate_40"]]), 99)
    capped_lift = capped.lift("sum_gamerounds", "gate_40")
    assert capped_lift.cap == pytest.approx(cap)
    _welch_matches(
        capped_lift, np.minimum(rounds["gate_30"], cap), np.minimum(rounds["gate_40"], cap)
    )
    # proportions are not capped
    _welch_matches(
        capped.lift("retention_7", "gate_40"),
        values["retention_7"]["gate_30"],
        values["retention_7"]["gate_40"],
    )
    # and gate 40 loses 7-day retention: significant after Holm, a "do not ship"
    week = plain.lift("retention_7", "gate_40")
    assert week.absolute.ci_high < 0
    assert week.significant
    assert plain.verdicts[0].decision == "do_not_ship"
    assert any("CUPED skipped" in m for m in plain.messages)
    assert plain.cumulative.is_empty()


def _delta_relative(
    control: np.ndarray, treatment: np.ndarray, df: float
) -> tuple[float, float, float]:
    """Relative lift and its 95 % delta-method interval, written out independently."""
    mc, mt = control.mean(), treatment.mean()
    vc, vt = control.var(ddof=1), treatment.var(ddof=1)
    se = math.sqrt(vt / (treatment.size * mc**2) + vc * mt**2 / (control.size * mc**4))
    half = float(stats.t.ppf(0.975, df)) * se
    return mt / mc - 1, mt / mc - 1 - half, mt / mc - 1 + half


@pytest.mark.realdata
def test_hillstrom_e_mails_analysed_as_an_experiment(settings: Settings) -> None:
    # given the Hillstrom campaign imported, and the raw file read apart
    path = shared_file("hillstrom/hillstrom.csv")
    import_data("hillstrom", path, settings.data_dir, settings)
    raw = _raw(path)
    arms = {"control": "No E-Mail", "womens": "Womens E-Mail", "mens": "Mens E-Mail"}
    column = {
        (arm, metric): np.array([float(r[metric]) for r in raw if r["segment"] == label])
        for arm, label in arms.items()
        for metric in ("visit", "conversion", "spend", "history")
    }
    # when analysing it with visits as the primary metric
    analysis = run(settings, "hillstrom_email", primary="visit").analysis
    # then history is a covariate, not an outcome, and both e-mails are compared with none
    assert {x.metric for x in analysis.lifts} == {"visit", "conversion", "spend"}
    assert analysis.design.treatments == ("womens", "mens")
    for arm in ("womens", "mens"):
        for metric in ("visit", "conversion", "spend"):
            control, treatment = column[("control", metric)], column[(arm, metric)]
            lift = analysis.lift(metric, arm)
            _welch_matches(lift, control, treatment)
            assert lift.comparison is not None
            relative, low, high = _delta_relative(control, treatment, lift.comparison.df)
            assert lift.relative.estimate == pytest.approx(relative, rel=1e-9)
            assert lift.relative.ci_low == pytest.approx(low, rel=1e-9)
            assert lift.relative.ci_high == pytest.approx(high, rel=1e-9)
            # CUPED on the year-before spend, pooled over the two arms compared
            y = np.concatenate([control, treatment])
            x = np.concatenate([column[("control", "history")], column[(arm, "history")]])
            theta = np.cov(y, x)[0, 1] / x.var(ddof=1)
            adjusted = y - theta * (x - x.mean())
            reference = stats.ttest_ind(
                adjusted[control.size :], adjusted[: control.size], equal_var=False
            )
            assert lift.cuped is not None
            assert lift.cuped.theta == pytest.approx(theta, rel=1e-9)
            assert lift.cuped.adjusted.absolute.p_value == pytest.approx(
                float(reference.pvalue), abs=TOL
            )
            assert lift.cuped.variance_reduction >= 0
    # and both e-mails lift visits, conversions and spend; the men's e-mail most
    for metric in ("visit", "conversion", "spend"):
        for arm in ("womens", "mens"):
            assert analysis.lift(metric, arm).absolute.ci_low > 0, (metric, arm)
    visit = {arm: analysis.lift("visit", arm).absolute.estimate for arm in ("womens", "mens")}
    assert visit["mens"] > visit["womens"] > 0.04
    assert [v.decision for v in analysis.verdicts] == ["ship", "ship"]


# ----------------------------------------------------------------------------- simulated


def _true_spend_effect(world: Path, end: datetime) -> tuple[float, float]:
    """What the simulator's truth says the boost adds to spend per treated customer.

    For every experiment exposure of a treated customer (clipped to the experiment's end),
    the expected spend at its effective rate minus that at the control's rate under the
    same offer (category offers dilute the rate, tiered and cumulative add their bonus),
    summed per customer over all treated customers (0 for those without exposures):
    gross, and net of the expected returns. Churn's response to cashback is left out.
    """
    truth = load_truth(world)
    config = truth.config
    offers = pl.read_parquet(world / "offers.parquet").select("offer_id", "kind")
    clipped = pl.min_horizontal("valid_until", pl.lit(end)) - pl.col("ts")
    exposures = (
        pl.scan_parquet(world / "exposures.parquet")
        .filter(pl.col("variant") == "treatment")
        .join(truth.exposures, on="exposure_id")
        .join(offers.lazy(), on="offer_id", how="left")
        .with_columns(
            # in quarter days: a handful of distinct lengths for expected_spend
            ((clipped.dt.total_seconds() / 86_400 * 4).round() / 4).alias("days")
        )
        .collect()
    )
    rate, base = exposures["rate"].to_numpy(), exposures["policy_rate"].to_numpy()
    effective = exposures["effective_rate"].to_numpy()
    default = config.default_rate
    category = (exposures["kind"] == "category").to_numpy()
    moved = np.abs(rate - default) > 1e-12
    share = np.where(moved, (effective - default) / np.where(moved, rate - default, 1.0), 0.0)
    counterfactual = np.where(
        category, share * base + (1 - share) * default, effective - rate + base
    )
    rows = exposures.select("customer_id").join(
        truth.customers, on="customer_id", how="left", maintain_order="left"
    )
    gain = np.zeros(exposures.height)
    lengths = exposures["days"].to_numpy()
    for length in np.unique(lengths):
        mask = lengths == length
        picked = rows.filter(pl.Series(mask))
        start = exposures["ts"].filter(pl.Series(mask))
        gain[mask] = expected_spend(picked, config, effective[mask], start, float(length)) - (
            expected_spend(picked, config, counterfactual[mask], start, float(length))
        )
    net = gain * (1 - expected_returned_share(rows))
    treated = (
        pl.read_parquet(world / "assignments.parquet")
        .filter(pl.col("variant") == "treatment")
        .height
    )
    return float(gain.sum() / treated), float(net.sum() / treated)


@pytest.mark.xdist_group("simulated_worlds")
def test_the_simulated_rate_boost_lifts_spend_as_the_truth_says(default_world: Path) -> None:
    # given the default world and its rate-boost experiment (treatment: two grid steps up)
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=default_world)
    # when analysing it end to end
    analysis = run(settings, "exp-rate-boost", write=False).analysis
    # then the split is as designed and spend per customer rises, its CI above 0
    assert not analysis.srm.mismatch
    spend = analysis.lift("spend_per_customer", "treatment")
    assert spend.absolute.estimate > 0
    assert spend.absolute.ci_low > 0
    # and the truth's effect (exposure by exposure) lies in the CUPED-adjusted interval
    gross, net = _true_spend_effect(default_world, analysis.design.end)
    assert spend.cuped is not None
    adjusted = spend.cuped.adjusted.absolute
    assert 0 < net < gross
    assert adjusted.ci_low <= net <= adjusted.ci_high
    assert adjusted.ci_low <= gross <= adjusted.ci_high
    assert spend.cuped.variance_reduction > 0.2
    # and the boost costs cashback, a lot more than it brings in fraud
    cashback = analysis.lift("cashback_paid", "treatment")
    assert cashback.absolute.ci_low > 0
    assert cashback.bayesian is not None
    assert cashback.bayesian.absolute.chance_to_win < 0.01  # lower is better
    # and the report's frames are there: the series ends on the lift, segments by lifecycle
    last = analysis.cumulative.filter(pl.col("day") == pl.col("day").max())
    primary = analysis.lift(analysis.primary_metric, "treatment")
    assert last["absolute"].item() == pytest.approx(primary.absolute.estimate, rel=1e-9)
    assert analysis.cumulative["day"].n_unique() == 91
    assert "segments: lifecycle" in analysis.messages
    assert {"regular", "new"} <= set(analysis.segments["segment"])
    assert all(x.message is None for x in analysis.lifts)


# ----------------------------------------------------------------------------- CLI


def invoke(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.output, result.exception


def test_cli_analyze_prints_lifts_srm_and_a_verdict(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(settings)
    monkeypatch.setattr(cli, "out_console", Console(width=300))
    code, output, error = invoke("experiments", "analyze", handmade.KEY, "--correction", "bh")
    assert code == 0, f"{output}\n{error!r}"
    assert "SRM: ok (chi-square p = " in output
    assert "adj. p (bh)" in output
    assert "spend_per_customer" in output
    assert "net_incremental_margin (primary)" in output
    assert "fraud_loss (guardrail)" in output
    assert "verdict treatment: " in output
    assert "results written to" in output
    assert (results_dir(settings, handmade.KEY) / "lifts.parquet").exists()
    # a bad cap or an unknown key is one clear error
    code, _, error = invoke("experiments", "analyze", handmade.KEY, "--cap", "99")
    assert code != 0
    assert isinstance(error, CashbackError)
    assert "--cap is a quantile in (0, 1]" in str(error)
    code, _, error = invoke("experiments", "analyze", "nope")
    assert isinstance(error, CashbackError)
    assert "no experiment 'nope'" in str(error)


def test_cli_power_gives_the_mde_and_the_days_with_and_without_cuped(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "out_console", Console(width=200))
    args = ("experiments", "power", "--baseline", "0.2", "--proportion")
    code, output, error = invoke(
        *args, "--daily-customers", "1000", "--days", "14", "--cuped-rho", "0.5"
    )
    assert code == 0, f"{output}\n{error!r}"
    plain = minimum_detectable_effect(daily_customers=1000, days=14, baseline_mean=0.2)
    cuped = minimum_detectable_effect(
        daily_customers=1000, days=14, baseline_mean=0.2, cuped_rho=0.5
    )
    assert f"{plain.mde_absolute:,.4g}" in output
    assert f"{cuped.mde_absolute:,.4g}" in output
    assert "CUPED, rho 0.5" in output
    code, output, error = invoke(
        "experiments",
        "power",
        "--baseline",
        "350",
        "--sd",
        "400",
        "--daily-customers",
        "200",
        "--mde",
        "0.05",
    )
    assert code == 0, f"{output}\n{error!r}"
    plan = days_needed(
        0.05, relative=True, daily_customers=200, baseline_mean=350, baseline_variance=400**2
    )
    assert f"│ {plan.days:,.0f} " in output
    code, _, error = invoke(*args, "--daily-customers", "1000", "--days", "14", "--mde", "0.1")
    assert isinstance(error, CashbackError)
    assert "one of --mde" in str(error)
    code, _, error = invoke(
        "experiments", "power", "--baseline", "3", "--daily-customers", "9", "--days", "3"
    )
    assert isinstance(error, CashbackError)
    assert "--sd S for a mean, or --proportion" in str(error)
    code, _, error = invoke(
        *args, "--daily-customers", "1000", "--days", "14", "--cuped-rho", "1.5"
    )
    assert isinstance(error, CashbackError)
    assert "cuped_rho must be in (-1, 1)" in str(error)
