"""Templates of the console: the Jinja2 environment, the navigation by role, `render`.

Every page extends `base.html` (blocks `title`, `subnav`, `content`, `scripts`); forms
call `{{ csrf_field() }}` for their hidden CSRF field. `render` fills in what the layout
needs: the signed-in user, their CSRF token and the navigation their role sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup, escape

from cashback.vocab import Role
from serving.console.security import CSRF_FIELD, ConsoleUser

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"
STATIC_DIR: Final = Path(__file__).parent / "static"
PREFIX: Final = "/console"


@dataclass(frozen=True)
class NavItem:
    """A link of the navigation bar, shown to these roles (and admin)."""

    label: str
    path: str
    roles: tuple[Role, ...]

    def shown_to(self, role: Role) -> bool:
        """Whether a key of this role sees the link."""
        return role is Role.ADMIN or role in self.roles


NAV: Final = (
    NavItem("Review queue", f"{PREFIX}/risk/queue", (Role.RISK,)),
    NavItem("Daily summary", f"{PREFIX}/risk/summary", (Role.RISK,)),
    NavItem("Marketing", f"{PREFIX}/marketing", (Role.MARKETER,)),
    NavItem("Models", f"{PREFIX}/admin/models", ()),
    NavItem("API keys", f"{PREFIX}/admin/keys", ()),
)


@pass_context
def _csrf_field(context: Any) -> Markup:
    token = context.get("csrf_token") or ""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


@cache
def templates() -> Jinja2Templates:
    """The console's templates (built once, on first use)."""
    found = Jinja2Templates(directory=TEMPLATES_DIR)
    found.env.globals["csrf_field"] = _csrf_field
    found.env.filters["number"] = _number
    found.env.filters["percent"] = _percent
    found.env.filters["when"] = _when
    return found


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    user: ConsoleUser | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page: the template `name` with `context` and the layout's variables.

    Args:
        request: the request (templates build URLs with it).
        name: the template, relative to `serving/console/templates/`.
        context: the page's variables.
        user: the signed-in user (None: the navigation is empty).
        status_code: the response's HTTP status.
    """
    nav = [] if user is None else [item for item in NAV if item.shown_to(user.role)]
    layout = {
        "user": user,
        "csrf_token": None if user is None else user.csrf,
        "nav": nav,
        "current_path": request.url.path,
    }
    return templates().TemplateResponse(
        request, name, layout | (context or {}), status_code=status_code
    )


def is_htmx(request: Request) -> bool:
    """Whether HTMX sent the request (it then wants a fragment, not a whole page)."""
    return request.headers.get("HX-Request") == "true"
