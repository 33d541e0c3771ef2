"""Feast definitions for the `feast` CLI: the same objects the service applies.

Entities, batch feature views, the on-demand claim view and the feature services are all
built by `features.store.feast_objects` from the settings, so this file only exposes them
to Feast's repo scanner.
"""

from __future__ import annotations

from cashback.settings import get_settings
from features.store import feast_objects

# Feast's CLI collects the Feast objects it finds among a repo module's globals.
globals().update({f"obj_{i}": obj for i, obj in enumerate(feast_objects(get_settings()))})
