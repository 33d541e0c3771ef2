"""The churn model against BG/NBD on the validation snapshot, on simulated and real data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from cashback.settings import Settings
from pipelines.data_import import run as import_data
from pipelines.train_churn import BASELINE, ChurnTraining, run
from tests.conftest import shared_file

PEPPER = "test-pepper-not-a-secret"


def _scores(result: ChurnTraining) -> dict[str, float]:
    """ROC-AUC and Brier of the model and the baseline, computed here from the scored rows."""
    validation = result.validation
    label = validation["churned"].to_numpy()
    out = {}
    for name, column in (("model", "probability"), ("bgnbd", BASELINE)):
        score = validation[column].to_numpy()
        out[f"{name}_roc_auc"] = float(roc_auc_score(label, score))
        out[f"{name}_brier"] = float(brier_score_loss(label, score))
    print(f"\n{ {k: round(v, 4) for k, v in out.items()} }")  # the figures to report
    return out


def _beats_bgnbd(result: ChurnTraining) -> None:
    scores = _scores(result)
    assert scores["model_roc_auc"] > scores["bgnbd_roc_auc"]
    assert scores["model_brier"] < scores["bgnbd_brier"]
    # and the validation snapshot is out of every training label window
    snapshots = result.snapshots
    assert all(s + snapshots.horizon <= snapshots.validation for s in snapshots.train)
    assert snapshots.calibration + snapshots.horizon <= snapshots.validation


@pytest.mark.xdist_group("simulated_worlds")
def test_default_world_churn_beats_bgnbd(default_world: Path) -> None:
    _beats_bgnbd(run(Settings(ip_pepper=PEPPER, data_dir=default_world), register=False))


@pytest.mark.xdist_group("simulated_worlds")
def test_hard_world_churn_beats_bgnbd(hard_world: Path) -> None:
    _beats_bgnbd(run(Settings(ip_pepper=PEPPER, data_dir=hard_world), register=False))


@pytest.mark.realdata
def test_online_retail_churn_beats_bgnbd(tmp_path: Path) -> None:
    # given the Online Retail purchase log imported onto the contract
    settings = Settings(ip_pepper=PEPPER, data_dir=tmp_path / "retail")
    source = shared_file("online_retail/online_retail.csv.gz")
    import_data("online_retail", source, settings.data_dir, settings)

    # when trained on its calibration period and judged on the holdout, split by time
    result = run(settings, register=False)

    # then the model beats BG/NBD on both measures
    _beats_bgnbd(result)
    assert result.metrics["validation_customers"] > 1_000


@pytest.mark.xdist_group("simulated_worlds")
def test_every_scored_customer_bought_within_the_limit_and_has_a_label(
    default_world: Path,
) -> None:
    # given the churn training on the default world
    result = run(Settings(ip_pepper=PEPPER, data_dir=default_world), register=False)
    validation = result.validation

    # then the scored population was active within a year, labels are 0/1 with no gap
    assert validation["days_since_last_purchase"].max() <= 365  # type: ignore[operator]
    assert set(validation["churned"].unique().to_list()) == {0, 1}
    churned = validation.filter(pl.col("churned") == 1)
    assert (churned["future_purchases"] == 0).all()
    assert validation["probability"].is_between(0, 1).all()
