"""For the experiments API tests: a private copy of the served world, its experiment, bodies.

The experiment store writes under the data directory (the experiments and assignments
tables, the definitions, a lock file), and the served world is shared by the whole test
session. `private_world` gives a test its own data directory: the experiments' files are
copied into it, everything else (features, online store, MLflow, the other tables) is a
symbolic link to the served world, which the app only reads.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from cashback.contract import ASSIGNMENTS, EXPERIMENTS
from cashback.settings import ExperimentSettings
from cashback.tables import read_table
from models.experiments.store import DEFINITIONS_DIR, LOCK_FILE
from serving.experiment_schemas import EXPERIMENT_EXAMPLE


def _written_by_the_store() -> set[str]:
    """Names of the data directory's entries that the experiments' commands write."""
    results = Path(ExperimentSettings().results_subdirectory).parts[0]
    return {EXPERIMENTS.file_name, ASSIGNMENTS.file_name, DEFINITIONS_DIR, LOCK_FILE, results}


def private_world(world: Path, into: Path) -> Path:
    """A data directory at `into` that reads as `world` but writes experiments apart.

    Args:
        world: the served world's data directory (never written).
        into: an absent directory.

    Returns:
        `into`.
    """
    into.mkdir(parents=True)
    copied = _written_by_the_store()
    for entry in world.iterdir():
        target = into / entry.name
        if entry.name not in copied:
            target.symlink_to(entry, target_is_directory=entry.is_dir())
        elif entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    return into


def simulated_experiment(world: Path) -> str:
    """The key of the world's own experiment: the one the simulator assigned customers to."""
    table = read_table(world, EXPERIMENTS.name).collect()
    assigned = read_table(world, ASSIGNMENTS.name).select("experiment_id").unique().collect()
    [key] = table.join(assigned, on="experiment_id")["key"].to_list()
    return str(key)


def definition_body(key: str | None = None, **changes: Any) -> dict[str, Any]:
    """The example of /docs with a fresh key, a layer of its own and a stop in the future."""
    key = key or f"exp-{uuid.uuid4().hex[:10]}"
    body = EXPERIMENT_EXAMPLE | {"key": key, "layer": f"layer-{key}", "stop": "2090-01-01"}
    return body | changes
