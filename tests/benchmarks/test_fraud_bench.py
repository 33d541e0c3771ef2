"""Fraud scoring speed: `FraudScorer` against the booster alone and a naive path, same run.

A fraud model is trained as `cashback train fraud` trains it (`pipelines.train_fraud.run` on
a simulated world, not registered): its scorer holds the booster, the anomaly scorer, the
calibrator, the thresholds and `config/fraud_rules.yaml`. In one process:

- batch: `score_frame` on the test slice's claims repeated to `batch_rows` rows (it encodes
  the polars frame, scores the anomaly, runs the booster, calibrates, evaluates the rules and
  decides) against `Booster.predict` alone on the same rows, already encoded with their
  anomaly column (the very matrix our path hands the booster), alternated, best of n each.
  The ratio is our rows/s over the booster's: the share of the booster's speed that the
  whole path keeps (target >= 0.8). The ratio of their CPU times is recorded too: it does
  not depend on how many cores each side got (on a busy machine, our thread pool can win a
  larger share of the cores than the booster's and flatter the wall-time ratio). The
  probabilities are compared bit for bit, and one timing of each stage of ours (and of the
  rules on every row, as they were run before) shows where the rest goes;
- one claim: `score_one(features)` (the serving path, without reasons) against a naive one:
  a pandas DataFrame of the claim, sklearn `IsolationForest.score_samples` on the imputed
  row, `Booster.predict` on the DataFrame, then the same calibration, rules and decision.
  One naive call every few of ours, after a warm-up; latency percentiles of each (target:
  ours p99 < 1 ms); the answers are compared, and `score_one` must give exactly the batch's
  numbers, rule hits and decision;
- reasons: `explain_frame` (tree SHAP) on the claims the model flags (review or block), per
  claim, and on one claim at a time (latency percentiles), against `score_one`.

Other work on the machine slows both sides of a ratio, and widens latency tails: the
1-minute load average and the CPU share each side got (CPU time / wall time; the machine's
cores are the ceiling) are recorded with the figures. The full benchmark (`make bench`)
trains on the 20,000-customer year of `tests/conftest.py` and scores 500,000 rows; the smoke
version (`make test`) trains on a small world, checks that the figures are written and that
the paths agree, and asserts no speed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from cashback.settings import FraudSettings, Settings
from models.fraud.dataset import CATEGORICAL, encode
from models.fraud.decisions import decide_one
from models.fraud.model import ANOMALY_FEATURE
from models.fraud.scorer import SCORE_COLUMNS, FraudScorer, flagged
from pipelines import simulate, train_fraud
from tests.benchmarks.conftest import PROJECT_ROOT, RESULTS_DIR, print_table, write_results

PEPPER = "test-pepper-not-a-secret"
RULES = PROJECT_ROOT / "config" / "fraud_rules.yaml"
BATCH_RATIO_MIN = 0.8
ONE_CLAIM_P99_LIMIT_MS = 1.0
NAIVE_TOLERANCE = 1e-9  # sklearn's anomaly score is ours to 1e-12, not bit for bit
ONE_VS_BATCH_CLAIMS = 2_000  # claims whose score_one is compared with the batch
CLAIM_FIELDS = ("amount", "cashback_amount")  # never missing in a claim


@dataclass(frozen=True)
class Size:
    """How much to score and how often."""

    batch_rows: int
    batch_repeats: int  # runs of each side, alternated
    calls: int  # score_one calls timed (after the warm-up)
    naive_every: int  # one naive call per this many of ours
    explain_calls: int  # explain_frame calls on one claim
    explain_repeats: int  # runs of explain_frame on every flagged claim
    warmup: int = 100


FULL = Size(
    batch_rows=500_000,
    batch_repeats=3,
    calls=5_000,
    naive_every=10,
    explain_calls=300,
    explain_repeats=2,
)
SMOKE = Size(
    batch_rows=8_000,
    batch_repeats=1,
    calls=200,
    naive_every=10,
    explain_calls=20,
    explain_repeats=1,
    warmup=20,
)


@dataclass(frozen=True)
class Trained:
    """A training run and what it cost."""

    training: train_fraud.FraudTraining
    world: str
    train_s: float


def _train(world: Path, fraud: FraudSettings, description: str) -> Trained:
    started = time.perf_counter()
    training = train_fraud.run(
        Settings(ip_pepper=PEPPER, data_dir=world, fraud=fraud), register=False
    )
    return Trained(training, description, time.perf_counter() - started)


@pytest.fixture(scope="module")
def full_model(default_world: Path) -> Trained:
    """The model of the 20,000-customer default world (tests/conftest.py), default settings."""
    return _train(
        default_world,
        FraudSettings(rules_file=RULES),
        "default preset, 20,000 customers, 365 days, seed 11",
    )


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small world (3,000 customers, 200 days) and a quick model (60-day maturity)."""
    root = tmp_path_factory.mktemp("fraud-bench")
    settings = Settings(ip_pepper=PEPPER, data_dir=root)
    config = simulate.world_config(settings, customers=3_000, days=200, seed=11, preset="default")
    simulate.run(config, root / "world", settings)
    fraud = FraudSettings(
        maturity_days=60, max_rounds=20, early_stopping_rounds=10, rules_file=RULES
    )
    return _train(root / "world", fraud, "default preset, 3,000 customers, 200 days, seed 11")


