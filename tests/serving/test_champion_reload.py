"""The running API follows promotions: a new champion is swapped in, a broken one is not.

Each test has a private copy of the served world with its own model registry (the tests
register versions and move aliases); the new versions reuse the champion's own model, or
point at missing files, so that nothing is trained.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from cashback.settings import Settings
from cashback.vocab import Role
from models.registry import CHALLENGER, CHAMPION, configure_mlflow, promote, registered_name
from serving.decisions import DecisionRecord, find_decision, replay_decision
from tests.serving.conftest import Api, StartApi
from tests.serving.experiment_world import private_world
from tests.serving.helpers import claim_body, eventually

pytestmark = [pytest.mark.xdist_group("serving"), pytest.mark.parametrize("backend", ["sqlite"])]
CHECK_SECONDS = 0.2
REASON = "the API follows promotions (test)"
DEADLINE_SECONDS = 20.0  # many check intervals: a load takes a second or two on a busy machine


@pytest.fixture
def served_world(served_world: Path, tmp_path: Path) -> Path:
    """A private copy of the served world whose model registry may be written.

    The registry database is copied; the existing runs' artifacts stay in the shared world
    (read only), and new runs (promotions) write theirs under the copy.
    """
    world = private_world(served_world, tmp_path / "data")
    registry = world / "mlflow"
    registry.unlink()
    registry.mkdir()
    shutil.copy2(served_world / "mlflow" / "mlflow.db", registry / "mlflow.db")
    artifacts = registry / "artifacts"
    with sqlite3.connect(registry / "mlflow.db") as connection:
        experiments = connection.execute("SELECT experiment_id, name FROM experiments")
        for experiment_id, name in experiments.fetchall():
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                ((artifacts / name).as_uri(), experiment_id),
            )
    connection.close()
    return world


def _client(settings: Settings) -> MlflowClient:
    configure_mlflow(settings)
    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _register_again(settings: Settings, short: str) -> str:
    """The champion's own model registered as a new version, the challenger: its number."""
    client = _client(settings)
    name = registered_name(settings, short)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    created = client.create_model_version(
        name, source=str(champion.source), run_id=champion.run_id, model_id=champion.model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, created.version)
    return str(created.version)


def _make_broken_champion(settings: Settings, model_dir: Path) -> str:
    """A version whose model directory has no files, made the champion: its number."""
    (model_dir / "artifacts").mkdir(parents=True)
    client = _client(settings)
    name = registered_name(settings, "fraud")
    created = client.create_model_version(name, source=model_dir.as_uri())
    client.set_registered_model_alias(name, CHAMPION, created.version)
    return str(created.version)


def _scored(api: Api, key: str) -> DecisionRecord:
    response = api.client.post("/v1/claims/score", json=claim_body(), headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    record = find_decision(api.state.db.engine, response.json()["decision_id"])
    assert record is not None
    return record


def _ready_model(api: Api, component: str) -> str:
    """What /readyz says is loaded as this model ("" when not ready)."""
    response = api.client.get("/readyz")
    return str(response.json()["loaded"].get(component, "")) if response.is_success else ""


def _reloads(api: Api, model: str, outcome: str) -> float:
    """`cashback_model_reloads_total` of a model and outcome, as /metrics counts it."""
    text = api.client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cashback_model_reloads_total"
        and sample.labels == {"model": model, "outcome": outcome}
    )


def test_a_promoted_fraud_champion_scores_new_claims_and_old_decisions_keep_theirs(
    start_api: StartApi,
) -> None:
    # given an API that checks the champions often, and a claim it scored
    api = start_api(serving={"champion_check_seconds": CHECK_SECONDS})
    key = api.key(Role.ENGINE)
    before = _scored(api, key)
    old = before.model_version
    successes = _reloads(api, "fraud", "success")
    # when a new fraud version is promoted (the same model again; forced: the tiny world's
    # audit sample gives no audit PR AUC, which the gate refuses)
    new = _register_again(api.settings, "fraud")
    assert promote(api.settings, "fraud", force=True, reason=REASON).promoted
    # then within a few checks /readyz names it and new claims are scored by it
    assert eventually(
        lambda: _ready_model(api, "fraud_model") == f"cashback-fraud v{new}", DEADLINE_SECONDS
    )
    assert _scored(api, key).model_version == new != old
    assert _reloads(api, "fraud", "success") == successes + 1
    # and the claim scored before replays with its own version
    replayed = replay_decision(api.settings, before)
    assert replayed.matches, replayed.describe()
    assert f"cashback-fraud v{old} " in replayed.basis


def test_a_promoted_rates_champion_is_swapped_in_with_a_fresh_offer_book(
    start_api: StartApi,
) -> None:
    # given an API that checks the champions often
    api = start_api(serving={"champion_check_seconds": CHECK_SECONDS})
    runtime = api.state.runtime
    old_book, fraud = runtime.offer_book, runtime.fraud
    assert old_book is not None
    # when a new rates version is promoted
    new = _register_again(api.settings, "rates")
    assert promote(api.settings, "rates", force=True, reason=REASON).promoted
    # then it serves, with the offer book read again beside it
    assert eventually(
        lambda: _ready_model(api, "rates_model") == f"cashback-rates v{new}", DEADLINE_SECONDS
    )
    assert runtime.offer_book is not old_book
    assert runtime.offer_book == old_book  # the same files: the same book
    assert runtime.fraud is fraud  # the fraud champion did not change: untouched


def test_a_champion_that_cannot_be_loaded_leaves_the_old_one_serving(
    start_api: StartApi, tmp_path: Path
) -> None:
    # given an API that checks the champions often, serving the fraud champion
    api = start_api(serving={"champion_check_seconds": CHECK_SECONDS})
    key = api.key(Role.ENGINE)
    old = _scored(api, key).model_version
    failures = _reloads(api, "fraud", "failure")
    # when the champion alias moves to a version whose files are missing
    broken = _make_broken_champion(api.settings, tmp_path / "broken-model")
    # then the failed load is counted, and the old champion keeps scoring claims
    assert eventually(lambda: _reloads(api, "fraud", "failure") > failures, DEADLINE_SECONDS)
    assert _scored(api, key).model_version == old != broken
    assert _ready_model(api, "fraud_model") == f"cashback-fraud v{old}"


def test_a_removed_champion_alias_keeps_the_loaded_model(start_api: StartApi) -> None:
    # given an API that checks the champions often, serving the fraud champion
    api = start_api(serving={"champion_check_seconds": CHECK_SECONDS})
    key = api.key(Role.ENGINE)
    old = _scored(api, key).model_version
    tried = _reloads(api, "fraud", "success") + _reloads(api, "fraud", "failure")
    # when the champion alias is removed and several checks pass
    _client(api.settings).delete_registered_model_alias(
        registered_name(api.settings, "fraud"), CHAMPION
    )
    time.sleep(5 * CHECK_SECONDS)
    # then the loaded model keeps scoring, and no load was tried
    assert _scored(api, key).model_version == old
    assert _reloads(api, "fraud", "success") + _reloads(api, "fraud", "failure") == tried


def test_no_thread_follows_the_champions_when_the_check_is_off(start_api: StartApi) -> None:
    running = set(threading.enumerate())
    api = start_api(serving={"champion_check_seconds": 0})
    started = {thread.name for thread in threading.enumerate() if thread not in running}
    assert api.state.champions is None
    assert "reasons" in started  # the app's other worker did start
    assert "champions" not in started
