"""Dependencies of the console's pages: who is signed in, with which role, and CSRF checks.

- `ConsoleSession`: any signed-in key; `RiskSession`, `MarketerSession`, `AdminSession`: a
  key of that role or admin. Without a valid session the page redirects to the sign-in form
  (HTMX requests get 401 with `HX-Redirect`); with another role it is a 403 page.
- Every non-GET request through these dependencies must carry the session's CSRF token
  (form field `csrf_token` or header `X-CSRF-Token`), else 403 before the route runs.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Final, TypeVar, get_origin

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from cashback.vocab import Role
from serving.console.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    ConsoleState,
    ConsoleUser,
    active_role,
    same_token,
)
from serving.state import AppState

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_build_lock = threading.Lock()
FormModel = TypeVar("FormModel", bound=BaseModel)


class SignInRequiredError(Exception):
    """No valid session: sign in first (`next`: the page asked for)."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in to open this page")
        self.next_path = next_path


class ForbiddenError(Exception):
    """The session may not do this (wrong role, or a missing or invalid CSRF token)."""


def app_state(request: Request) -> AppState:
    """The running app's state."""
    state: AppState = request.app.state.serving
    return state


def console_state(request: Request) -> ConsoleState:
    """The console's state, built on first use (the secret is read then, not at startup)."""
    app_attributes = request.app.state
    found: ConsoleState | None = getattr(app_attributes, "console", None)
    if found is None:
        with _build_lock:
            found = getattr(app_attributes, "console", None)
            if found is None:
                found = ConsoleState.build(app_state(request).settings)
                app_attributes.console = found
    return found


def session_user(request: Request) -> ConsoleUser | None:
    """The valid session of the request (signed, unexpired, its key active), or None."""
    console = console_state(request)
    user = console.codec.load(request.cookies.get(SESSION_COOKIE))
    if user is None:
        return None
    db = app_state(request).db
    return user if console.keys.active(user, lambda key_id: active_role(db, key_id)) else None


async def check_csrf(request: Request, expected: str) -> None:
    """Refuse a request whose CSRF token (header, else form field) is not `expected`.

    Raises:
        ForbiddenError: the token is missing or wrong.
    """
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same_token(given, expected):
        msg = "the form's security token is missing or out of date: reload the page and retry"
        raise ForbiddenError(msg)


class FormError(Exception):
    """A form's fields do not fit: `message` says which and what was expected."""


def validated(items: Iterable[tuple[str, Any]], model: type[FormModel]) -> FormModel:
    """Form or query fields as `model`: empty ones dropped (so defaults apply), lists by type.

    Raises:
        FormError: a field is missing or invalid (the message names it).
    """
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name != CSRF_FIELD and isinstance(value, str) and value.strip() != "":
            values.setdefault(name, []).append(value)
    fields: dict[str, str | list[str]] = {}
    for name, given in values.items():
        found = model.model_fields.get(name)
        many = found is not None and get_origin(found.annotation) is list
        fields[name] = given if many else given[-1]
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in error.errors()
        )
        raise FormError(problems) from None


async def read_form(request: Request, model: type[FormModel]) -> FormModel:
    """The request's form as `model` (see `validated`).

    Raises:
        FormError: a field is missing or invalid (the message names it).
    """
    form = await request.form()
    return validated(form.multi_items(), model)


def read_query(request: Request, model: type[FormModel]) -> FormModel:
    """The request's query parameters as `model` (see `validated`; GET forms send empty ones).

    Raises:
        FormError: a parameter is invalid (the message names it).
    """
    return validated(request.query_params.multi_items(), model)


def form_of(model: type[FormModel]) -> Callable[[Request], Awaitable[FormModel]]:
    """A dependency giving the request's form as `model` (see `read_form`).

    Raises:
        FormError: a field is missing or invalid (the console shows a 422 page saying which).
    """

    async def parse(request: Request) -> FormModel:
        return await read_form(request, model)

    return parse


def _wanted(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


async def signed_in(request: Request) -> ConsoleUser:
    """The session's key; for a non-GET request, after checking its CSRF token.

    Raises:
        SignInRequiredError: no valid session.
        ForbiddenError: a missing or wrong CSRF token.
    """
    user = await run_in_threadpool(session_user, request)  # a database look-up at times
    if user is None:
        raise SignInRequiredError(_wanted(request) if request.method in SAFE_METHODS else "")
    if request.method not in SAFE_METHODS:
        await check_csrf(request, user.csrf)
    return user


ConsoleSession = Annotated[ConsoleUser, Depends(signed_in)]


def require_role(*roles: Role) -> Callable[[ConsoleUser], Awaitable[ConsoleUser]]:
    """A dependency letting through sessions of these roles (and admin).

    Raises:
        ForbiddenError: a session of another role.
    """
    allowed = {*roles, Role.ADMIN}

    async def check(user: ConsoleSession) -> ConsoleUser:
        if user.role not in allowed:
            names = " or ".join(sorted(r.value for r in allowed))
            msg = f"this page is for {names} keys; you are signed in as {user.role.value}"
            raise ForbiddenError(msg)
        return user

    return check


RiskSession = Annotated[ConsoleUser, Depends(require_role(Role.RISK))]
MarketerSession = Annotated[ConsoleUser, Depends(require_role(Role.MARKETER))]
AdminSession = Annotated[ConsoleUser, Depends(require_role())]
