"""The fraud model on disk (no pickle): a LightGBM text model, the anomaly forest, and JSON.

Files in one directory:
- `booster.txt`: the LightGBM model (`Booster.save_model`), loadable natively;
- `anomaly.npz`: the anomaly scorer's arrays;
- `model.json`: features, calibrator, thresholds, typical values, training parameters.

The pyfunc model logged to MLflow carries this directory as its artifacts; serving and batch
scoring load it natively (`load_model`) and predict exactly what the pyfunc model predicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightgbm as lgb

from models.fraud.anomaly import AnomalyScorer
from models.fraud.decisions import Thresholds
from models.fraud.model import Calibrator, FraudModel

BOOSTER = "booster.txt"
ANOMALY = "anomaly.npz"
META = "model.json"
FORMAT = 1


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def save_model(model: FraudModel, limits: Thresholds, directory: Path) -> Path:
    """Write the model and its thresholds into `directory` (created; files replaced atomically).

    Returns:
        The directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_text(directory / BOOSTER, model.booster.model_to_string())
    model.anomaly.save(directory / ANOMALY)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "features": model.features,
        "calibrator": {
            "slope": model.calibrator.slope,
            "intercept": model.calibrator.intercept,
            "fitted_on": model.calibrator.fitted_on,
        },
        "thresholds": limits.to_dict(),
        "typical": model.typical,
        "params": model.params,
    }
    _atomic_text(directory / META, json.dumps(meta, indent=2, sort_keys=True, default=str))
    return directory


def load_model(directory: Path) -> tuple[FraudModel, Thresholds]:
    """Read a model written by `save_model`.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    for name in (BOOSTER, ANOMALY, META):
        if not (directory / name).exists():
            msg = f"{directory / name}: fraud model file missing"
            raise FileNotFoundError(msg)
    meta = json.loads((directory / META).read_text())
    model = FraudModel(
        features=list(meta["features"]),
        booster=lgb.Booster(model_file=str(directory / BOOSTER)),
        anomaly=AnomalyScorer.load(directory / ANOMALY),
        calibrator=Calibrator(**meta["calibrator"]),
        typical={k: float(v) for k, v in meta["typical"].items()},
        params=dict(meta["params"]),
    )
    return model, Thresholds(**meta["thresholds"])
