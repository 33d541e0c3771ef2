"""`cashback labels export`: review decisions become labels, and the fraud model learns them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.contract import CLAIM_LABELS
from cashback.settings import get_settings
from cashback.tables import read_table, validate_directory
from cashback.vocab import AbuseType, Role
from pipelines import export_labels, train_fraud
from tests.serving.conftest import PEPPER, Api, StartApi
from tests.serving.experiment_world import private_world
from tests.serving.reviews_helpers import REVIEWS, case_of, decision, open_case

pytestmark = pytest.mark.xdist_group("serving")
PER_TRUTH = 8  # unlabelled claims of each truth scored and reviewed


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """A private copy of the served world whose claim_labels table may be written."""
    world = private_world(served_world, tmp_path / "data")
    labels = world / CLAIM_LABELS.file_name
    labels.unlink()
    copy = shutil.copytree if (served_world / CLAIM_LABELS.file_name).is_dir() else shutil.copy2
    copy(served_world / CLAIM_LABELS.file_name, labels)
    return world


def _unlabelled_claims(world: Path) -> pl.DataFrame:
    """Early claims (the training slice) with no label yet: frauds and legit, by the truth."""
    labelled = read_table(world, CLAIM_LABELS.name).select("claim_id")
    truth = pl.scan_parquet(world / "truth" / "claims.parquet").select(
        "claim_id", "is_fraud", pl.col("abuse_type").alias("true_abuse_type")
    )
    claims = read_table(world, "claims")
    first, last = (
        claims.select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).collect().row(0)
    )
    early = (
        claims.filter(pl.col("ts") < first + (last - first) * 0.3)
        .join(labelled, on="claim_id", how="anti")
        .join(truth, on="claim_id")
        .sort("claim_id")
        .collect()
    )
    return pl.concat(
        [
            early.filter(pl.col("is_fraud")).head(PER_TRUTH),
            early.filter(~pl.col("is_fraud")).head(PER_TRUTH),
        ]
    )


def _score(api: Api, claims: pl.DataFrame) -> dict[str, int]:
    """Score the claims through the API: each claim's review case id."""
    headers = api.headers(Role.ENGINE)
    cases: dict[str, int] = {}
    for claim in claims.iter_rows(named=True):
        body: dict[str, Any] = {
            key: claim[key]
            for key in ("claim_id", "customer_id", "txn_id", "amount", "cashback_amount")
        }
        body |= {
            "payout_method": claim["payout_method"],
            "device_id": claim["device_id"],
            "receipt_hash": claim["receipt_hash"],
            "ts": claim["ts"].isoformat(),
        }
        response = api.client.post("/v1/claims/score", json=body, headers=headers)
        assert response.status_code == 200, response.text
        case_id = case_of(api, claim["claim_id"])
        assert case_id is not None  # every allowed claim is audited here
        cases[claim["claim_id"]] = case_id
    return cases


