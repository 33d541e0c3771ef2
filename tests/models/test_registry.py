"""The model lifecycle: logged runs, the registry, gated promotion, rollback, loading."""

from __future__ import annotations

import json
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from cashback import cli
from cashback.errors import CashbackError
from cashback.settings import Settings, get_settings
from models import registry
from models.evaluation import Gate, MetricSpec, check_metric, compare
from tests.models.toy import BOOSTER_FILE, FEATURES, ToyEvaluator, claims, log_toy

PEPPER = "x" * 20


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, created once (creating the schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow-template")
    settings = Settings(data_dir=root, ip_pepper=PEPPER)
    registry.configure_mlflow(settings)
    MlflowClient(settings.mlflow_tracking_uri).search_experiments()
    return root / "mlflow" / "mlflow.db"


def _fresh_data_dir(data_dir: Path, template: Path) -> None:
    (data_dir / "mlflow").mkdir(parents=True)
    shutil.copyfile(template, data_dir / "mlflow" / "mlflow.db")


@pytest.fixture
def lifecycle(tmp_path: Path, mlflow_template: Path) -> Settings:
    """Settings whose MLflow store (database and artifacts) lives under tmp_path."""
    _fresh_data_dir(tmp_path / "data", mlflow_template)
    return Settings(data_dir=tmp_path / "data", ip_pepper=PEPPER)


@pytest.fixture
def toy_evaluator(monkeypatch: pytest.MonkeyPatch) -> ToyEvaluator:
    """The toy evaluator, registered for `fraud` for the duration of a test."""
    evaluator = ToyEvaluator()
    monkeypatch.setitem(registry._EVALUATORS, "fraud", evaluator)
    return evaluator


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def _aliases(settings: Settings) -> dict[str, str]:
    aliases = _client(settings).get_registered_model("cashback-fraud").aliases
    return {str(alias): str(version) for alias, version in aliases.items()}


# --------------------------------------------------------------------------- names, evaluators


def test_given_short_names_then_registered_names_use_the_prefix(lifecycle: Settings) -> None:
    # given the default prefix, when naming each model, then it is cashback-<short>
    assert [registry.registered_name(lifecycle, s) for s in registry.MODEL_NAMES] == [
        "cashback-fraud",
        "cashback-churn",
        "cashback-clv",
        "cashback-segments",
        "cashback-rates",
    ]

    # when the short name is unknown, then the error names the known ones
    with pytest.raises(CashbackError, match="known models are fraud, churn, clv"):
        registry.registered_name(lifecycle, "frud")


def test_given_the_package_convention_then_evaluator_for_finds_or_explains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a package with evaluator(), one without, and a missing one
    evaluator = ToyEvaluator()
    with_evaluator = types.ModuleType("models.segments")
    with_evaluator.evaluator = lambda: evaluator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models.segments", with_evaluator)
    monkeypatch.setitem(sys.modules, "models.clv", types.ModuleType("models.clv"))
    monkeypatch.setitem(sys.modules, "models.rates", None)
    monkeypatch.setattr(registry, "_EVALUATORS", {})

    # when looking them up, then the first is found and cached, the others are explained
    assert registry.evaluator_for("segments") is evaluator
    assert registry._EVALUATORS["segments"] is evaluator
    with pytest.raises(CashbackError, match=r"models\.clv has no evaluator\(\)"):
        registry.evaluator_for("clv")
    with pytest.raises(CashbackError, match=r"no model package models\.rates"):
        registry.evaluator_for("rates")
    with pytest.raises(CashbackError, match="unknown model"):
        registry.evaluator_for("nope")

    # when an evaluator is registered explicitly, then it wins
    other = ToyEvaluator()
    registry.register_evaluator("segments", other)
    assert registry.evaluator_for("segments") is other


# --------------------------------------------------------------------------- the gate


def test_given_metrics_then_checks_use_direction_margin_and_tolerance() -> None:
    gate = Gate(MetricSpec("pr_auc", True), (MetricSpec("brier", False),))

    # given a challenger worse than the margin allows, when compared, then it fails in words
    checks = compare(
        gate,
        {"pr_auc": 0.412, "brier": 0.10},
        {"pr_auc": 0.451, "brier": 0.10},
        margin=0.005,
        tolerance=0.0,
    )
    assert [c.passed for c in checks] == [False, True]
    assert checks[0].text == "pr_auc 0.412 < champion 0.451 - margin 0.005"

    # given a challenger just within the margin and a guardrail within the tolerance
    checks = compare(
        gate,
        {"pr_auc": 0.447, "brier": 0.101},
        {"pr_auc": 0.451, "brier": 0.100},
        margin=0.005,
        tolerance=0.002,
    )
    # then both pass
    assert all(c.passed for c in checks)

    # given a worse guardrail (lower is better), then it fails with a "+ tolerance" text
    brier = check_metric(MetricSpec("brier", False), "guardrail", 0.2, 0.1, 0.0)
    assert not brier.passed
    assert brier.text == "brier 0.2 > champion 0.1 + tolerance 0"

    # given NaN: a NaN challenger fails, a NaN champion does not block
    assert not check_metric(gate.primary, "primary", float("nan"), 0.4, 0.005).passed
    assert check_metric(gate.primary, "primary", 0.4, float("nan"), 0.005).passed


# --------------------------------------------------------------------------- data digest


def test_given_training_data_then_the_digest_ignores_ids_and_row_order() -> None:
    # given training data, and the same rows with other ids in another order
    data = claims(300, seed=5)
    other_ids = data.with_columns(
        pl.col("claim_id").str.replace("clm", "other"),
        pl.col("customer_id").str.replace("cus", "other"),
        pl.col("ip_hash").str.reverse(),
    ).sample(fraction=1.0, shuffle=True, seed=3)

    # when digesting without raw ids
    digest = registry.data_digest(registry.drop_ids(data))

    # then neither the ids nor the order matter, and the digest is a sha256
    assert registry.drop_ids(data).columns == [*FEATURES, "label"]
    assert registry.data_digest(registry.drop_ids(other_ids)) == digest
    assert len(digest) == 64
    # but any feature value, name or type does
    changed = data.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(0.5).otherwise("f0"))
    assert registry.data_digest(registry.drop_ids(changed)) != digest
    assert registry.data_digest(registry.drop_ids(data.rename({"f3": "g3"}))) != digest
    assert (
        registry.data_digest(registry.drop_ids(data.with_columns(pl.col("label").cast(pl.Int64))))
        != digest
    )
    # and a null is not an empty string; categoricals and lists are digested by value
    assert registry.data_digest(pl.DataFrame({"a": [None]}, schema={"a": pl.String})) != (
        registry.data_digest(pl.DataFrame({"a": [""]}))
    )
    nested = pl.DataFrame({"c": ["u", "v"], "l": [[1], [2, 3]]})
    assert registry.data_digest(
        nested.with_columns(pl.col("c").cast(pl.Categorical))
    ) == registry.data_digest(nested.reverse().with_columns(pl.col("c").cast(pl.Categorical)))


