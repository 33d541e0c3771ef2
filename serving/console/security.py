"""The console's sessions: a signed cookie per sign-in, its CSRF token, revocation checks.

A session is a cookie signed with `serving.console_secret` (itsdangerous, HMAC-SHA1 with a
derived key and a timestamp) holding the API key's id, name and role and a random CSRF
token, never the key itself. It expires after `serving.console_session_hours` (the
signature's age is checked, not only the cookie's lifetime), and every request checks that
the key is still active (remembered for `serving.key_cache_seconds`, as API keys are), so a
revoked key's sessions stop working that late at most.

Forms carry the session's CSRF token in a hidden field `csrf_token`, HTMX requests in the
header `X-CSRF-Token`. The sign-in form, sent before any session exists, carries the token
of a short-lived signed cookie of its own (double submit).
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from cashback.settings import Settings
from cashback.vocab import Role
from serving.auth import Principal
from serving.db import Database
from serving.tables import ApiKey

SESSION_COOKIE: Final = "cashback_console"
SIGN_IN_COOKIE: Final = "cashback_console_sign_in"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
SIGN_IN_SECONDS: Final = 3600  # how long a sign-in form stays valid
_SESSION_SALT: Final = "cashback-console-session"
_SIGN_IN_SALT: Final = "cashback-console-sign-in"


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in key of a console session.

    Attributes:
        key_id: the API key's row id.
        name: its name (shown, and recorded as the analyst).
        role: its role.
        csrf: the session's CSRF token.
    """

    key_id: int
    name: str
    role: Role
    csrf: str

    @property
    def principal(self) -> Principal:
        """The key as the API's services know it."""
        return Principal(self.key_id, self.name, self.role)


def new_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str) -> bool:
    """Whether a token sent matches the expected one (in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class SessionCodec:
    """Signs and reads the console's cookies.

    Args:
        secret: the signing key.
        session_seconds: how long a session is valid.
    """

    def __init__(self, secret: bytes, session_seconds: float) -> None:
        self.session_seconds = math.ceil(session_seconds)  # the signature's clock has seconds
        self._sessions = URLSafeTimedSerializer(secret, salt=_SESSION_SALT)
        self._sign_ins = URLSafeTimedSerializer(secret, salt=_SIGN_IN_SALT)

    def dump(self, user: ConsoleUser) -> str:
        """The cookie value of a session."""
        payload = {"k": user.key_id, "n": user.name, "r": user.role.value, "c": user.csrf}
        return self._sessions.dumps(payload)

    def load(self, cookie: str | None) -> ConsoleUser | None:
        """The session of a cookie, or None when absent, tampered with, expired or malformed."""
        if not cookie:
            return None
        try:
            payload: Any = self._sessions.loads(cookie, max_age=self.session_seconds)
            return ConsoleUser(
                int(payload["k"]), str(payload["n"]), Role(payload["r"]), str(payload["c"])
            )
        except (BadSignature, KeyError, TypeError, ValueError):
            return None

    def dump_sign_in(self, token: str) -> str:
        """The cookie value that goes with a sign-in form's token."""
        return self._sign_ins.dumps(token)

    def load_sign_in(self, cookie: str | None) -> str | None:
        """The sign-in form's token in its cookie, or None."""
        if not cookie:
            return None
        try:
            token: Any = self._sign_ins.loads(cookie, max_age=SIGN_IN_SECONDS)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None


class ActiveKeys:
    """Which keys are still active, remembered for a few seconds (like `serving.auth.KeyCache`).

    Only active keys are remembered, so a revocation is seen at most `seconds` late.

    Args:
        seconds: how long an active key is remembered (0: look it up on every request).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def active(self, user: ConsoleUser, look_up: Callable[[int], str | None]) -> bool:
        """Whether the session's key is active with the session's role.

        Args:
            user: the session.
            look_up: the role of an active key by id, None when revoked or unknown.
        """
        entry = (user.key_id, user.role.value)
        now = time.monotonic()
        if self._until.get(entry, 0.0) > now:
            return True
        if look_up(user.key_id) != user.role.value:
            return False
        if self.seconds > 0:
            with self._lock:
                if len(self._until) >= 10_000:  # bounded: full, it starts over
                    self._until.clear()
                self._until[entry] = now + self.seconds
        return True

    def forget(self, key_id: int) -> None:
        """Look this key up again on its next request (it was revoked)."""
        with self._lock:
            for entry in [e for e in self._until if e[0] == key_id]:
                del self._until[entry]


def active_role(db: Database, key_id: int) -> str | None:
    """The role of an active key, or None when it is revoked or unknown."""
    with db.session() as session:
        role: str | None = session.scalar(
            select(ApiKey.role).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        )
        return role


@dataclass(frozen=True)
class ConsoleState:
    """What the console keeps while the app runs: its cookie codec and key cache."""

    codec: SessionCodec
    keys: ActiveKeys
    secure_cookies: bool

    @classmethod
    def build(cls, settings: Settings) -> ConsoleState:
        """The console's state for these settings (reads or, in dev, creates the secret)."""
        codec = SessionCodec(
            settings.console_secret_bytes(), settings.serving.console_session_hours * 3600
        )
        return cls(
            codec, ActiveKeys(settings.serving.key_cache_seconds), settings.console_cookie_secure
        )
