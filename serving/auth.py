"""API keys and roles.

A key is 32 random bytes (`cbk_` + URL-safe base64), shown once when created. Only its
SHA-256 hash is stored: a key that random cannot be guessed from its hash, so a slow
password hash would add latency to every request and no safety. Keys have one role:

- `engine`: the cashback engine (offers, claim scores);
- `marketer`: experiments and customer insights;
- `risk`: the review queue;
- `admin`: everything.

Revoked keys are kept (`revoked_at`) so that decisions still name the key that asked.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cashback.errors import CashbackError
from cashback.vocab import Role
from serving.tables import ApiKey, utc_now

KEY_PREFIX = "cbk_"
KEY_BYTES = 32
DISPLAY_CHARS = 8  # characters after the prefix shown in listings


@dataclass(frozen=True)
class Principal:
    """The key a request was made with.

    Attributes:
        key_id: its row id.
        name: its name.
        role: its role.
    """

    key_id: int
    name: str
    role: Role


@dataclass(frozen=True)
class CreatedKey:
    """A new key: the only time the key itself is known.

    Attributes:
        key_id: its row id.
        name: its name.
        role: its role.
        key: the key, to hand to its user.
    """

    key_id: int
    name: str
    role: Role
    key: str


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def create_key(session: Session, role: Role, name: str | None = None) -> CreatedKey:
    """Store a new key of this role (committed); the key is in the result, and only there.

    Args:
        session: an app database session.
        role: the key's role.
        name: a label (default: the role).
    """
    key = new_key()
    row = ApiKey(
        name=(name or role.value)[:100],
        role=role.value,
        key_hash=hash_key(key),
        prefix=key[len(KEY_PREFIX) : len(KEY_PREFIX) + DISPLAY_CHARS],
        created_at=utc_now(),
    )
    session.add(row)
    session.commit()
    return CreatedKey(row.id, row.name, role, key)


def list_keys(session: Session) -> Sequence[ApiKey]:
    """Every key, oldest first (hashes, never keys)."""
    return session.scalars(select(ApiKey).order_by(ApiKey.id)).all()


def revoke_key(session: Session, key_id: int, now: datetime | None = None) -> ApiKey:
    """Revoke a key (committed); revoking a revoked key keeps its first revocation time.

    Raises:
        CashbackError: there is no key with this id.
    """
    row = session.get(ApiKey, key_id)
    if row is None:
        msg = f"no API key with id {key_id} (see `cashback keys list`)"
        raise CashbackError(msg)
    if row.revoked_at is None:
        row.revoked_at = now or utc_now()
        session.commit()
    return row


def authenticate(session: Session, key: str) -> Principal | None:
    """The active key's principal, or None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else Principal(row.id, row.name, Role(row.role))


class KeyCache:
    """Valid keys remembered for a few seconds, so a request need not look its key up.

    Only valid keys are kept (a key created a moment ago is never refused because of an
    earlier miss); a revoked key works at most `seconds` longer. Bounded: full, it starts
    over.

    Args:
        seconds: how long a key is remembered (0: never).
        max_keys: how many keys at most.
    """

    def __init__(self, seconds: float, max_keys: int = 10_000) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self._keys: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def principal(self, key: str, look_up: Callable[[str], Principal | None]) -> Principal | None:
        """The key's principal: remembered, else looked up (and remembered if valid)."""
        digest = hash_key(key)
        now = time.monotonic()
        found = self._keys.get(digest)
        if found is not None and found[1] > now:
            return found[0]
        principal = look_up(key)
        if principal is not None and self.seconds > 0:
            with self._lock:
                if len(self._keys) >= self.max_keys:
                    self._keys.clear()
                self._keys[digest] = (principal, now + self.seconds)
        return principal
