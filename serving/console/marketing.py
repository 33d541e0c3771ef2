"""The marketers' pages: experiments, segment profiles, the rate card and frontier, KPIs.

Marketer and admin sessions may open them. The experiments live in
`serving.console.marketing_experiments`; what each page shows is computed in
`serving.console.marketing_data` by the code the CLI and the API call.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cashback.errors import CashbackError
from serving.console import marketing_experiments
from serving.console.deps import MarketerSession, app_state
from serving.console.marketing_data import frontier_chart, rates_view, segments_view
from serving.console.rendering import PREFIX, render

router = APIRouter(prefix=f"{PREFIX}/marketing", include_in_schema=False)
router.include_router(marketing_experiments.router)


@router.get("")
def marketing_home(request: Request, user: MarketerSession) -> HTMLResponse:
    """The marketing area: what each page is for."""
    return render(request, "marketing/home.html", user=user)


@router.get("/segments")
def segments(request: Request, user: MarketerSession) -> HTMLResponse:
    """Each segment of the champion segment model: its customers and a typical member."""
    try:
        view, problem = segments_view(app_state(request).settings), None
    except CashbackError as error:
        view, problem = None, str(error)
    context = {"view": view, "problem": problem}
    return render(request, "marketing/segments.html", context, user=user)


@router.get("/rates")
def rates(request: Request, user: MarketerSession) -> HTMLResponse:
    """The served rates champion's card, its fairness report and the budget frontier."""
    state = app_state(request)
    try:
        view, problem = rates_view(state.settings, state.runtime), None
    except CashbackError as error:
        view, problem = None, str(error)
    chart = frontier_chart(view.frontier) if view and view.frontier else None
    context = {"view": view, "problem": problem, "chart": chart}
    return render(request, "marketing/rates.html", context, user=user)


@router.get("/kpis")
def kpis(request: Request, user: MarketerSession) -> HTMLResponse:
    """The KPI report's place: it does not exist yet, and the page says so."""
    return render(request, "marketing/kpis.html", user=user)
