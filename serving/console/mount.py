"""Mounting the web console on the API app: routers, static files, handlers, headers."""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import quote

from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.console import admin, marketing, pages, risk
from serving.console.deps import ForbiddenError, FormError, SignInRequiredError, session_user
from serving.console.rendering import PREFIX, STATIC_DIR, is_htmx, render

STATIC: Final = f"{PREFIX}/static"
# pages load scripts and styles from the console only; no frames, no inline scripts
SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        (
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        ),
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class ConsoleHeadersMiddleware:
    """Security headers and a `Server-Timing` header (ms in the app) on console responses.

    Args:
        app: the ASGI app to wrap.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to console responses."""
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(f"{PREFIX}/")):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        static = path.startswith(f"{STATIC}/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.1f}".encode()))
                # a page that sets its own policy keeps it (the experiment report's frame)
                own = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in own)
                if not static:  # pages show private data: never cached
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _sign_in_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, SignInRequiredError)
    target = f"{PREFIX}/sign-in"
    if error.next_path:
        target = f"{target}?next={quote(error.next_path, safe='/')}"
    if is_htmx(request):
        return Response(status_code=status.HTTP_401_UNAUTHORIZED, headers={"HX-Redirect": target})
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


async def _error_page(request: Request, title: str, message: str, status_code: int) -> Response:
    user = await run_in_threadpool(session_user, request)  # the navigation, when signed in
    context = {"title": title, "message": message}
    return render(request, "error.html", context, user=user, status_code=status_code)


async def _forbidden(request: Request, error: Exception) -> Response:
    return await _error_page(request, "Not allowed", str(error), status.HTTP_403_FORBIDDEN)


async def _invalid_form(request: Request, error: Exception) -> Response:
    return await _error_page(
        request, "Invalid form", str(error), status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def mount_console(app: FastAPI) -> None:
    """Add the console's pages, static files, error pages and headers to the app."""
    for area in (pages, risk, marketing, admin):
        app.include_router(area.router)
    app.mount(STATIC, StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_exception_handler(SignInRequiredError, _sign_in_required)
    app.add_exception_handler(ForbiddenError, _forbidden)
    app.add_exception_handler(FormError, _invalid_form)
    app.add_middleware(ConsoleHeadersMiddleware)
