"""Errors a user can act on: the CLI prints them as one line and exits 1."""

from __future__ import annotations


class CashbackError(Exception):
    """A problem with the user's input or set-up, explained in the message."""
