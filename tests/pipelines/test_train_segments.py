"""Behaviour segments on simulated worlds: stable, true to the latent segments, registered.

Bars, on both presets:
- stability: the two-halves ARI of the chosen k (the training metric) and the ARI between
  two whole runs with different seeds are both at least 0.8;
- truth: the ARI between the segments and the simulator's latent segments, among active
  customers who are not fraudsters, is above a floor that a random labelling of the same
  sizes cannot reach (its ARI is computed here: about 0, |ARI| < 0.005).

The floors are measured, not wished: with the default settings the ARI is 0.27 on the
default world and 0.053 on the hard one. The latent segments overlap a lot in what a year
of purchases shows (each customer's rate and basket are drawn around its segment's), so
the ceiling is low: a LightGBM classifier *trained on the truth* with the same segments_v1
features reaches an ARI of 0.52 (default) and 0.17 (hard) in 3-fold cross-validation. The
hard preset pulls the segments halfway together and picks k = 3 (k = 4 is unstable there).
Floors: 0.2 (default) and 0.035 (hard), each at least seven times the random labelling's
largest |ARI| bound and about three quarters of the measured value.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import (
    FeatureSettings,
    FeatureStoreSettings,
    SegmentSettings,
    Settings,
    get_settings,
)
from cashback.tables import scan_parquet_path
from features.customer_frame import FeatureSources
from features.lifecycle import RFM_COLUMNS
from features.training import training_frame
from models.registry import champion_artifacts, load_version
from models.segments.model import INACTIVE, SegmentModel, active_mask, raw_matrix
from models.segments.pyfunc import model_input
from pipelines.train_segments import SegmentsTraining, run

pytestmark = pytest.mark.xdist_group("simulated_worlds")

PEPPER = "test-pepper-not-a-secret"
RANDOM_BOUND = 0.005
FLOORS = {"default": 0.2, "hard": 0.035}


def _settings(world: Path, tmp_path: Path, **segments: object) -> Settings:
    """The world's data, with the feature tables written under tmp_path."""
    return Settings(
        ip_pepper=PEPPER,
        data_dir=world,
        feature_store=FeatureStoreSettings(subdirectory=str(tmp_path / "features")),
        segments=SegmentSettings(**segments),  # type: ignore[arg-type]
    )


def _truth_ari(world: Path, result: SegmentsTraining, seed: int | None = None) -> float:
    """ARI against the latent segments, active legit customers; `seed`: labels shuffled."""
    truth = scan_parquet_path(world / "truth" / "customers.parquet").select(
        "customer_id", "segment", "role"
    )
    rows = (
        result.assignments.lazy()
        .join(truth.rename({"segment": "true_segment"}), on="customer_id")
        .filter(pl.col("segment") != INACTIVE, pl.col("role") == "legit")
        .collect()
    )
    labels = rows["segment"].to_numpy()
    if seed is not None:
        labels = np.random.default_rng(seed).permutation(labels)
    return float(adjusted_rand_score(rows["true_segment"].to_numpy(), labels))


@pytest.fixture(scope="module")
def default_result(
    default_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SegmentsTraining, Path]:
    """The default world segmented at its latest close, and where its tables went."""
    tmp = tmp_path_factory.mktemp("segments")
    return run(_settings(default_world, tmp), register=False), tmp