def _decide(api: Api, claims: pl.DataFrame, cases: dict[str, int]) -> dict[str, dict[str, Any]]:
    """An analyst decides each case by the truth; the last legit claim is only held.

    Returns:
        Per claim: the decision's answer (with its `label`).
    """
    headers = api.headers(Role.RISK)
    held = claims.filter(~pl.col("is_fraud"))["claim_id"][-1]
    partial = claims.filter(pl.col("is_fraud"))["claim_id"][0]
    answers: dict[str, dict[str, Any]] = {}
    for claim in claims.iter_rows(named=True):
        claim_id = claim["claim_id"]
        if claim_id == held:
            body = decision("hold")
        elif claim_id == partial:
            body = decision("partial", amount=round(claim["cashback_amount"] / 2, 2) or 0.01)
        elif claim["is_fraud"]:
            known = {kind.value for kind in AbuseType}
            kind = claim["true_abuse_type"] if claim["true_abuse_type"] in known else "other"
            body = decision("reject", abuse_type=kind)
        else:
            body = decision("approve")
        url = f"{REVIEWS}/{cases[claim_id]}/decision"
        response = api.client.post(url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        answers[claim_id] = response.json()
    return answers


# the export's SQL runs on both backends in the test below; training once is enough
@pytest.mark.parametrize("backend", ["sqlite"])
def test_review_decisions_become_labels_the_fraud_model_learns(
    start_api: StartApi, served_world: Path
) -> None:
    # given early unlabelled claims of the world, scored by the API (every allowed claim is
    # audited) and decided by an analyst: frauds rejected (one partial), legit approved,
    # one held
    api = start_api(serving={"audit_share": 1.0})
    claims = _unlabelled_claims(served_world)
    assert claims.height == 2 * PER_TRUTH
    answers = _decide(api, claims, _score(api, claims))
    reasons = {
        row["claim_id"]: row["reason"]
        for row in (
            api.client.get(f"{REVIEWS}/{answer['case_id']}", headers=api.headers(Role.RISK)).json()[
                "case"
            ]
            for answer in answers.values()
        )
    }
    before = read_table(served_world, CLAIM_LABELS.name).collect()

    # when the labels are exported (twice) and the fraud model is trained
    first = export_labels.run(api.settings)
    second = export_labels.run(api.settings)
    training = train_fraud.run(api.settings, register=False)

    # then each final decision added one label, with the source of its case, and once
    decided = {c: a for c, a in answers.items() if a["label"] is not None}
    assert len(decided) == 2 * PER_TRUTH - 1
    sources = {"audit" if reasons[c] == "audit" else "review" for c in decided}
    assert first.decided == len(decided)
    assert first.total_added == len(decided)
    assert set(first.added) == sources
    assert (second.total_added, second.present, second.pending) == (0, len(decided), 0)
    after = read_table(served_world, CLAIM_LABELS.name).collect()
    assert after.height == before.height + len(decided)
    assert validate_directory(served_world).ok
    exported = after.join(before, on=["claim_id", "source"], how="anti")
    by_claim = {row["claim_id"]: row for row in exported.iter_rows(named=True)}
    assert set(by_claim) == set(decided)
    for claim_id, answer in decided.items():
        row = by_claim[claim_id]
        assert row["label"] == answer["label"]
        assert row["abuse_type"] == answer["abuse_type"]
        assert row["source"] == ("audit" if reasons[claim_id] == "audit" else "review")

    # and the training set holds the decided claims with their labels; the held one has none
    learned = training.labels.filter(pl.col("claim_id").is_in(list(answers)))
    assert set(learned["claim_id"]) == set(decided)
    for row in learned.iter_rows(named=True):
        assert row["label"] == (1 if decided[row["claim_id"]]["label"] == "fraud" else 0)
        assert by_claim[row["claim_id"]]["source"] in row["label_source"].split("+")
    assert "train" in set(learned["split"])
    assert training.metrics["labels_review"] + training.metrics["labels_audit"] >= len(decided)


def test_labels_of_claims_the_table_lacks_wait_for_them(
    start_api: StartApi, served_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a claim scored by the API that the claims table does not hold, rejected
    api = start_api(serving={"audit_share": 1.0})
    case_id = open_case(api)
    response = api.client.post(
        f"{REVIEWS}/{case_id}/decision",
        json=decision("reject", abuse_type="receipt_reuse"),
        headers=api.headers(Role.RISK),
    )
    assert response.status_code == 200, response.text
    before = read_table(served_world, CLAIM_LABELS.name).collect()

    # when the labels are exported from the command line
    _point_cli_at(api, monkeypatch)
    try:
        result = CliRunner().invoke(app, ["labels", "export"])
    finally:
        get_settings.cache_clear()

    # then nothing is written, and the output says the label waits for its claim
    assert result.exit_code == 0, result.output
    assert "0 of 1 labelled review decisions added" in result.output
    assert "1 labels wait for their claims" in result.output
    assert read_table(served_world, CLAIM_LABELS.name).collect().equals(before)


def _point_cli_at(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the environment that points the CLI at the test's data and app database."""
    settings = api.settings
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setenv("CASHBACK_SERVING__DIRECTORY", str(settings.serving.directory))
    if settings.database_url is not None:
        monkeypatch.setenv("CASHBACK_DATABASE_URL", settings.database_url.get_secret_value())
    get_settings.cache_clear()
