"""The admins' pages: model versions with champion and challenger metrics, promotion, API keys.

Promotion is `models.registry.promote`, the gate of `cashback models promote` included; keys
are `serving.auth`'s, as `cashback keys` uses them (a new key is shown once, on the page
that created it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cashback.errors import CashbackError
from cashback.vocab import Role
from serving.auth import CreatedKey, create_key, list_keys, revoke_key
from serving.console.deps import AdminSession, app_state, console_state, form_of
from serving.console.rendering import PREFIX, render
from serving.console.security import ConsoleUser
from serving.schemas import MAX_ROW_ID

if TYPE_CHECKING:
    from models.registry import ModelRow, PromotionResult

router = APIRouter(prefix=f"{PREFIX}/admin", include_in_schema=False)
ADMIN: Final = f"{PREFIX}/admin"
KEY_NOTICES: Final = {
    "revoked": "The key is revoked: its API calls and console sessions are refused (by other "
    "workers of the API within serving.key_cache_seconds)."
}


@dataclass(frozen=True)
class ModelView:
    """One registered model: its champion, its challenger and every version."""

    short: str
    name: str
    champion: ModelRow | None
    challenger: ModelRow | None
    versions: tuple[ModelRow, ...]


def _metrics(row: ModelRow | None, tag: str) -> dict[str, float]:
    """Metrics recorded as a JSON tag of a version (by its last promotion decision)."""
    raw = None if row is None else row.tags.get(tag)
    loaded: Any = json.loads(raw) if raw and raw != "null" else {}
    return {str(k): float(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def model_views(rows: Sequence[ModelRow]) -> list[ModelView]:
    """`list_models`' rows per model, with the versions holding each alias."""
    views: list[ModelView] = []
    for short in dict.fromkeys(row.short for row in rows):
        versions = tuple(row for row in rows if row.short == short)
        champion = next((r for r in versions if "champion" in r.aliases), None)
        challenger = next((r for r in versions if "challenger" in r.aliases), None)
        views.append(ModelView(short, versions[0].name, champion, challenger, versions))
    return views


def _models_page(
    request: Request,
    user: ConsoleUser,
    *,
    result: PromotionResult | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    from models.registry import list_models  # noqa: PLC0415 - MLflow: a slow import

    views = model_views(list_models(app_state(request).settings))
    context = {
        "views": views,
        "result": result,
        "error": error,
        "metrics": _metrics,
    }
    return render(request, "admin/models.html", context, user=user, status_code=status_code)


@router.get("")
def admin_home(_user: AdminSession) -> Response:
    """The admin area starts at the models."""
    return RedirectResponse(f"{ADMIN}/models", status.HTTP_303_SEE_OTHER)


@router.get("/models")
def models_page(request: Request, user: AdminSession) -> HTMLResponse:
    """Every registered model version: aliases, primary metric, promotion decisions."""
    return _models_page(request, user)


class PromoteForm(BaseModel):
    """The promotion form: force past a failed gate, with a reason."""

    model_config = ConfigDict(extra="ignore")

    force: bool = False
    reason: str | None = Field(default=None, max_length=500)


@router.post("/models/{short}/promote")
def promote_model(
    request: Request,
    short: str,
    user: AdminSession,
    form: Annotated[PromoteForm, Depends(form_of(PromoteForm))],
) -> HTMLResponse:
    """Promote the challenger when the gate passes (or forced, with a reason)."""
    from models.registry import MODEL_NAMES, promote  # noqa: PLC0415 - MLflow: a slow import

    if short not in MODEL_NAMES:
        message = f"no model {short!r}: one of {', '.join(MODEL_NAMES)}"
        return _models_page(request, user, error=message, status_code=404)
    try:
        result = promote(app_state(request).settings, short, force=form.force, reason=form.reason)
    except CashbackError as error:
        return _models_page(request, user, error=str(error), status_code=409)
    return _models_page(request, user, result=result, status_code=200 if result.promoted else 409)


# --------------------------------------------------------------------------- API keys


class NewKeyForm(BaseModel):
    """The new key form."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    name: str | None = Field(default=None, max_length=100)


def _keys_page(
    request: Request,
    user: ConsoleUser,
    *,
    created: CreatedKey | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with app_state(request).db.session() as session:
        keys = list(list_keys(session))
    context = {
        "keys": keys,
        "roles": list(Role),
        "created": created,
        "notice": KEY_NOTICES.get(request.query_params.get("done") or ""),
    }
    return render(request, "admin/keys.html", context, user=user, status_code=status_code)


@router.get("/keys")
def keys_page(request: Request, user: AdminSession) -> HTMLResponse:
    """Every API key (never the keys themselves), a form for a new one, revocation."""
    return _keys_page(request, user)


@router.post("/keys")
def new_key(
    request: Request,
    user: AdminSession,
    form: Annotated[NewKeyForm, Depends(form_of(NewKeyForm))],
) -> HTMLResponse:
    """Create a key and show it, this once (the page is not cached)."""
    with app_state(request).db.session() as session:
        created = create_key(session, form.role, form.name)
    return _keys_page(request, user, created=created, status_code=status.HTTP_201_CREATED)


@router.post("/keys/{key_id}/revoke")
def revoke(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],
    user: AdminSession,
) -> Response:
    """Revoke a key: its API calls and console sessions are refused from now on."""
    with app_state(request).db.session() as session:
        try:
            revoke_key(session, key_id)
        except CashbackError as error:
            context = {"title": "No such key", "message": str(error)}
            return render(request, "error.html", context, user=user, status_code=404)
    console_state(request).keys.forget(key_id)  # this worker refuses its sessions at once
    return RedirectResponse(f"{ADMIN}/keys?done=revoked", status.HTTP_303_SEE_OTHER)