def _bars(preset: str, world: Path, tmp_path: Path, result: SegmentsTraining) -> None:
    # given a simulated world, segmented at its latest close
    # and again with another seed (other halves, samples and k-means starts)
    again = run(_settings(world, tmp_path / "again", seed=8), register=False)

    # when the segments are compared with the truth, a random labelling, and each other
    truth_ari = _truth_ari(world, result)
    random_ari = max(abs(_truth_ari(world, result, seed)) for seed in range(5))
    seeds_ari = float(
        adjusted_rand_score(result.assignments["segment"], again.assignments["segment"])
    )
    metrics = result.metrics
    print(  # the figures the issue asks to report
        f"\n{preset}: k={result.model.k} {list(result.model.names)}; truth ARI {truth_ari:.3f} "
        f"(random labelling |ARI| <= {random_ari:.4f}); stability: halves ARI "
        f"{metrics['stability_ari']:.3f}, seeds 7 vs 8 ARI {seeds_ari:.3f}; silhouette "
        f"{metrics['silhouette']:.3f} (selection {metrics['selection_silhouette']:.3f}); "
        f"rfm_eta2 {metrics['rfm_eta2']:.3f}; seconds "
        f"{ {k: round(v, 1) for k, v in result.seconds.items()} }"
    )

    # then the segments are stable, by both definitions
    assert metrics["stability_ari"] >= 0.8
    assert seeds_ari >= 0.8
    # and clearly closer to the truth than chance (see the module docstring for the floors)
    assert random_ari < RANDOM_BOUND
    assert truth_ari >= FLOORS[preset]
    assert metrics["truth_ari"] == pytest.approx(truth_ari)
    # and every segment has a unique readable name
    assert len(set(result.model.names)) == result.model.k
    assert INACTIVE not in result.model.names
    assert result.profiles["segment"].to_list() == [*result.model.names, INACTIVE]


def test_default_world_segments_are_stable_and_near_the_truth(
    default_world: Path, tmp_path: Path, default_result: tuple[SegmentsTraining, Path]
) -> None:
    _bars("default", default_world, tmp_path, default_result[0])


def test_hard_world_segments_are_stable_and_near_the_truth(
    hard_world: Path, tmp_path: Path
) -> None:
    _bars("hard", hard_world, tmp_path, run(_settings(hard_world, tmp_path), register=False))


def test_assignments_follow_the_features_and_are_written_for_the_feature_store(
    default_world: Path, default_result: tuple[SegmentsTraining, Path]
) -> None:
    # given the default world segmented at its latest close
    result, tmp_path = default_result
    close = result.close

    # then the customers without a purchase in the year, and only they, are inactive, with
    # RFM 0 as the features define
    assignments = result.assignments
    assert assignments.columns == ["customer_id", "segment", "lifecycle", *RFM_COLUMNS]
    inactive = assignments["segment"] == INACTIVE
    assert (inactive == (assignments["rfm_total"] == 0)).all()
    assert assignments.filter(inactive)[list(RFM_COLUMNS)].to_numpy().max() == 0
    # and the native numpy assignment is exactly the scikit-learn pipeline's
    frame = pl.read_parquet(result.table)
    assert result.pipeline is not None
    features = _features_at(default_world, close)
    active = features.filter(pl.Series(active_mask(features)))
    native = result.model.clusters(active)
    fitted = result.pipeline.predict(raw_matrix(active, result.model.columns))
    np.testing.assert_array_equal(native, fitted)
    # and the table for the feature view holds every customer at the close
    assert frame.columns == ["customer_id", "close_ts", "segment"]
    assert frame.height == assignments.height == features.height
    assert frame["close_ts"].unique().to_list() == [close]
    assert frame.sort("customer_id")["segment"].to_list() == (
        assignments.sort("customer_id")["segment"].to_list()
    )
    assert result.table == tmp_path / "features" / "tables" / "customer_segment.parquet"
    # and the profiles say why churn is unknown at the latest close
    assert result.profiles["churn_rate"].null_count() == result.profiles.height
    assert any("churn_rate is null" in note for note in result.notes)
    active_profiles = result.profiles.filter(pl.col("segment") != INACTIVE)
    assert active_profiles["avg_rate_365d"].is_between(0, 0.1).all()
    assert active_profiles["rate_response_per_point"].null_count() == 0
    assert result.profiles["share"].sum() == pytest.approx(1.0)


