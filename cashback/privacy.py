"""Keyed hashing of identifiers that must never be stored in clear (IP addresses)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

IP_HASH_HEX_CHARS = 32


def hash_ip(ip: str, pepper: bytes) -> str:
    """HMAC-SHA256 of an IP address keyed by the pepper, first 32 hex characters.

    Args:
        ip: the address as text, e.g. "203.0.113.7".
        pepper: the secret key (`Settings.ip_pepper_bytes()`).

    Returns:
        The `ip_hash` stored in claims and used as the ip entity.
    """
    return hmac.digest(pepper, ip.strip().encode(), hashlib.sha256).hex()[:IP_HASH_HEX_CHARS]


def hash_ips(ips: Iterable[str], pepper: bytes) -> list[str]:
    """`hash_ip` of each address (call it on distinct values: one HMAC per address)."""
    return [
        hmac.digest(pepper, ip.encode(), hashlib.sha256).hex()[:IP_HASH_HEX_CHARS] for ip in ips
    ]
