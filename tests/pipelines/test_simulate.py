"""The simulated world behaves as designed, measured on its own output against its truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cashback.attribution import attribute_to_exposures
from cashback.settings import Settings
from cashback.tables import read_table, validate_directory
from pipelines.simulate import run, world_config
from pipelines.simulation.truth import (
    expected_orders,
    expected_spend,
    exposure_windows,
    load_truth,
    window_end,
)

pytestmark = pytest.mark.xdist_group("simulated_worlds")
DAY = 86_400_000_000


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".ip_pepper"
    }


def _small(tmp_path: Path, name: str, seed: int) -> Path:
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=tmp_path)
    config = world_config(settings, customers=600, days=60, seed=seed)
    run(config, tmp_path / name, settings)
    return tmp_path / name


def test_same_seed_gives_identical_files_and_another_seed_different(tmp_path: Path) -> None:
    first = _digests(_small(tmp_path, "a", seed=3))
    again = _digests(_small(tmp_path, "b", seed=3))
    other = _digests(_small(tmp_path, "c", seed=4))
    assert first == again
    assert len(first) >= 13  # every contract table but outcomes, and the truth
    assert (
        first["transactions.parquet/part-00000.parquet"]
        != (other["transactions.parquet/part-00000.parquet"])
    )


def test_chunked_world_is_identical_with_one_or_two_worker_processes(tmp_path: Path) -> None:
    def simulate(name: str, workers: int) -> dict[str, str]:
        settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=tmp_path)
        settings.simulation.workers = workers
        settings.simulation.chunk_customers = 1_000
        config = world_config(settings, customers=2_500, days=30, seed=5)
        run(config, tmp_path / name, settings)
        return _digests(tmp_path / name)

    assert simulate("one", workers=1) == simulate("two", workers=2)


@pytest.mark.parametrize("world", ["default_world", "hard_world"])
def test_the_world_satisfies_the_contract(world: str, request: pytest.FixtureRequest) -> None:
    report = validate_directory(request.getfixturevalue(world))
    assert report.ok, report.summary()


def _exposure_spend(world: Path) -> pl.DataFrame:
    """Spend attributed to each explored (randomized) exposure, with the customer's truth."""
    truth = load_truth(world)
    exposures = read_table(world, "exposures").join(truth.exposures, on="exposure_id")
    purchases = read_table(world, "transactions").filter(pl.col("amount") > 0)
    spend = (
        attribute_to_exposures(purchases.select("customer_id", "ts", "amount"), exposures)
        .group_by("exposure_id")
        .agg(pl.col("amount").sum().alias("spend"))
    )
    return (
        exposures.filter(pl.col("explored"))
        .join(spend, on="exposure_id", how="left")
        .with_columns(pl.col("spend").fill_null(0.0))
        .collect()
        .join(truth.customers, on="customer_id")
    )


def _ratio_and_se(frame: pl.DataFrame, high: float, low: float) -> tuple[float, float]:
    """Mean spend at `high` over mean spend at `low`, with a delta-method standard error."""
    a = frame.filter(pl.col("rate") == high)["spend"].to_numpy()
    b = frame.filter(pl.col("rate") == low)["spend"].to_numpy()
    ratio = a.mean() / b.mean()
    se = ratio * np.sqrt(a.var() / a.size / a.mean() ** 2 + b.var() / b.size / b.mean() ** 2)
    return float(ratio), float(se)


@pytest.mark.parametrize(("world", "min_lift"), [("default_world", 1.15), ("hard_world", 1.0)])
def test_spend_rises_with_rate_for_responders_and_stays_flat_for_the_others(
    world: str, min_lift: float, request: pytest.FixtureRequest
) -> None:
    # given the randomized exposures, split by the truth of who reacts to cashback at all
    spend = _exposure_spend(request.getfixturevalue(world))
    responders = spend.filter(pl.col("freq_gain") > 0)
    others = spend.filter((pl.col("freq_gain") == 0) & (pl.col("basket_gain") == 0))
    # when comparing the top of the grid with no cashback
    up, up_se = _ratio_and_se(responders, 0.08, 0.0)
    flat, flat_se = _ratio_and_se(others, 0.08, 0.0)
    # then responders spend clearly more (weaker in the hard preset) and the others the same
    assert up - 4 * up_se > min_lift
    assert abs(flat - 1) < max(4 * flat_se, 0.05)


