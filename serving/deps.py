"""Dependencies of the routes: the app state, settings, a database session, the caller's key.

Authentication is an API key in the `X-API-Key` header: no key or an unknown or revoked one
is a 401, a key whose role may not call the route a 403. `admin` may call every route.
Valid keys are remembered for `CASHBACK_SERVING__KEY_CACHE_SECONDS` (see `KeyCache`).

The dependencies that do not block are `async def`: FastAPI runs a plain `def` dependency in
its thread pool, and each such hop cost more CPU than the whole key check (measured on the
scoring routes under load). The key check reads the database only on a cache miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from cashback.settings import Settings
from cashback.vocab import Role
from serving.auth import Principal, authenticate
from serving.state import AppState

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="an API key from `cashback keys create --role ROLE`",
)


async def get_state(request: Request) -> AppState:
    """The running app's state."""
    state: AppState = request.app.state.serving
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    """The app's settings."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(state: StateDep) -> Iterator[Session]:
    """An app database session for the request."""
    with state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def current_key(
    state: StateDep, key: Annotated[str | None, Security(api_key_header)]
) -> Principal:
    """The caller's key.

    Raises:
        HTTPException: 401 without a key, or with an unknown or revoked key.
    """
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing API key ({API_KEY_HEADER})")

    def look_up(key: str) -> Principal | None:
        with state.db.session() as session:
            return authenticate(session, key)

    principal = state.keys.principal(key, look_up)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key")
    return principal


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency letting through keys of these roles (and admin).

    Raises:
        HTTPException: 403 for a key of another role.
    """
    allowed = {*roles, Role.ADMIN}

    async def check(principal: Annotated[Principal, Depends(current_key)]) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {principal.role.value} key may not call this route (roles: {names})",
            )
        return principal

    return check


EngineKey = Annotated[Principal, Depends(require(Role.ENGINE))]
MarketerKey = Annotated[Principal, Depends(require(Role.MARKETER))]
DecisionReaderKey = Annotated[Principal, Depends(require(Role.ENGINE, Role.RISK))]
RiskKey = Annotated[Principal, Depends(require(Role.RISK))]