# --------------------------------------------------------------------------- a logged run


def test_given_a_trained_model_when_logged_then_the_run_records_everything(
    lifecycle: Settings, tmp_path: Path
) -> None:
    # given a toy model trained on claims with raw ids
    training, evaluation = claims(2_000, seed=1), claims(1_000, seed=2)
    ids = {
        str(v)
        for frame in (training, evaluation)
        for v in frame.select("claim_id", "customer_id", "ip_hash").to_numpy().ravel()
    }

    # when it is logged
    info = log_toy(lifecycle, tmp_path / "m1", tags={"trained_by": "test"})

    # then it is version 1 of cashback-fraud, the challenger
    assert (info.name, info.version, info.model_uri) == (
        "cashback-fraud",
        1,
        "models:/cashback-fraud/1",
    )
    assert _aliases(lifecycle) == {"challenger": "1"}
    client = _client(lifecycle)
    run = client.get_run(info.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "cashback-fraud"
    assert (
        experiment.artifact_location == (lifecycle.mlflow_artifact_dir / "cashback-fraud").as_uri()
    )

    # and params, metrics, tags and the digest of the training data without ids
    digest = registry.data_digest(registry.drop_ids(training))
    assert run.data.params["num_leaves"] == "7"
    assert run.data.params["input_digest"] == digest
    assert run.data.tags["input_digest"] == digest
    assert run.data.tags["trained_by"] == "test"
    assert run.data.metrics["roc_auc"] > 0.8
    version = client.get_model_version("cashback-fraud", "1")
    assert version.tags["trained_by"] == "test"
    assert version.run_id == info.run_id

    # and the datasets: training and evaluation, features and label only, no id anywhere
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    assert inputs["training"].name == "cashback-fraud-training"
    assert inputs["training"].digest == digest[:32]
    columns = [c["name"] for c in json.loads(inputs["training"].schema)["mlflow_colspec"]]
    assert columns == [*FEATURES, "label"]
    logged_text = " ".join(f"{d.schema} {d.source} {d.profile} {d.name}" for d in inputs.values())
    assert not any(v in logged_text for v in ids)
    assert "_id" not in logged_text
    assert "ip_hash" not in logged_text

    # and the evaluation set, stored without ids, and the plot
    local = Path(client.download_artifacts(info.run_id, "", str(tmp_path / "run")))
    stored = pl.read_parquet(local / "evaluation" / "evaluation.parquet")
    assert stored.equals(registry.drop_ids(evaluation))
    assert (local / "plots" / "score_histogram.png").read_bytes()[:4] == b"\x89PNG"

    # and the model: signature, input example (features only), booster file
    model_info = mlflow.models.get_model_info(info.model_uri)
    assert model_info.signature.inputs.input_names() == list(FEATURES)
    assert model_info.signature.outputs is not None
    model_dir = Path(
        mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model"))
    )
    example = json.loads((model_dir / "input_example.json").read_text())
    assert example["columns"] == list(FEATURES)
    assert (model_dir / "artifacts" / BOOSTER_FILE).is_file()
    assert "lightgbm==" in (model_dir / "requirements.txt").read_text()


def test_given_raw_ids_in_the_input_example_then_logging_refuses(
    lifecycle: Settings, tmp_path: Path
) -> None:
    # given an input example with claim_id, when logging, then it is refused before any run
    data = claims(50, seed=1)
    with pytest.raises(CashbackError, match=r"raw id columns \['claim_id'\]"):
        registry.log_model_run(
            lifecycle,
            "fraud",
            python_model=registry.PythonModel(),
            artifacts={},
            params={},
            metrics={},
            evaluation=data,
            training_data=data,
            input_example=data.select("claim_id", *FEATURES).head(2).to_pandas(),
            plots={},
        )
    assert _client(lifecycle).get_experiment_by_name("cashback-fraud") is None


# --------------------------------------------------------------------------- promotion


def test_given_a_first_challenger_when_promoted_then_it_is_the_champion_served_natively(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given a logged challenger and no champion
    log_toy(lifecycle, tmp_path / "m1")

    # when promoted
    result = registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)

    # then it is the champion, the challenger alias is gone, and the decision is recorded
    assert (result.promoted, result.decision, result.champion_version) == (True, "promoted", None)
    assert result.checks == ()
    assert _aliases(lifecycle) == {"champion": "1"}
    assert registry.champion_version(lifecycle, "fraud") == 1
    client = _client(lifecycle)
    tags = client.get_model_version("cashback-fraud", "1").tags
    assert tags["promotion.decision"] == "promoted"
    assert json.loads(tags["promotion.challenger_metrics"]) == result.challenger_metrics
    record = json.loads(
        Path(client.download_artifacts(result.run_id, "promotion.json", str(tmp_path))).read_text()
    )
    assert record["decision"] == "promoted"
    assert record["forced"] is False

    # and the pyfunc champion and the native booster of its artifacts predict the same
    frame = claims(500, seed=9).select(FEATURES)
    pyfunc = np.asarray(registry.load_champion(lifecycle, "fraud").predict(frame.to_pandas()))
    booster_file = registry.champion_artifacts(lifecycle, "fraud") / BOOSTER_FILE
    native = lgb.Booster(model_file=booster_file).predict(frame.to_numpy())
    assert np.array_equal(pyfunc, native)
    loaded = registry.load_version(lifecycle, "fraud", 1)
    assert np.array_equal(np.asarray(loaded.predict(frame.to_pandas())), native)


def test_given_a_remote_artifact_store_then_champion_artifacts_are_downloaded_once(
    lifecycle: Settings,
    tmp_path: Path,
    toy_evaluator: ToyEvaluator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a champion whose artifacts are not local files (as with a tracking server)
    log_toy(lifecycle, tmp_path / "m1")
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    stored = registry.champion_artifacts(lifecycle, "fraud")
    monkeypatch.setattr(registry, "_local_path", lambda _uri: None)

    # when locating the champion's artifacts twice
    first = registry.champion_artifacts(lifecycle, "fraud")
    second = registry.champion_artifacts(lifecycle, "fraud")

    # then they are a copy under data_dir, the same booster file, downloaded once
    assert first == second == lifecycle.data_dir / "mlflow/downloads/cashback-fraud/1/artifacts"
    assert (first / BOOSTER_FILE).read_bytes() == (stored / BOOSTER_FILE).read_bytes()
    assert [p.name for p in first.parents[1].iterdir()] == ["1"]


def test_given_a_worse_challenger_when_promoted_then_it_is_refused_with_reasons(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given a champion, and a challenger trained on shuffled labels
    log_toy(lifecycle, tmp_path / "m1")
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    log_toy(lifecycle, tmp_path / "m2", shuffle_labels=True)

    # when promoted
    result = registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)

    # then it is refused, saying why, and the champion stays
    assert (result.promoted, result.decision, result.champion_version) == (False, "refused", 1)
    assert result.failed[0].startswith("roc_auc ")
    assert "< champion" in result.failed[0]
    assert result.failed[0].endswith("- margin 0.005")
    assert any(f.startswith("brier ") for f in result.failed)
    assert _aliases(lifecycle) == {"champion": "1", "challenger": "2"}
    tags = _client(lifecycle).get_model_version("cashback-fraud", "2").tags
    assert tags["promotion.decision"] == "refused"
    assert json.loads(tags["promotion.failed"]) == list(result.failed)

    # when forced without a reason, then it is an error
    with pytest.raises(CashbackError, match="needs a reason"):
        registry.promote(lifecycle, "fraud", evaluator=toy_evaluator, force=True, reason="  ")

    # when forced with a reason, then it is the champion and the reason is recorded
    forced = registry.promote(
        lifecycle, "fraud", evaluator=toy_evaluator, force=True, reason="label fix, see #12"
    )
    assert (forced.promoted, forced.decision) == (True, "forced")
    assert forced.reason == "label fix, see #12"
    assert forced.failed == result.failed
    assert _aliases(lifecycle) == {"champion": "2"}
    tags = _client(lifecycle).get_model_version("cashback-fraud", "2").tags
    assert (tags["promotion.forced"], tags["promotion.reason"]) == ("true", "label fix, see #12")
    assert tags["promotion.previous_champion"] == "1"


def test_given_an_equal_challenger_then_it_passes_the_gate(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given a champion and a challenger trained the same way
    log_toy(lifecycle, tmp_path / "m1")
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    log_toy(lifecycle, tmp_path / "m2")

    # when promoted without an explicit evaluator (the registered one is used)
    result = registry.promote(lifecycle, "fraud")

    # then every check passes on the same evaluation set, and it becomes champion
    assert result.promoted
    assert result.failed == ()
    assert len(result.checks) == 2
    assert result.challenger_metrics == result.champion_metrics


def test_given_no_challenger_or_no_champion_then_errors_say_what_to_run(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given nothing registered: no challenger to promote, no champion to load or roll back
    with pytest.raises(CashbackError, match="no challenger for fraud: run `cashback train fraud`"):
        registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    then = "then `cashback models promote fraud`"
    with pytest.raises(
        CashbackError, match=f"no champion for fraud: run `cashback train fraud` {then}"
    ):
        registry.load_champion(lifecycle, "fraud")
    with pytest.raises(CashbackError, match="no champion for fraud"):
        registry.champion_artifacts(lifecycle, "fraud")
    with pytest.raises(CashbackError, match="no champion for fraud"):
        registry.rollback(lifecycle, "fraud")

    # given a challenger only: still no champion
    log_toy(lifecycle, tmp_path / "m1")
    with pytest.raises(CashbackError, match="no champion for fraud"):
        registry.load_champion(lifecycle, "fraud")
    assert registry.champion_version(lifecycle, "fraud") is None
    with pytest.raises(CashbackError, match="has no version 7"):
        registry.load_version(lifecycle, "fraud", 7)


# --------------------------------------------------------------------------- rollback


def test_given_three_promotions_then_rollbacks_walk_back_the_history(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given versions 1, 2 and 3 promoted in turn
    for n in (1, 2, 3):
        log_toy(lifecycle, tmp_path / f"m{n}")
        assert registry.promote(lifecycle, "fraud", evaluator=toy_evaluator).promoted

    # when rolling back twice, then the champion goes to 2, then 1
    first = registry.rollback(lifecycle, "fraud")
    assert (first.from_version, first.to_version) == (3, 2)
    assert _aliases(lifecycle) == {"champion": "2"}
    second = registry.rollback(lifecycle, "fraud")
    assert (second.from_version, second.to_version) == (2, 1)
    assert registry.champion_version(lifecycle, "fraud") == 1

    # and a third has nowhere to go
    with pytest.raises(CashbackError, match="no earlier champion than version 1"):
        registry.rollback(lifecycle, "fraud")

    # and the rollback is recorded on the version and in a run
    client = _client(lifecycle)
    tags = client.get_model_version("cashback-fraud", "3").tags
    assert tags["rollback.to_version"] == "2"
    record = client.download_artifacts(tags["rollback.run_id"], "rollback.json", str(tmp_path))
    assert json.loads(Path(record).read_text())["from_version"] == 3

    # when a new version is promoted after the rollbacks, then one rollback returns to 1
    log_toy(lifecycle, tmp_path / "m4")
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    assert registry.rollback(lifecycle, "fraud").to_version == 1


# --------------------------------------------------------------------------- listing


def test_given_versions_then_list_models_shows_aliases_metrics_and_tags(
    lifecycle: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    # given a champion and a refused challenger
    log_toy(lifecycle, tmp_path / "m1")
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)
    log_toy(lifecycle, tmp_path / "m2", shuffle_labels=True)
    registry.promote(lifecycle, "fraud", evaluator=toy_evaluator)

    # when listing
    rows = registry.list_models(lifecycle)

    # then newest first, with aliases, the primary metric from the run and the decision
    assert [(r.name, r.version, r.aliases) for r in rows] == [
        ("cashback-fraud", 2, ("challenger",)),
        ("cashback-fraud", 1, ("champion",)),
    ]
    assert rows[1].primary_metric == "roc_auc"
    assert rows[1].primary_value is not None
    assert rows[1].primary_value > rows[0].primary_value  # type: ignore[operator]
    assert rows[0].tags["promotion.decision"] == "refused"
    assert json.loads(json.dumps([r.to_dict() for r in rows]))[0]["aliases"] == ["challenger"]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_settings(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The CLI's settings (env vars) on a fresh MLflow store, and a wide console."""
    _fresh_data_dir(tmp_path / "data", mlflow_template)
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setattr(cli, "out_console", Console(width=200, no_color=True))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_given_the_cli_then_models_list_promote_and_rollback_work(
    cli_settings: Settings, tmp_path: Path, toy_evaluator: ToyEvaluator
) -> None:
    runner = CliRunner()
    # given nothing registered, when listing, then it says so
    empty = runner.invoke(cli.app, ["models", "list"])
    assert empty.exit_code == 0, empty.output
    assert "no registered models yet" in empty.output

    # given a challenger, when promoting, then it becomes champion (exit 0)
    log_toy(cli_settings, tmp_path / "m1")
    promoted = runner.invoke(cli.app, ["models", "promote", "fraud"])
    assert promoted.exit_code == 0, promoted.output
    assert "cashback-fraud v1 is now the champion (gate passed; was none)" in promoted.output

    # given a worse challenger, when promoting, then it is refused with reasons (exit 1)
    log_toy(cli_settings, tmp_path / "m2", shuffle_labels=True)
    refused = runner.invoke(cli.app, ["models", "promote", "fraud"])
    assert refused.exit_code == 1, refused.output
    assert "cashback-fraud v2 refused; the champion stays v1:" in refused.output
    assert "failed: roc_auc" in refused.output

    # when forcing without a reason, then it is a user error
    no_reason = runner.invoke(cli.app, ["models", "promote", "fraud", "--force"])
    assert isinstance(no_reason.exception, CashbackError)

    # when forcing with a reason, then it is promoted and says so
    forced = runner.invoke(cli.app, ["models", "promote", "fraud", "--force", "--reason", "hotfix"])
    assert forced.exit_code == 0, forced.output
    assert "v2 is now the champion (forced: hotfix; was v1)" in forced.output

    # when listing, then the table and the JSON show both versions
    table = runner.invoke(cli.app, ["models", "list"])
    assert table.exit_code == 0, table.output
    assert "forced: hotfix" in table.output
    assert "roc_auc" in table.output
    listed = runner.invoke(cli.app, ["models", "list", "--json"])
    rows = json.loads(listed.output)
    assert [(r["version"], r["aliases"]) for r in rows] == [(2, ["champion"]), (1, [])]

    # when rolling back, then the champion is v1 again
    back = runner.invoke(cli.app, ["models", "rollback", "fraud"])
    assert back.exit_code == 0, back.output
    assert "cashback-fraud champion rolled back: v2 -> v1" in back.output
    assert _aliases(cli_settings) == {"champion": "1"}

    # when naming an unknown model, then the error lists the known ones
    unknown = runner.invoke(cli.app, ["models", "promote", "nope"])
    assert isinstance(unknown.exception, CashbackError)
    assert "known models are" in str(unknown.exception)
