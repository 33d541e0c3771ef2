"""The console's own pages: sign in with an API key, sign out, the home page."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import authenticate
from serving.console.deps import (
    ConsoleSession,
    FormError,
    app_state,
    console_state,
    read_form,
    session_user,
)
from serving.console.rendering import PREFIX, render
from serving.console.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    ConsoleUser,
    new_token,
    same_token,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SIGN_IN: Final = f"{PREFIX}/sign-in"
MAX_KEY_CHARS: Final = 200


class SignInForm(BaseModel):
    """The sign-in form's fields."""

    model_config = ConfigDict(extra="ignore")

    api_key: str = Field(default="", max_length=MAX_KEY_CHARS)
    next: str = Field(default="", max_length=500)


def safe_next(path: str | None) -> str:
    """A console path to go to after signing in (anything else: the home page)."""
    if path and path.startswith(f"{PREFIX}/") and not path.startswith("//") and "\\" not in path:
        return path
    return f"{PREFIX}/"


def _sign_in_form(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = new_token()
    response = render(
        request,
        "sign_in.html",
        {"form_token": token, "next_path": safe_next(next_path), "error": error},
        status_code=status_code,
    )
    console = console_state(request)
    response.set_cookie(
        SIGN_IN_COOKIE,
        console.codec.dump_sign_in(token),
        max_age=SIGN_IN_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
    )
    return response


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    """The sign-in form (signed-in users go straight on)."""
    if session_user(request) is not None:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return _sign_in_form(request, next or "")


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Check the key and start a session: a signed cookie with its id, name and role."""
    console = console_state(request)
    form = await request.form()
    token = form.get(CSRF_FIELD)
    expected = console.codec.load_sign_in(request.cookies.get(SIGN_IN_COOKIE))
    try:
        fields = await read_form(request, SignInForm)
    except FormError:
        fields = SignInForm()
    if expected is None or not isinstance(token, str) or not same_token(token, expected):
        message = "the sign-in form was out of date: please sign in again"
        return _sign_in_form(request, fields.next, message, status.HTTP_403_FORBIDDEN)
    return await run_in_threadpool(_start_session, request, fields)


def _start_session(request: Request, fields: SignInForm) -> Response:
    console = console_state(request)
    state = app_state(request)
    with state.db.session() as session:
        principal = authenticate(session, fields.api_key.strip())
    if principal is None:
        message = "unknown or revoked API key"
        return _sign_in_form(request, fields.next, message, status.HTTP_401_UNAUTHORIZED)
    user = ConsoleUser(principal.key_id, principal.name, principal.role, new_token())
    response = RedirectResponse(safe_next(fields.next), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        console.codec.dump(user),
        max_age=console.codec.session_seconds,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
def sign_out(_user: ConsoleSession) -> Response:
    """End the session (its cookie is removed)."""
    response = RedirectResponse(SIGN_IN, status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/")
def home(request: Request, user: ConsoleSession) -> HTMLResponse:
    """The home page: what this role can open."""
    return render(request, "home.html", user=user)
