"""For the marketing pages' browser tests: a private copy of the served world with segments.

The served world has no segment model. `segmented_world` copies it the way `private_world`
does, with its own MLflow registry (a copy: a few MB) and its own feature tables (real
directories of symbolic links, so that writing a table replaces a link, never the shared
file), then trains a segment model and promotes it: the segments page has a champion and
the last training run's sizes to show (about half a minute).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.serving.experiment_world import private_world
from tests.serving.world import base_settings

MLFLOW = "mlflow"
FEATURES = "features"


def _own_copy(directory: Path, *, links: bool) -> None:
    """Replace the link `directory` by a copy of what it points to (files as links)."""
    shared = directory.resolve()
    directory.unlink()
    if links:
        shutil.copytree(shared, directory, copy_function=os.symlink)
    else:
        shutil.copytree(shared, directory)


def segmented_world(world: Path, into: Path) -> Path:
    """A data directory at `into` reading as `world`, with a segments champion of its own.

    Args:
        world: the served world's data directory (never written).
        into: an absent directory.

    Returns:
        `into`.
    """
    from models.registry import promote
    from pipelines import train_segments

    private_world(world, into)
    _own_copy(into / MLFLOW, links=False)
    _own_copy(into / FEATURES, links=True)
    settings = base_settings(into)
    train_segments.run(settings)
    promote(settings, "segments")
    return into