def test_rate_sensitive_segments_respond_and_loyal_regulars_do_not(default_world: Path) -> None:
    spend = _exposure_spend(default_world)
    hunters, h_se = _ratio_and_se(spend.filter(pl.col("segment") == "bargain_hunter"), 0.08, 0.0)
    loyal, l_se = _ratio_and_se(spend.filter(pl.col("segment") == "loyal_regular"), 0.08, 0.0)
    assert hunters - 4 * h_se > 1.4
    assert abs(loyal - 1) < max(4 * l_se, 0.08)


@pytest.mark.parametrize("world", ["default_world", "hard_world"])
def test_truth_expected_spend_matches_the_simulated_spend(
    world: str, request: pytest.FixtureRequest
) -> None:
    # given flat-offer randomized exposures of customers who were active through the window
    directory = request.getfixturevalue(world)
    truth = load_truth(directory)
    spend = _exposure_spend(directory).filter(
        pl.col("offer_id").str.starts_with("flat"),
        pl.col("churned_ts").is_null() & pl.col("alive_at_start"),
        pl.col("role") == "legit",
    )
    # when the truth computes each exposure's expected spend at its rate and start
    expected = expected_spend(spend, truth.config, spend["rate"].to_numpy(), spend["ts"], 7.0)
    # then totals agree within sampling noise, overall and at each rate
    assert spend["spend"].sum() == pytest.approx(expected.sum(), rel=0.04)
    by_rate = (
        spend.with_columns(pl.Series("expected", expected))
        .group_by("rate")
        .agg(pl.col("spend").sum(), pl.col("expected").sum())
    )
    for row in by_rate.iter_rows(named=True):
        assert row["spend"] == pytest.approx(row["expected"], rel=0.1), row


def test_truth_windows_hour_by_hour_add_up_to_the_expected_orders(default_world: Path) -> None:
    # given the last exposures of honest customers, their windows cut where the customer churned
    truth = load_truth(default_world)
    honest = truth.customers.filter(pl.col("role") == "legit").select("customer_id")
    exposures = read_table(default_world, "exposures").join(honest.lazy(), on="customer_id")
    exposures = exposures.sort("ts", "exposure_id").collect().tail(5_000)
    windows = exposure_windows(default_world, truth, exposures)
    end = window_end(exposures["valid_until"], windows.customers["churned_ts"])
    days = (end - exposures["ts"]).dt.total_microseconds().to_numpy() / DAY

    # when their orders at no cashback are added up hour by hour
    by_hour = windows.orders.sum(axis=1)

    # then they are the truth's expected orders over each window, and churns cut some windows
    expected = expected_orders(windows.customers, truth.config, 0.0, exposures["ts"], days)
    np.testing.assert_allclose(by_hour, expected, rtol=1e-9)
    assert (days < 7).any()
    assert (days <= 7).all()


@pytest.mark.parametrize("world", ["default_world", "hard_world"])
def test_logged_propensities_equal_the_empirical_rate_frequencies(
    world: str, request: pytest.FixtureRequest
) -> None:
    directory = request.getfixturevalue(world)
    truth = load_truth(directory)
    logged = (
        read_table(directory, "exposures")
        .filter(pl.col("policy_version") == "logging_v1", pl.col("experiment_id").is_null())
        .join(truth.exposures, on="exposure_id")
        .collect()
        .join(truth.customers.select("customer_id", "segment"), on="customer_id")
    )
    cells = (
        logged.group_by("segment", "rate")
        .agg(pl.len().alias("n"), pl.col("propensity").mean().alias("logged"))
        .with_columns((pl.col("n") / pl.col("n").sum().over("segment")).alias("empirical"))
        .with_columns(pl.col("n").sum().over("segment").alias("total"))
    )
    se = np.sqrt(cells["logged"] * (1 - cells["logged"]) / cells["total"])
    assert len(cells) == 5 * 6  # every grid rate is explored in every segment
    assert (abs(cells["empirical"] - cells["logged"]) < 4 * se + 1e-3).all()
    assert set(np.round(cells["logged"].unique().to_numpy(), 6)) == {
        round(0.2 / 6, 6),
        round(0.8 + 0.2 / 6, 6),
    }