# ------------------------------------------------------------------------------- helpers


def _inputs(claims: pl.DataFrame) -> pl.DataFrame:
    """The claims as they come to be scored: without any score column."""
    return claims.drop([c for c in (*SCORE_COLUMNS, "rule_score") if c in claims.columns])


def _repeated(claims: pl.DataFrame, rows: int) -> pl.DataFrame:
    copies = -(-rows // claims.height)
    return pl.concat([claims] * copies).head(rows).rechunk()


def _percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {
        "calls": len(us),
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p90_us": round(float(np.percentile(us, 90)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
        "mean_us": round(float(us.mean()), 1),
        "max_us": round(float(us.max()), 1),
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(function: Callable[[], Any]) -> tuple[Any, float, float]:
    """What `function()` returned, its wall time and the CPU time of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = function()
    return out, time.perf_counter() - wall, time.process_time() - cpu


# --------------------------------------------------------------------------------- batch


def _stages(scorer: FraudScorer, frame: pl.DataFrame) -> dict[str, float]:
    """One timing of each stage of `score_frame` but the booster (the batch's best is that)."""
    full, encode_s, _ = _timed(lambda: encode(frame, scorer.model.features, spare_columns=1))
    _, anomaly_s, _ = _timed(lambda: scorer.model.anomaly.score(full[:, :-1]))
    with_scores = frame.with_columns(
        pl.lit(0.5).alias("anomaly_score"), pl.lit(0.01).alias("probability")
    )
    _, rules_s, _ = _timed(lambda: scorer._evaluate_rules(with_scores))
    _, rules_all_s, _ = _timed(lambda: scorer.rules.evaluate(with_scores))
    return {
        "encode_s": round(encode_s, 4),
        "anomaly_s": round(anomaly_s, 4),
        "rules_s": round(rules_s, 4),
        "rules_evaluate_on_every_row_s": round(rules_all_s, 4),
    }


def _batch(scorer: FraudScorer, claims: pl.DataFrame, size: Size) -> dict[str, Any]:
    """Best-of-n rows/s of score_frame and of the booster alone, alternated, same rows."""
    frame = _repeated(claims, size.batch_rows)
    booster = scorer.model.booster
    matrix = scorer.model.with_anomaly(scorer.matrix(frame))  # the booster's input, once
    scorer.score_frame(frame.head(1_000))  # warm-up
    booster.predict(matrix[:1_000], raw_score=True)
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "booster": []}
    results: dict[str, Any] = {}
    sides: dict[str, Callable[[], Any]] = {
        "ours": lambda: scorer.score_frame(frame),
        "booster": lambda: booster.predict(matrix, raw_score=True),
    }
    load_before = _load()
    for i in range(size.batch_repeats):
        for side in ("ours", "booster") if i % 2 == 0 else ("booster", "ours"):
            results[side], wall, cpu = _timed(sides[side])
            runs[side].append((wall, cpu))
    load_after = _load()
    probability = results["ours"]["probability"].to_numpy()
    raw = scorer.model.calibrator.probability(np.asarray(results["booster"]))
    best = {side: min(w for w, _ in timings) for side, timings in runs.items()}
    return {
        "rows": frame.height,
        "features": matrix.shape[1],
        "booster_trees": booster.num_trees(),
        "ours_score_frame_s": round(best["ours"], 3),
        "booster_predict_s": round(best["booster"], 3),
        "ours_rows_per_s": round(frame.height / best["ours"]),
        "booster_rows_per_s": round(frame.height / best["booster"]),
        "runs_wall_cpu_s": {
            side: [[round(w, 3), round(c, 3)] for w, c in timings] for side, timings in runs.items()
        },
        "cpu_share": {
            side: round(sum(c for _, c in timings) / sum(w for w, _ in timings), 2)
            for side, timings in runs.items()
        },
        "load_average_1m": [load_before, load_after],
        "stages": _stages(scorer, frame),
        "probabilities_identical": bool(np.array_equal(probability, raw)),
    }


# ----------------------------------------------------------------------------- one claim


class NaiveOneClaim:
    """The naive one-claim path: pandas, sklearn's own forest, `Booster.predict` per call.

    The claim becomes a one-row pandas DataFrame of the model features (categoricals as their
    vocabulary index), imputed with the training medians for sklearn's
    `IsolationForest.score_samples`, then `Booster.predict` on the DataFrame with the
    anomaly column; the calibration, the rules and the decision are the scorer's.
    """

    def __init__(self, scorer: FraudScorer) -> None:
        forest = scorer.model.anomaly.forest_
        assert forest is not None, "a model trained in this process keeps its forest"
        self.scorer = scorer
        self.forest = forest
        self.features = scorer.model.features
        self.medians = pd.Series(scorer.model.anomaly.medians_, index=self.features)
        self.codes = {k: {v: i for i, v in enumerate(vs)} for k, vs in CATEGORICAL.items()}

    def __call__(self, claim: Mapping[str, object]) -> tuple[float, str]:
        """The claim's probability and decision."""
        frame = pd.DataFrame([claim], columns=self.features)
        for name, codes in self.codes.items():
            frame[name] = frame[name].map(codes)
        frame = frame.astype(np.float64)
        anomaly = -float(self.forest.score_samples(frame.fillna(self.medians).to_numpy())[0])
        frame[ANOMALY_FEATURE] = anomaly
        model = self.scorer.model
        margin = float(model.booster.predict(frame, raw_score=True)[0])
        probability = float(model.calibrator.probability(np.array([margin]))[0])
        verdict = self.scorer.rules.evaluate_one(claim)
        cashback = float(claim["cashback_amount"])  # type: ignore[arg-type]
        return probability, decide_one(probability, cashback, verdict.action, self.scorer.limits)


def _one_vs_batch(scorer: FraudScorer, claims: pl.DataFrame) -> dict[str, Any]:
    """score_one on each claim against the batch's row: every figure must be the same."""
    batch = scorer.score_frame(claims)
    differ = 0
    for claim, row in zip(claims.iter_rows(named=True), batch.iter_rows(named=True), strict=True):
        one = scorer.score_one(claim)
        same = (
            one.probability == row["probability"]
            and one.anomaly_score == row["anomaly_score"]
            and one.risk_score == row["risk_score"]
            and one.expected_loss == row["expected_loss"]
            and list(one.rule_hits) == row["rule_hits"]
            and one.decision == row["decision"]
        )
        differ += not same
    rules = scorer.rules.evaluate(claims)
    return {
        "claims": claims.height,
        "claims_differing": differ,
        "rule_columns_are_the_rules_own": batch.select("rule_hits", "rule_action").equals(
            rules.select("rule_hits", "rule_action")
        ),
    }


def _edge_claims(scorer: FraudScorer, claims: pl.DataFrame) -> pl.DataFrame:
    """Claims whose rule features are, at random, null, NaN or exactly a rule's threshold.

    The claim's own amounts are always known: they only get put on thresholds.
    """
    rng = np.random.default_rng(0)
    frame = claims.head(ONE_VS_BATCH_CLAIMS)
    thresholds: dict[str, list[float]] = {}
    for rule in scorer.rules.rules:
        for condition in rule.conditions():
            thresholds.setdefault(condition.feature, []).append(condition.value)
    edited = []
    for name, values in thresholds.items():
        column = frame[name]
        draw = rng.random(frame.height)
        if not column.dtype.is_numeric():
            edited.append(column.scatter(np.flatnonzero(draw < 0.2), None))
            continue
        if name in CLAIM_FIELDS:
            draw = np.maximum(draw, 0.2)
        x = column.cast(pl.Float64).to_numpy().copy()
        x[draw < 0.2] = np.nan
        on = (draw >= 0.2) & (draw < 0.4)
        x[on] = rng.choice(values, int(on.sum()))
        series = pl.Series(name, x)
        if column.dtype.is_float():  # half of the gaps null, half NaN
            gaps = pl.select(pl.when(pl.lit(draw < 0.1)).then(None).otherwise(series))
            edited.append(gaps.to_series().alias(name))
        else:
            edited.append(series.fill_nan(None).cast(column.dtype))
    return frame.with_columns(edited)


def _one_claim(scorer: FraudScorer, claims: pl.DataFrame, size: Size) -> dict[str, Any]:
    """Interleaved latencies of score_one and of the naive path, answers compared."""
    naive = NaiveOneClaim(scorer)
    requests = claims.to_dicts()
    for i in range(size.warmup):
        scorer.score_one(requests[i % len(requests)])
        if i % size.naive_every == 0:
            naive(requests[i % len(requests)])
    ours: list[float] = []
    theirs: list[float] = []
    worst = 0.0
    decisions_differ = 0
    clock = time.perf_counter
    load_before = _load()
    for i in range(size.calls):
        claim = requests[i % len(requests)]
        started = clock()
        got = scorer.score_one(claim)
        ours.append(clock() - started)
        if i % size.naive_every == 0:
            started = clock()
            probability, decision = naive(claim)
            theirs.append(clock() - started)
            worst = max(worst, abs(got.probability - probability))
            decisions_differ += decision != got.decision
    return {
        "ours_score_one": _percentiles(ours),
        "naive_pandas_sklearn_booster": _percentiles(theirs),
        "max_abs_probability_difference": worst,
        "decisions_differing": decisions_differ,
        "load_average_1m": [load_before, _load()],
        "one_vs_batch": _one_vs_batch(scorer, claims.head(ONE_VS_BATCH_CLAIMS)),
        "one_vs_batch_edge_claims": _one_vs_batch(scorer, _edge_claims(scorer, claims)),
    }


# ------------------------------------------------------------------------------- reasons


def _reasons(
    scorer: FraudScorer, claims: pl.DataFrame, size: Size, score_one: dict[str, float]
) -> dict[str, Any]:
    """explain_frame on every flagged claim (per claim) and on one claim at a time."""
    hits = scorer.score_frame(claims).filter(flagged(pl.col("decision")))
    hits = _inputs(hits)
    best = np.inf
    for _ in range(size.explain_repeats):
        _, wall, _ = _timed(lambda: scorer.explain_frame(hits))
        best = min(best, wall)
    singles = [hits.slice(i, 1) for i in range(min(hits.height, size.explain_calls))]
    for single in singles[:5]:  # warm-up
        scorer.explain_frame(single)
    seconds = []
    for i in range(size.explain_calls):
        single = singles[i % len(singles)]
        started = time.perf_counter()
        scorer.explain_frame(single)
        seconds.append(time.perf_counter() - started)
    one = _percentiles(seconds)
    per_claim_us = best / hits.height * 1e6
    return {
        "flagged_claims": hits.height,
        "batch_s": round(best, 4),
        "batch_per_claim_us": round(per_claim_us, 1),
        "one_claim": one,
        "batch_per_claim_over_score_one_p50": round(per_claim_us / score_one["p50_us"], 1),
        "one_claim_p50_over_score_one_p50": round(one["p50_us"] / score_one["p50_us"], 1),
    }


# ------------------------------------------------------------------------------- the run


def run_benchmark(trained: Trained, size: Size) -> dict[str, Any]:
    """Time the batch, one claim and the reasons, ours and the baselines, in this process."""
    scorer = trained.training.scorer
    claims = _inputs(trained.training.test)
    batch = _batch(scorer, claims, size)
    one = _one_claim(scorer, claims, size)
    reasons = _reasons(scorer, claims, size, one["ours_score_one"])
    naive = one["naive_pandas_sklearn_booster"]
    return {
        "size": asdict(size),
        "world": trained.world,
        "train_s": round(trained.train_s, 1),
        "test_claims": claims.height,
        "cpu_count": os.cpu_count(),
        "batch": batch,
        "one_claim": one,
        "reasons": reasons,
        "ratios": {
            "batch_rows_per_s_over_booster": round(
                batch["ours_rows_per_s"] / batch["booster_rows_per_s"], 3
            ),
            "batch_cpu_s_booster_over_ours": round(
                min(c for _, c in batch["runs_wall_cpu_s"]["booster"])
                / min(c for _, c in batch["runs_wall_cpu_s"]["ours"]),
                3,
            ),
            "one_claim_naive_over_ours_p50": round(
                naive["p50_us"] / one["ours_score_one"]["p50_us"], 1
            ),
            "one_claim_naive_over_ours_p99": round(
                naive["p99_us"] / one["ours_score_one"]["p99_us"], 1
            ),
            "reasons_one_claim_over_score_one_p50": reasons["one_claim_p50_over_score_one_p50"],
        },
    }


def _report(title: str, result: dict[str, Any]) -> None:
    batch, one, reasons = result["batch"], result["one_claim"], result["reasons"]
    print_table(
        f"{title}: batch of {batch['rows']:,} claims",
        [
            (
                "ours score_frame",
                f"{batch['ours_score_frame_s']:.3f}",
                f"{batch['ours_rows_per_s']:,}",
                f"{batch['cpu_share']['ours']:.2f}",
            ),
            (
                "Booster.predict alone",
                f"{batch['booster_predict_s']:.3f}",
                f"{batch['booster_rows_per_s']:,}",
                f"{batch['cpu_share']['booster']:.2f}",
            ),
        ],
        ("method", "best s", "rows/s", "cpu share"),
    )
    print(f"  stages of ours (s): {batch['stages']}")
    rows: list[tuple[str, ...]] = [
        (
            name,
            str(stats["calls"]),
            f"{stats['p50_us']:,.1f}",
            f"{stats['p99_us']:,.1f}",
            f"{stats['mean_us']:,.1f}",
        )
        for name, stats in (
            ("ours score_one", one["ours_score_one"]),
            ("naive pandas+sklearn+Booster", one["naive_pandas_sklearn_booster"]),
            ("explain_frame one claim", reasons["one_claim"]),
        )
    ]
    print_table("one claim", rows, ("method", "calls", "p50 µs", "p99 µs", "mean µs"))
    print(
        f"  explain_frame on {reasons['flagged_claims']:,} flagged claims: "
        f"{reasons['batch_per_claim_us']:,.1f} µs a claim"
    )
    print(f"  ratios: {result['ratios']}")
    print(
        f"  load average (1 min), batch: {batch['load_average_1m']}, one: {one['load_average_1m']}"
    )


def _assert_same_answers(result: dict[str, Any]) -> None:
    one = result["one_claim"]
    assert result["batch"]["probabilities_identical"]
    for check in ("one_vs_batch", "one_vs_batch_edge_claims"):
        assert one[check]["claims_differing"] == 0
        assert one[check]["rule_columns_are_the_rules_own"]
    assert one["max_abs_probability_difference"] <= NAIVE_TOLERANCE
    assert one["decisions_differing"] == 0


NOTE = (
    "batch: best of n wall times of FraudScorer.score_frame (polars claims in: encode, "
    "anomaly score, booster, calibration, rules, decision) and of Booster.predict alone on "
    "the same rows already encoded with the anomaly column, alternated; ratio = our rows/s "
    "over the booster's. cpu_share = CPU time / wall time (2 cores: up to 2). one claim: "
    "score_one(features) without reasons vs a naive path (pandas DataFrame, sklearn "
    "IsolationForest.score_samples on the imputed row, Booster.predict on the DataFrame, "
    "same calibration, rules and decision), interleaved after a warm-up. reasons: "
    "explain_frame (tree SHAP) on the flagged claims and on one claim at a time."
)


def test_smoke_fraud_figures_are_written_and_every_path_agrees(smoke_model: Trained) -> None:
    # given a model trained on a small world (3,000 customers, 200 days)
    started = time.perf_counter()

    # when the batch, single claims and the reasons are timed at smoke size
    result = run_benchmark(smoke_model, SMOKE)
    path = write_results(
        "fraud_smoke",
        {"note": f"smoke size only: the figures say nothing about speed. {NOTE}", **result},
    )
    _report("fraud scoring smoke", result)

    # then the figures are written, the paths agree, and it stays quick
    written = json.loads(path.read_text())
    assert path.parent == RESULTS_DIR
    assert written["batch"]["rows"] == SMOKE.batch_rows
    assert written["one_claim"]["ours_score_one"]["calls"] == SMOKE.calls
    assert written["reasons"]["flagged_claims"] > 0
    _assert_same_answers(result)
    assert time.perf_counter() - started < 60


@pytest.mark.bench
def test_batch_keeps_up_with_the_booster_and_one_claim_meets_the_request_budget(
    full_model: Trained,
) -> None:
    # given the model of the 20,000-customer year (default settings and rules)
    # when 500,000 claims are scored in batch and 5,000 one at a time, with the baselines
    result = run_benchmark(full_model, FULL)
    write_results(
        "fraud",
        {
            "note": NOTE,
            "targets": {
                "batch_ratio_min": BATCH_RATIO_MIN,
                "one_claim_p99_ms_max": ONE_CLAIM_P99_LIMIT_MS,
            },
            **result,
        },
    )
    _report("fraud scoring benchmark", result)

    # then the answers agree, and the targets hold
    _assert_same_answers(result)
    assert result["ratios"]["batch_rows_per_s_over_booster"] >= BATCH_RATIO_MIN
    assert result["one_claim"]["ours_score_one"]["p99_us"] < ONE_CLAIM_P99_LIMIT_MS * 1000