def _features_at(world: Path, close: datetime) -> pl.DataFrame:
    """The segments_v1 features of every customer signed up by the close."""
    sources = FeatureSources.from_directory(world)
    rows = sources.customers.filter(pl.col("signup_ts") < close).select(
        "customer_id", pl.lit(close).cast(pl.Datetime("us", "UTC")).alias("ts")
    )
    return training_frame(sources, rows, "segments_v1", FeatureSettings()).collect()


def test_churn_is_known_at_an_earlier_close_and_lapsing_customers_churn_most(
    default_world: Path, tmp_path: Path
) -> None:
    # given a close with 90 days of data after it
    close = datetime(2025, 10, 1, tzinfo=UTC)
    result = run(_settings(default_world, tmp_path), close=close, register=False)

    # then every segment has a churn rate, highest where the last purchase is oldest
    profiles = result.profiles
    print(
        "\nchurn after 2025-10-01:",
        dict(zip(profiles["segment"], profiles["churn_rate"].round(3), strict=True)),
    )
    assert profiles["churn_rate"].null_count() == 0
    active = profiles.filter(pl.col("segment") != INACTIVE).sort("recency_days")
    assert active["churn_rate"][-1] > 2 * active["churn_rate"][0]
    inactive = profiles.filter(pl.col("segment") == INACTIVE)["churn_rate"][0]
    assert inactive > active["churn_rate"].max()  # type: ignore[operator]
    assert not any("churn" in note for note in result.notes)


def test_a_close_outside_the_data_or_too_few_customers_is_refused(
    default_world: Path, tmp_path: Path
) -> None:
    settings = _settings(default_world, tmp_path)
    for close, message in (
        (datetime(2026, 3, 1, tzinfo=UTC), "outside the data"),
        (datetime(2024, 6, 1, tzinfo=UTC), "outside the data"),
        (datetime(2025, 6, 1, 12, tzinfo=UTC), "not a daily close"),
        (datetime(2025, 6, 1), "UTC"),  # noqa: DTZ001 - a naive time on purpose
    ):
        with pytest.raises(CashbackError, match=message):
            run(settings, close=close, register=False)
    # and a program too small for k_max clusters of 10,000 customers
    crowded = _settings(default_world, tmp_path, min_customers_per_cluster=10_000)
    with pytest.raises(CashbackError, match="segments need at least 80,000"):
        run(crowded, register=False)
    assert not (tmp_path / "features" / "tables" / "customer_segment.parquet").exists()


@pytest.fixture
def data_dir(
    default_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The default world's tables linked into a fresh data directory (MLflow writes there)."""
    data = tmp_path / "data"
    data.mkdir()
    for entry in default_world.iterdir():
        if not entry.name.startswith(".") and entry.name not in {"features", "mlflow"}:
            (data / entry.name).symlink_to(entry)
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(data))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_cli_trains_registers_and_the_served_model_agrees(data_dir: Path) -> None:
    # when a user trains the segments and promotes them
    trained = _cli("train", "segments")
    promoted = _cli("models", "promote", "segments")

    # then the model is registered, promoted, and the segments are in the feature tables
    assert "registered cashback-segments version 1 as challenger" in trained
    assert "ARI against the simulator's truth" in trained
    assert "v1 is now the champion" in promoted
    table = pl.read_parquet(data_dir / "features" / "tables" / "customer_segment.parquet")
    # and the pyfunc model and the champion's native files assign what the table says
    settings = get_settings()
    close = table["close_ts"][0]
    features = _features_at(data_dir, close)
    served = load_version(settings, "segments", "champion")
    schema = served.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    predicted = served.predict(model_input(features, schema.input_names()))
    native = SegmentModel.load(champion_artifacts(settings, "segments"))
    expected = features.select("customer_id").join(
        table, on="customer_id", how="left", maintain_order="left"
    )
    assert predicted["segment"].tolist() == expected["segment"].to_list()
    assert native.assign(features).to_list() == expected["segment"].to_list()
