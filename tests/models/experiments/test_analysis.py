"""Experiment analysis: per-customer metrics by hand, lifts against the statistics library."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from models.experiments.analysis import (
    AnalysisOptions,
    Design,
    MetricSpec,
    analyze,
    summary_from_moments,
)
from models.experiments.bayes import bayesian_from_summaries
from models.experiments.cuped import compare_cuped
from models.experiments.metrics import (
    additive_increments,
    claim_events,
    cumulative_moments,
    customer_metrics,
    fraud_claims,
    retention_increments,
    transaction_events,
)
from models.experiments.multiple_testing import adjust_p_values
from models.experiments.sequential import sequential_from_summaries
from models.experiments.stats import (
    compare_means,
    compare_proportions,
    compare_ratios,
    summarize_ratio,
)
from tests.models.experiments import handmade

TOL = 1e-9


def events(data_end: datetime = handmade.DATA_END) -> pl.LazyFrame:
    data = handmade.tables()
    fraud = fraud_claims(data["claim_labels"].lazy(), data_end)
    frames = [
        transaction_events(
            data["transactions"].lazy(), data["merchants"].lazy(), handmade.DEFAULT_MARGIN
        ),
        claim_events(data["claims"].lazy(), fraud),
    ]
    return pl.concat(frames).filter(pl.col("ts") < data_end)


def units(end: datetime = handmade.END) -> pl.DataFrame:
    rows = [(c, v, s, end) for c, (v, s) in handmade.counted(end).items()]
    schema = {
        "customer_id": pl.String,
        "variant": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def metrics_at(end: datetime, data_end: datetime) -> pl.DataFrame:
    return customer_metrics(units(end).lazy(), events(data_end), data_end=data_end).collect()


# ----------------------------------------------------------------------------- metrics


def test_customer_metrics_equal_a_computation_by_hand() -> None:
    # given the hand-made experiment, and every metric recomputed by hand from its rows
    expected = handmade.reference_metrics()
    # when computing the per-customer metrics
    frame = metrics_at(handmade.END, handmade.DATA_END)
    # then each customer's metrics (window and pre-period) are those computed by hand
    assert sorted(frame["customer_id"]) == sorted(expected)
    assert "c7" not in expected  # assigned after the end
    for row in frame.iter_rows(named=True):
        for name, value in expected[row["customer_id"]].items():
            got = row[name]
            if value is None:
                assert got is None, (row["customer_id"], name)
            else:
                assert got == pytest.approx(value, abs=TOL), (row["customer_id"], name)


def test_the_hand_made_cases_are_what_they_claim() -> None:
    # the reference computation itself, on the cases the data set was built for
    m = handmade.reference_metrics()
    assert m["c1"]["spend_per_customer"] == 150.0  # 100 - 30 + 80
    assert m["c1"]["fraud_loss"] == 2.0  # fraud by chargeback beats the audit's legit
    assert m["c4"]["fraud_loss"] == 4.5  # k4's fraud label comes after the data's end
    assert m["c4"]["spend_per_customer_pre"] == 90.0  # assigned before the start
    assert m["c5"]["retention_30d"] == 1.0  # bought on 1 April, within 30 days
    assert m["c8"]["spend_per_customer"] == 0.0
    assert m["c1"]["net_incremental_margin"] == pytest.approx(0.2 * 70 + 0.5 * 80 - 3.6)


def test_retention_counts_only_windows_elapsed_by_the_data_end() -> None:
    # given the data end just after the last event (19 April)
    frame = metrics_at(handmade.END, handmade.DATA_END)
    retention = dict(zip(frame["customer_id"], frame["retention_30d"], strict=True))
    week = dict(zip(frame["customer_id"], frame["retention_7d"], strict=True))
    # then customers assigned in the last 30 days have no 30-day retention, not a 0
    assert retention["c3"] is None
    assert retention["c6"] is None
    assert retention["c2"] == 1.0
    assert week["c3"] == 1.0
    # when the data end on 2 April, the 7-day window of c3 (assigned 27 March, noon) is open
    early = metrics_at(handmade.END, datetime(2025, 4, 2, tzinfo=handmade.START.tzinfo))
    assert dict(zip(early["customer_id"], early["retention_7d"], strict=True))["c3"] is None


# ----------------------------------------------------------------------------- cumulative


def moments(values: list[tuple[float, float]]) -> dict[str, float]:
    m = np.array([v[0] for v in values])
    d = np.array([v[1] for v in values])
    return {
        "n": float(len(values)),
        "m": float(m.sum()),
        "m2": float((m**2).sum()),
        "d": float(d.sum()),
        "d2": float((d**2).sum()),
        "md": float((m * d).sum()),
    }


@pytest.mark.parametrize(
    ("metric", "denominator"),
    [
        ("spend_per_customer", None),
        ("participation_rate", None),
        ("net_incremental_margin", None),
        ("gross_spend", "purchases_per_customer"),
        ("retention_7d", None),
    ],
)
def test_cumulative_moments_equal_the_metrics_recomputed_at_each_cutoff(
    metric: str, denominator: str | None
) -> None:
    # given the day-by-day increments of a metric's sums
    frame = metrics_at(handmade.END, handmade.DATA_END)
    if metric.startswith("retention"):
        increments = retention_increments(frame.lazy(), metric, origin=handmade.START)
    else:
        increments = additive_increments(
            units().lazy(), events(), metric, origin=handmade.START, denominator=denominator
        )
    days = 30
    series = cumulative_moments(increments, ["control", "treatment"], days)
    assert series.height == 2 * days
    for day in (0, 3, 15, 27, days - 1):
        # when each day's cut-off is taken as the window's end and the data's end
        cutoff = min(handmade.START + timedelta(days=day + 1), handmade.END)
        reference = handmade.reference_metrics(end=cutoff, data_end=cutoff)
        for variant in ("control", "treatment"):
            values = [
                (v[metric], v[denominator] if denominator else 0.0)
                for c, v in reference.items()
                if handmade.ASSIGNED[c][0] == variant and v[metric] is not None
            ]
            expected = moments(values)  # type: ignore[arg-type]
            got = series.filter((pl.col("variant") == variant) & (pl.col("day") == day))
            # then the cumulative sums are those of the customers and events known by then
            for name, value in expected.items():
                assert got[name].item() == pytest.approx(value, abs=TOL), (day, variant, name)


def test_ratio_summary_from_sums_equals_the_delta_method() -> None:
    rng = np.random.default_rng(3)
    orders = rng.poisson(2.0, 500).astype(float)
    spend = orders * rng.gamma(2.0, 20.0, 500)
    direct = summarize_ratio(spend, orders)
    values = list(zip(spend, orders, strict=True))
    from_sums = summary_from_moments("ratio", moments(values))
    assert from_sums.n == direct.n
    assert from_sums.mean == pytest.approx(direct.mean, rel=1e-12)
    assert from_sums.variance == pytest.approx(direct.variance, rel=1e-9)


# ----------------------------------------------------------------------------- analysis


def design(
    variants: tuple[str, ...] = ("control", "treatment"), weights: tuple[float, ...] = (0.5, 0.5)
) -> Design:
    return Design(
        key="synthetic",
        experiment_id="synthetic",
        source="events",
        variants=variants,
        weights=weights,
        start=handmade.START,
        end=handmade.END,
        data_end=handmade.DATA_END,
    )


SPECS = [
    MetricSpec("spend", "mean", "spend", covariate="spend_pre"),
    MetricSpec("converted", "proportion", "converted", covariate="converted_pre"),
    MetricSpec("aov", "ratio", "gross", denominator="orders"),
    MetricSpec("loss", "mean", "loss", lower_is_better=True),
]


def synthetic(
    n: dict[str, int], effects: dict[str, float], seed: int = 1, loss_effect: float = 0.0
) -> pl.DataFrame:
    """Customers with a heavy-tailed spend correlated with its pre-period, and more."""
    rng = np.random.default_rng(seed)
    frames = []
    for variant, count in n.items():
        pre = rng.gamma(1.5, 40.0, count)
        spend = 0.7 * pre + rng.gamma(1.5, 30.0, count) * (1 + effects.get(variant, 0.0))
        orders = rng.poisson(3.0, count).astype(float)
        frames.append(
            pl.DataFrame(
                {
                    "customer_id": [f"{variant}-{i}" for i in range(count)],
                    "variant": variant,
                    "segment": rng.choice(["a", "b"], count),
                    "spend": spend,
                    "spend_pre": pre,
                    "converted": (rng.random(count) < 0.3 + effects.get(variant, 0.0)).astype(
                        float
                    ),
                    "converted_pre": (rng.random(count) < 0.3).astype(float),
                    "gross": orders * rng.gamma(2.0, 25.0, count),
                    "orders": orders,
                    "loss": rng.exponential(1.0 + loss_effect * (variant != "control"), count),
                }
            )
        )
    return pl.concat(frames)


def arrays(frame: pl.DataFrame, variant: str, column: str) -> np.ndarray:
    return frame.filter(pl.col("variant") == variant)[column].to_numpy()


def test_lifts_are_those_of_the_statistics_library() -> None:
    # given three variants of synthetic customers
    frame = synthetic({"control": 3000, "low": 3000, "high": 3000}, {"low": 0.02, "high": 0.1})
    options = AnalysisOptions(correction="bh")
    # when analysing them
    result = analyze(
        design(("control", "low", "high"), (0.4, 0.3, 0.3)),
        frame,
        SPECS,
        options,
        primary_metric="spend",
        guardrail_metrics=["loss"],
    )
    # then every variant is compared with the control, with the library's numbers
    assert {(x.metric, x.variant) for x in result.lifts} == {
        (s.name, v) for s in SPECS for v in ("low", "high")
    }
    for variant in ("low", "high"):
        c, t = arrays(frame, "control", "spend"), arrays(frame, variant, "spend")
        lift = result.lift("spend", variant)
        welch = compare_means(c, t)
        scipy = stats.ttest_ind(t, c, equal_var=False)
        assert lift.absolute.estimate == pytest.approx(t.mean() - c.mean(), rel=1e-12)
        assert lift.absolute.p_value == pytest.approx(float(scipy.pvalue), rel=1e-9)
        assert lift.relative == welch.relative
        cuped = compare_cuped(
            c, arrays(frame, "control", "spend_pre"), t, arrays(frame, variant, "spend_pre")
        )
        assert lift.cuped == cuped
        assert lift.cuped is not None
        assert lift.cuped.variance_reduction > 0.2  # the pre-period explains much of it
        assert lift.sequential == sequential_from_summaries(
            welch.control, welch.treatment, tuning_n=options.tuning_n
        )
        assert lift.bayesian == bayesian_from_summaries(welch.control, welch.treatment)
        proportion = result.lift("converted", variant)
        reference = compare_proportions(
            arrays(frame, "control", "converted"), arrays(frame, variant, "converted")
        )
        assert proportion.comparison == reference.welch
        assert proportion.z_p_value == reference.z_p_value
        ratio = result.lift("aov", variant)
        assert ratio.comparison == compare_ratios(
            arrays(frame, "control", "gross"),
            arrays(frame, "control", "orders"),
            arrays(frame, variant, "gross"),
            arrays(frame, variant, "orders"),
        )
        assert ratio.cuped is None
        assert ratio.cuped_message == "not applied to a ratio metric"
        loss = result.lift("loss", variant)
        assert loss.bayesian is not None
        assert loss.bayesian.lower_is_better
    # and the p-values are adjusted together, across metrics and variants
    raw = [x.absolute.p_value for x in result.lifts]
    adjusted = adjust_p_values(raw, method="bh").adjusted
    assert [x.adjusted_p_value for x in result.lifts] == pytest.approx(adjusted.tolist())
    frame_out = result.to_frame()
    assert frame_out.height == len(SPECS) * 2
    assert frame_out["adjusted_p_value"].to_list() == pytest.approx(adjusted.tolist())
    assert frame_out.filter(pl.col("metric") == "spend")["role"].unique().to_list() == ["primary"]


def test_srm_warning_fires_on_a_skewed_allocation() -> None:
    # given 1,000 control and 820 treatment customers of a 50/50 design
    frame = synthetic({"control": 1000, "treatment": 820}, {"treatment": 0.5})
    # when analysing
    result = analyze(design(), frame, SPECS, AnalysisOptions(), primary_metric="spend")
    # then the mismatch is flagged, and the verdict refuses to read the lift
    expected = stats.chisquare([1000, 820], [910, 910])
    assert result.srm.p_value == pytest.approx(float(expected.pvalue))
    assert result.srm.p_value < 0.001
    assert result.srm.mismatch
    assert result.verdicts[0].decision == "invalid"
    assert "sample ratio mismatch" in result.verdicts[0].text
    assert result.srm_frame()["observed"].to_list() == [1000, 820]
    # while a balanced allocation passes
    balanced = synthetic({"control": 1000, "treatment": 1000}, {"treatment": 0.5})
    fine = analyze(design(), balanced, SPECS, AnalysisOptions(), primary_metric="spend")
    assert not fine.srm.mismatch
    assert fine.verdicts[0].decision == "ship"


def test_capping_winsorizes_mean_metrics_at_the_pooled_quantile() -> None:
    frame = synthetic({"control": 2000, "treatment": 2000}, {"treatment": 0.05})
    result = analyze(
        design(), frame, SPECS, AnalysisOptions(cap_quantile=0.95), primary_metric="spend"
    )
    spend = frame["spend"].to_numpy()
    cap = np.percentile(spend, 95)
    c = np.minimum(arrays(frame, "control", "spend"), cap)
    t = np.minimum(arrays(frame, "treatment", "spend"), cap)
    lift = result.lift("spend", "treatment")
    assert lift.cap == pytest.approx(cap)
    assert lift.n_capped == int((spend > cap).sum())
    assert lift.absolute.estimate == pytest.approx(t.mean() - c.mean(), rel=1e-12)
    # proportions and ratios are never capped; the stored customers stay raw
    assert result.lift("converted", "treatment").cap is None
    assert result.lift("aov", "treatment").cap is None
    assert result.customers["spend"].max() == pytest.approx(spend.max())


def test_a_metric_without_data_gives_a_message_not_a_number() -> None:
    frame = synthetic({"control": 500, "treatment": 500}, {}).with_columns(
        pl.lit(0.0).alias("loss")
    )
    result = analyze(
        design(),
        frame,
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
        missing={"converted": "no claims table"},
    )
    loss = result.lift("loss", "treatment")
    assert loss.comparison is None
    assert math.isnan(loss.absolute.estimate)
    assert loss.message == (
        "loss: every customer has 0 (nothing of it in the window yet): no difference to estimate"
    )
    converted = result.lift("converted", "treatment")
    assert converted.message == "converted: no claims table"
    assert "converted: no claims table" in result.messages
    row = result.to_frame().filter(pl.col("metric") == "loss").row(0, named=True)
    assert row["message"] == loss.message
    assert math.isnan(row["absolute"])
    # a variant with a single customer is reported, not crashed on
    tiny = frame.filter((pl.col("variant") == "control") | (pl.col("customer_id") == "treatment-0"))
    lonely = analyze(design(), tiny, SPECS, AnalysisOptions(), primary_metric="spend")
    assert "1 customer(s) with a value" in str(lonely.lift("spend", "treatment").message)
    assert lonely.verdicts[0].decision in {"inconclusive", "invalid"}


def test_verdicts_in_plain_words() -> None:
    # a clear win on the primary metric, guardrail fine
    win = analyze(
        design(),
        synthetic({"control": 2000, "treatment": 2000}, {"treatment": 0.3}),
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
        guardrail_metrics=["loss"],
    ).verdicts[0]
    assert win.decision == "ship"
    assert win.text.startswith("treatment improves spend: +")
    assert "no guardrail is worse" in win.text
    # the same win, but the guardrail (lower is better) got clearly worse
    harmed = analyze(
        design(),
        synthetic({"control": 2000, "treatment": 2000}, {"treatment": 0.3}, loss_effect=1.0),
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
        guardrail_metrics=["loss"],
    ).verdicts[0]
    assert harmed.decision == "do_not_ship"
    assert "guardrail got worse: loss" in harmed.text
    # nothing happening
    flat = analyze(
        design(),
        synthetic({"control": 2000, "treatment": 2000}, {}, seed=4),
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
    ).verdicts[0]
    assert flat.decision == "inconclusive"
    assert flat.text.startswith("No significant difference on spend yet")
    # a loss on the primary metric
    worse = analyze(
        design(),
        synthetic({"control": 2000, "treatment": 2000}, {"treatment": -0.3}),
        SPECS,
        AnalysisOptions(),
        primary_metric="spend",
    ).verdicts[0]
    assert worse.decision == "do_not_ship"
    assert "makes spend worse" in worse.text


def test_segment_breakdown_is_welch_within_each_segment() -> None:
    frame = synthetic({"control": 1500, "treatment": 1500}, {"treatment": 0.1})
    result = analyze(design(), frame, SPECS, AnalysisOptions(), primary_metric="spend")
    segments = result.segments
    assert set(segments["segment"]) == {"a", "b"}
    assert set(segments["metric"]) == {s.name for s in SPECS}
    for segment in ("a", "b"):
        part = frame.filter(pl.col("segment") == segment)
        c, t = arrays(part, "control", "spend"), arrays(part, "treatment", "spend")
        reference = compare_means(c, t)
        row = segments.filter((pl.col("segment") == segment) & (pl.col("metric") == "spend"))
        assert row["n_control"].item() == c.size
        assert row["absolute"].item() == pytest.approx(reference.absolute.estimate, rel=1e-9)
        assert row["ci_low"].item() == pytest.approx(reference.absolute.ci_low, rel=1e-6)
        assert row["relative_ci_high"].item() == pytest.approx(reference.relative.ci_high, rel=1e-6)
        aov = segments.filter((pl.col("segment") == segment) & (pl.col("metric") == "aov"))
        ratio = compare_ratios(
            arrays(part, "control", "gross"),
            arrays(part, "control", "orders"),
            arrays(part, "treatment", "gross"),
            arrays(part, "treatment", "orders"),
        )
        assert aov["absolute"].item() == pytest.approx(ratio.absolute.estimate, rel=1e-9)
        assert aov["ci_high"].item() == pytest.approx(ratio.absolute.ci_high, rel=1e-6)


def test_the_primary_metric_must_be_analysed() -> None:
    frame = synthetic({"control": 100, "treatment": 100}, {})
    with pytest.raises(ValueError, match="primary metric 'margin' is not analysed"):
        analyze(design(), frame, SPECS, AnalysisOptions(), primary_metric="margin")
