"""The console's experiment pages: list, create (with the power calculator), start, stop, results.

They call what `/v1/experiments` and `cashback experiments ...` call: the store
(`pipelines.experiments`, `models.experiments.store`), the power calculator
(`models.experiments.power.plan_experiment`) and the report of `cashback experiments
report` (`models.experiments.report`), which the results page embeds as it is.

Start and stop are POST forms behind a confirmation page (the CSRF token is checked by
the session dependency); what the store refuses (a key taken, a transition not allowed, a
layer without room) is shown on a 409 page with its message.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from cashback.errors import CashbackError
from cashback.reports import Report, Section
from cashback.reports import render as render_report
from cashback.settings import Settings
from cashback.vocab import ExperimentMetric, ExperimentStatus, Lifecycle
from models.experiments.definition import ExperimentDefinition
from models.experiments.report import experiment_report
from models.experiments.store import ExperimentRow, ExperimentStore
from pipelines import experiments
from pipelines.experiment_analysis import run as analyze
from pipelines.experiment_report import hypothesis
from serving.console.deps import MarketerSession, app_state
from serving.console.marketing_data import (
    DEFINITION_FIELDS,
    PageCache,
    analysis_inputs,
    definition_fields,
    field_errors,
    new_experiment_defaults,
    power_result,
)
from serving.console.rendering import PREFIX, is_htmx, render
from serving.console.security import CSRF_FIELD, ConsoleUser

EXPERIMENTS: Final = f"{PREFIX}/marketing/experiments"
LISTS: Final = ("lifecycle", "guardrail_metrics")
ACTIONS: Final = {
    "start": (ExperimentStatus.DRAFT, experiments.start),
    "stop": (ExperimentStatus.RUNNING, experiments.stop),
}
# the report is a page of its own with inline CSS and SVG and no script; only the
# console's own pages may frame it
REPORT_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "SAMEORIGIN",
}

REPORTS: Final[PageCache[str]] = PageCache()  # the last reports made, by what they were made from

router = APIRouter(prefix="/experiments")


def _settings(request: Request) -> Settings:
    return app_state(request).settings


def _row(settings: Settings, key: str) -> ExperimentRow | None:
    return next((row for row in experiments.list_all(settings) if row.key == key), None)


def _problem(
    request: Request, user: ConsoleUser, title: str, message: str, status_code: int
) -> HTMLResponse:
    context = {"title": title, "message": message}
    return render(request, "error.html", context, user=user, status_code=status_code)


def _unknown(request: Request, user: ConsoleUser, key: str) -> HTMLResponse:
    message = f"There is no experiment {key!r}: the experiments page lists them."
    return _problem(request, user, "No such experiment", message, status.HTTP_404_NOT_FOUND)


@router.get("")
def experiment_list(request: Request, user: MarketerSession) -> HTMLResponse:
    """Every experiment: status, layer, variants, window, and links to act on it."""
    rows = experiments.list_all(_settings(request))
    return render(request, "marketing/experiments.html", {"rows": rows}, user=user)


def _form_page(
    request: Request,
    user: ConsoleUser,
    values: dict[str, str],
    lists: dict[str, list[str]],
    errors: dict[str, str] | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "values": values,
        "lists": lists,
        "errors": errors or {},
        "result": power_result(values),
        "lifecycles": [stage.value for stage in Lifecycle],
        "metrics": [metric.value for metric in ExperimentMetric],
    }
    return render(
        request, "marketing/experiment_new.html", context, user=user, status_code=status_code
    )


async def _posted(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The form's single values (strings) and its checkbox lists."""
    form = await request.form()
    values = {
        name: value
        for name, value in form.items()
        if isinstance(value, str) and name not in LISTS and name != CSRF_FIELD
    }
    lists = {name: [v for v in form.getlist(name) if isinstance(v, str)] for name in LISTS}
    return values, lists


@router.get("/new")
def new_experiment(request: Request, user: MarketerSession) -> HTMLResponse:
    """The create form, with the power calculator's plan for its first values."""
    settings = _settings(request)
    lists = {"lifecycle": [], "guardrail_metrics": list(settings.experiments.guardrail_metrics)}
    return _form_page(request, user, new_experiment_defaults(settings), lists)