@pytest.mark.parametrize(
    ("world", "chargeback_share"), [("default_world", 0.6), ("hard_world", 0.25)]
)
def test_fraud_share_and_label_delays_fall_in_the_set_ranges(
    world: str, chargeback_share: float, request: pytest.FixtureRequest
) -> None:
    directory = request.getfixturevalue(world)
    truth = load_truth(directory)
    claims = read_table(directory, "claims").join(truth.claims, on="claim_id").collect()
    labels = read_table(directory, "claim_labels").collect().join(claims, on="claim_id")
    delay = (labels["decided_ts"] - labels["ts"]).dt.total_microseconds() / DAY
    labels = labels.with_columns(delay.alias("delay"))

    assert claims["is_fraud"].mean() == pytest.approx(0.02, abs=0.002)
    assert set(claims.filter("is_fraud")["abuse_type"].unique()) == {
        "multi_account",
        "receipt_reuse",
        "claim_then_return",
        "velocity",
        "new_account",
    }
    chargebacks = labels.filter(pl.col("source") == "chargeback")
    audits = labels.filter(pl.col("source") == "audit")
    assert chargebacks["delay"].min() >= 30
    assert chargebacks["delay"].max() <= 90
    assert audits["delay"].min() >= 15
    assert audits["delay"].max() <= 30
    assert chargebacks["is_fraud"].all()
    # mature claims (every label delay has passed) show the configured shares
    end = claims["ts"].max()
    mature = claims.filter(pl.col("ts") < end - pl.duration(days=90))
    mature_labels = labels.filter(pl.col("claim_id").is_in(mature["claim_id"].implode()))
    audited = mature_labels.filter(pl.col("source") == "audit").height / mature.height
    assert audited == pytest.approx(0.01, abs=0.003)
    caught = mature_labels.filter(pl.col("source") == "chargeback").height
    assert caught / mature["is_fraud"].sum() == pytest.approx(chargeback_share, abs=0.06)


def test_hard_preset_audit_labels_are_noisy_and_default_ones_exact(
    default_world: Path, hard_world: Path
) -> None:
    def wrong_share(directory: Path) -> float:
        truth = load_truth(directory)
        audits = (
            read_table(directory, "claim_labels")
            .filter(pl.col("source") == "audit")
            .join(truth.claims, on="claim_id")
            .collect()
        )
        return float(((audits["label"] == "fraud") != audits["is_fraud"]).mean())

    assert wrong_share(default_world) == 0.0
    assert wrong_share(hard_world) == pytest.approx(0.10, abs=0.04)


def test_rings_share_devices_across_accounts_and_honest_customers_do_not(
    default_world: Path,
) -> None:
    truth = load_truth(default_world)
    claims = read_table(default_world, "claims").join(truth.claims, on="claim_id").collect()
    accounts_per_device = claims.group_by("device_id").agg(
        pl.col("customer_id").n_unique().alias("accounts"),
        (pl.col("abuse_type") == "multi_account").any().alias("ring"),
    )
    ring = accounts_per_device.filter("ring")["accounts"]
    honest = accounts_per_device.filter(~pl.col("ring"))["accounts"]
    assert ring.median() >= 3
    assert honest.max() == 1


