"""/v1/experiments: marketers create, list, show, start and stop experiments, and read results.

The routes call what `cashback experiments ...` calls: the store of definitions under the
data directory (`pipelines.experiments`, `models.experiments.store`), the analysis
(`pipelines.experiment_analysis`) and the report (`pipelines.experiment_report`).

Results are computed afresh on every request from the contract tables as they are now
(about 0.4 s for the demo world's rate boost, 3,850 customers), and nothing is written: a GET
never changes the data directory, and the answer is never older than the data or made with
other options. `cashback experiments analyze KEY` keeps them as parquet.

Errors: an unknown key is a 404; what the store or the analysis refuses (a key taken, a
transition not allowed, a layer without room, an experiment without assignments or data
yet) is a 409 with their message; an invalid definition is a 422 naming each field.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse

from cashback.errors import CashbackError
from cashback.settings import Settings
from models.experiments.definition import ExperimentDefinition
from models.experiments.multiple_testing import Method
from models.experiments.store import ExperimentRow, ExperimentStore
from pipelines import experiment_analysis, experiment_report, experiments
from serving.deps import MarketerKey, SettingsDep
from serving.experiment_schemas import (
    ExperimentCreate,
    ExperimentDetail,
    ExperimentResults,
    ExperimentSummary,
)
from serving.schemas import ErrorResponse, ValidationErrorResponse

PREFIX = "/v1/experiments"
router = APIRouter(prefix=PREFIX, tags=["experiments"])

Responses = dict[int | str, dict[str, Any]]
AUTH: Responses = {
    401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
    403: {"model": ErrorResponse, "description": "the key's role may not manage experiments"},
}
INVALID: Responses = {422: {"model": ValidationErrorResponse, "description": "invalid fields"}}
UNKNOWN: Responses = {404: {"model": ErrorResponse, "description": "no experiment with this key"}}

Cap = Annotated[
    float | None,
    Query(gt=0, le=1, description="cap mean metrics at this pooled quantile, e.g. 0.99"),
]
Correction = Annotated[
    Method | None, Query(description="multiple-testing correction across metrics x variants")
]
Primary = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="the primary metric (default: the definition's, else the setting's)",
    ),
]


def _conflict(description: str) -> Responses:
    return {409: {"model": ErrorResponse, "description": description}}


@contextmanager
def refused_as_conflict() -> Iterator[None]:
    """Turn what the store or the analysis refuses (a `CashbackError`) into a 409.

    Raises:
        HTTPException: 409 with the refusal's message.
    """
    try:
        yield
    except CashbackError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None


def known(settings: Settings, key: str) -> ExperimentRow:
    """The experiments table's row of `key`.

    Raises:
        HTTPException: 404 when there is no such experiment.
    """
    for row in experiments.list_all(settings):
        if row.key == key:
            return row
    msg = f"no experiment {key!r}: GET {PREFIX} lists them, POST {PREFIX} creates one"
    raise HTTPException(status.HTTP_404_NOT_FOUND, msg)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="create an experiment (in draft)",
    responses=AUTH | _conflict("an experiment with this key exists") | INVALID,
)
def create_experiment(
    body: ExperimentCreate, settings: SettingsDep, _marketer: MarketerKey, response: Response
) -> ExperimentDefinition:
    """Create a draft experiment from its definition (the fields of a YAML definition file).

    Keys are never reused, even after an experiment stopped. `Location` names the new
    experiment; start it with `POST /v1/experiments/{key}/start`.
    """
    store = ExperimentStore.from_settings(settings)
    with refused_as_conflict():
        created = store.create(body.definition())
    response.headers["Location"] = f"{PREFIX}/{created.key}"
    return created


@router.get("", summary="every experiment: layer, status, window, variants", responses=AUTH)
def list_experiments(settings: SettingsDep, _marketer: MarketerKey) -> list[ExperimentSummary]:
    """Every experiment of the data directory, by start time then key.

    Experiments written by the simulator or an importer are listed (`defined: false`): their
    results can be read, but they have no definition to show, start or stop.
    """
    return [ExperimentSummary.of(row) for row in experiments.list_all(settings)]


@router.get(
    "/{key}",
    summary="one experiment, with its customers per variant",
    responses=AUTH | UNKNOWN | _conflict("the experiment has no stored definition"),
)
def get_experiment(key: str, settings: SettingsDep, _marketer: MarketerKey) -> ExperimentDetail:
    """The experiment's definition, status, window, layer buckets and assignments so far.

    An experiment written by the simulator or an importer has no definition to show (409);
    it is in the list, and its results can be read.
    """
    if not known(settings, key).defined:
        msg = (
            f"experiment {key!r} was written by the simulator or an importer: it has no "
            f"definition to show; GET {PREFIX} lists it, GET {PREFIX}/{key}/results analyses it"
        )
        raise HTTPException(status.HTTP_409_CONFLICT, msg)
    with refused_as_conflict():
        shown = experiments.show(settings, key)
    return ExperimentDetail(definition=shown.definition, assigned=dict(shown.assigned))


@router.post(
    "/{key}/start",
    summary="start a draft experiment",
    responses=AUTH | UNKNOWN | _conflict("not a draft, past its stop, or its layer has no room"),
)
def start_experiment(
    key: str, settings: SettingsDep, _marketer: MarketerKey
) -> ExperimentDefinition:
    """Start a draft: it runs from its start (or now, if later) and takes its layer buckets.

    Refused (409) when it is not a draft, when its stop has passed, or when running
    experiments of its layer that overlap it in time and targeting leave no room: the
    message names them.
    """
    known(settings, key)
    with refused_as_conflict():
        return experiments.start(settings, key)


@router.post(
    "/{key}/stop",
    summary="stop a running experiment",
    responses=AUTH | UNKNOWN | _conflict("the experiment is not running"),
)
def stop_experiment(
    key: str, settings: SettingsDep, _marketer: MarketerKey
) -> ExperimentDefinition:
    """Stop a running experiment: its window ends now; its assignments stay."""
    known(settings, key)
    with refused_as_conflict():
        return experiments.stop(settings, key)


# `Response`, not `HTMLResponse`: FastAPI documents the errors in the route's media type
PAGE: Responses = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"}
}
NOT_ANALYSABLE = _conflict(
    "nothing to analyse yet (no assignments, no data in the window, no customer in the "
    "control), or a primary metric the experiment does not have"
)


@router.get(
    "/{key}/results",
    summary="the analysis: verdicts, SRM, lifts with CIs, CUPED, chance to win",
    responses=AUTH | UNKNOWN | NOT_ANALYSABLE | INVALID,
)
def experiment_results(
    key: str,
    settings: SettingsDep,
    _marketer: MarketerKey,
    cap: Cap = None,
    correction: Correction = None,
    primary: Primary = None,
) -> ExperimentResults:
    """The analysis of `cashback experiments analyze`, computed now from the data.

    Per metric and variant against the control: the lift with Welch and delta-method
    intervals, CUPED with its variance reduction, the always-valid interval, the Bayesian
    chance to beat the control and the adjusted p-value; the SRM check; a verdict in words
    per variant; notes on the data. Nothing is written.
    """
    known(settings, key)
    with refused_as_conflict():
        done = experiment_analysis.run(
            settings, key, cap=cap, correction=correction, primary=primary, write=False
        )
    return ExperimentResults.of(done.analysis)


@router.get(
    "/{key}/report",
    summary="the results as one self-contained HTML page",
    response_class=Response,
    responses=PAGE | AUTH | UNKNOWN | NOT_ANALYSABLE | INVALID,
)
def experiment_report_page(
    key: str,
    settings: SettingsDep,
    _marketer: MarketerKey,
    cap: Cap = None,
    correction: Correction = None,
    primary: Primary = None,
) -> HTMLResponse:
    """The page of `cashback experiments report`: verdict, SRM, lifts, plots, power plan.

    One HTML file with inline CSS and SVG, nothing fetched: it opens offline and can be
    attached to an e-mail.
    """
    known(settings, key)
    with tempfile.TemporaryDirectory(prefix="experiment-report-") as directory:
        with refused_as_conflict():
            done = experiment_report.run(
                settings,
                key,
                Path(directory) / "report.html",
                cap=cap,
                correction=correction,
                primary=primary,
            )
        page = done.path.read_text(encoding="utf-8")
    return HTMLResponse(page)