@router.post("/plan")
async def plan(request: Request, user: MarketerSession) -> HTMLResponse:
    """The calculator's plan for the form's values: the plan alone for HTMX, else the form."""
    values, lists = await _posted(request)
    if is_htmx(request):
        context = {"result": power_result(values)}
        return render(request, "marketing/_plan.html", context, user=user)
    return _form_page(request, user, values, lists)


@router.post("")
async def create_experiment(request: Request, user: MarketerSession) -> Response:
    """Create a draft from the form; the form again with each field's problem when refused."""
    values, lists = await _posted(request)
    settings = _settings(request)
    refused = status.HTTP_422_UNPROCESSABLE_CONTENT
    try:
        definition = ExperimentDefinition.model_validate(definition_fields(values, lists))
    except ValidationError as error:
        errors = field_errors(error, DEFINITION_FIELDS)
        return _form_page(request, user, values, lists, errors, refused)
    try:
        created = ExperimentStore.from_settings(settings).create(definition)
    except CashbackError as error:
        errors = {"key": str(error)}
        return _form_page(request, user, values, lists, errors, status.HTTP_409_CONFLICT)
    return RedirectResponse(f"{EXPERIMENTS}/{created.key}", status.HTTP_303_SEE_OTHER)


@router.get("/{key}")
def experiment_detail(request: Request, user: MarketerSession, key: str) -> HTMLResponse:
    """One experiment: definition, status, customers per variant, start / stop, results."""
    settings = _settings(request)
    row = _row(settings, key)
    if row is None:
        return _unknown(request, user, key)
    shown = experiments.show(settings, key) if row.defined else None
    context = {"row": row, "shown": shown}
    return render(request, "marketing/experiment.html", context, user=user)


@router.get("/{key}/results")
def results(request: Request, user: MarketerSession, key: str) -> HTMLResponse:
    """The results: the experiment's report (`cashback experiments report`) embedded."""
    row = _row(_settings(request), key)
    if row is None:
        return _unknown(request, user, key)
    return render(request, "marketing/results.html", {"row": row}, user=user)


@router.get("/{key}/report")
def report(request: Request, user: MarketerSession, key: str) -> HTMLResponse:
    """The report of `cashback experiments report`, as of the data now (nothing written).

    The page is made again only when what the analysis reads has changed (see
    `analysis_inputs`): making it takes seconds (the analysis and the plots).
    """
    settings = _settings(request)
    if _row(settings, key) is None:
        return _unknown(request, user, key)
    try:
        page = REPORTS.get((key, analysis_inputs(settings)), lambda: _report_page(settings, key))
    except CashbackError as error:  # shown in the results page's frame: a report page too
        problem = Report(f"Experiment {key}: no results yet", [Section("Why", [str(error)])])
        return HTMLResponse(
            render_report(problem), status.HTTP_409_CONFLICT, headers=REPORT_HEADERS
        )
    return HTMLResponse(page, headers=REPORT_HEADERS)


def _report_page(settings: Settings, key: str) -> str:
    analysis = analyze(settings, key, write=False).analysis
    page = experiment_report(
        analysis, power=settings.experiments.power, hypothesis=hypothesis(settings, key)
    )
    return render_report(page)


@router.get("/{key}/{action}")
def confirm(request: Request, user: MarketerSession, key: str, action: str) -> HTMLResponse:
    """Ask before starting or stopping (`action`: start or stop)."""
    if action not in ACTIONS:
        return _problem(request, user, "Not found", "No such page.", status.HTTP_404_NOT_FOUND)
    row = _row(_settings(request), key)
    if row is None:
        return _unknown(request, user, key)
    context = {"row": row, "action": action, "allowed": row.status == ACTIONS[action][0]}
    return render(request, "marketing/confirm.html", context, user=user)


@router.post("/{key}/{action}")
def act(request: Request, user: MarketerSession, key: str, action: str) -> Response:
    """Start or stop the experiment, then show it; the store's refusal on a 409 page."""
    if action not in ACTIONS:
        return _problem(request, user, "Not found", "No such page.", status.HTTP_404_NOT_FOUND)
    settings = _settings(request)
    if _row(settings, key) is None:
        return _unknown(request, user, key)
    try:
        ACTIONS[action][1](settings, key)
    except CashbackError as error:
        title = f"Could not {action} {key}"
        return _problem(request, user, title, str(error), status.HTTP_409_CONFLICT)
    return RedirectResponse(f"{EXPERIMENTS}/{key}", status.HTTP_303_SEE_OTHER)