def test_returns_link_to_earlier_purchases_and_abusers_return_more(default_world: Path) -> None:
    truth = load_truth(default_world)
    txns = read_table(default_world, "transactions").collect()
    returns = txns.filter(pl.col("amount") < 0)
    share = returns.height / txns.filter(pl.col("amount") > 0).height
    assert 0.02 < share < 0.08
    claims = read_table(default_world, "claims").join(truth.claims, on="claim_id").collect()
    returned = set(returns["original_txn_id"].to_list())
    by_type = (
        claims.with_columns(pl.col("txn_id").is_in(list(returned)).alias("returned"))
        .group_by(pl.col("abuse_type").fill_null("honest"))
        .agg(pl.col("returned").mean())
    )
    rates = dict(by_type.iter_rows())
    assert rates["claim_then_return"] > 0.8
    assert rates["honest"] < 0.1


def test_churn_rises_with_inactivity_and_falls_with_cashback_received(default_world: Path) -> None:
    truth = load_truth(default_world)
    customers = truth.customers.filter(pl.col("role") == "legit", pl.col("alive_at_start"))
    churned = customers["churned_ts"].is_not_null()
    assert 0.05 < churned.mean() < 0.5
    # segments with higher base hazards churn more: lapsing and new explorers vs loyal regulars
    by_segment = dict(
        customers.with_columns(churned.alias("churned"))
        .group_by("segment")
        .agg(pl.col("churned").mean())
        .iter_rows()
    )
    assert by_segment["lapsing"] > 2 * by_segment["loyal_regular"]
    assert by_segment["new_explorer"] > 2 * by_segment["loyal_regular"]


def _pattern_mix_by_half(directory: Path) -> pl.DataFrame:
    truth = load_truth(directory)
    claims = read_table(directory, "claims").join(truth.claims, on="claim_id").collect()
    middle = claims["ts"].min() + (claims["ts"].max() - claims["ts"].min()) / 2
    return (
        claims.filter("is_fraud")
        .with_columns((pl.col("ts") >= middle).alias("late"))
        .group_by("late", "abuse_type")
        .agg(pl.len().alias("n"))
        .with_columns((pl.col("n") / pl.col("n").sum().over("late")).alias("share"))
        .pivot("late", index="abuse_type", values="share")
        .fill_null(0.0)
    )


def test_hard_preset_fraud_patterns_drift_over_time_and_default_ones_do_not(
    default_world: Path, hard_world: Path
) -> None:
    def largest_shift(directory: Path) -> float:
        mix = _pattern_mix_by_half(directory)
        return float((mix["true"] - mix["false"]).abs().max())

    assert largest_shift(hard_world) > 0.08
    assert largest_shift(default_world) < 0.05


def test_churn_is_predictable_from_recency_but_not_trivially(default_world: Path) -> None:
    from sklearn.metrics import roc_auc_score

    # given a snapshot mid-year: customers who bought before it and had not churned
    truth = load_truth(default_world)
    purchases = read_table(default_world, "transactions").filter(pl.col("amount") > 0)
    snapshot = truth.config.start_dt + (truth.config.end_dt - truth.config.start_dt) / 2
    horizon = pl.duration(days=90)
    last = (
        purchases.filter(pl.col("ts") < snapshot)
        .group_by("customer_id")
        .agg(pl.col("ts").max().alias("last"))
    )
    later = (
        purchases.filter(pl.col("ts") >= snapshot, pl.col("ts") < pl.lit(snapshot) + horizon)
        .select("customer_id")
        .unique()
        .with_columns(pl.lit(value=True).alias("bought_later"))
    )
    frame = (
        last.join(later, on="customer_id", how="left")
        .with_columns(pl.col("bought_later").fill_null(value=False))
        .collect()
    )
    # when recency alone scores "no purchase in the next 90 days"
    recency = frame.select((pl.lit(snapshot) - pl.col("last")).dt.total_hours()).to_series()
    auc = roc_auc_score(~frame["bought_later"].to_numpy(), recency.to_numpy())
    # then it is informative but far from perfect: there is room for a model
    assert 0.65 < auc < 0.95
