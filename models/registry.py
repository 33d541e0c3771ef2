"""The model lifecycle shared by every model: MLflow runs, the registry, gated promotion.

Names: each model has a short name (`MODEL_NAMES`) and is registered in the MLflow model
registry as `<settings.models.name_prefix><short>` (default `cashback-fraud`, ...), with its
runs in an experiment of the same name.

Lifecycle:

1. Training calls `log_model_run`: one run with params, metrics, the training data as an
   MLflow dataset input (raw id columns dropped) and its digest `input_digest`, plots, the
   evaluation set (`evaluation/evaluation.parquet`, ids dropped) and the pyfunc model, which
   becomes a new version of the registered model with the alias `challenger`.
2. `promote` evaluates the challenger and the current champion with the model's evaluator on
   the challenger's stored evaluation set, and moves the alias `champion` to the challenger
   when the gate passes (or when forced, with a reason). Every decision is recorded as tags on
   the challenger version and as `promotion.json` in a small run of the model's experiment.
3. `rollback` moves `champion` back along the champion history (the registered-model tag
   `cashback.champion_history`, oldest first): repeated rollbacks go further back.
4. Serving loads `load_champion`, or reads the champion's pyfunc artifacts directly from
   `champion_artifacts` (e.g. a native LightGBM booster file); replaying a decision reads
   the version that made it from `version_artifacts`.

Evaluators: `evaluator_for(short)` returns the evaluator registered with `register_evaluator`,
or else imports the package `models.<short>` and calls its `evaluator()` function (the
convention every model package follows: `models/<short>/__init__.py` defines
`def evaluator() -> Evaluator`, cheap to call, importing what it needs lazily).

Nothing runs at import time; `configure_mlflow` is called by every entry point here.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import mlflow.artifacts
import polars as pl
from mlflow.data.polars_dataset import from_polars
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PyFuncModel, load_model, log_model
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient

from cashback.errors import CashbackError
from models.evaluation import Check, Evaluator, compare

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow.entities.model_registry import ModelVersion

    from cashback.settings import Settings

MODEL_NAMES = ("fraud", "churn", "clv", "segments", "rates")
ID_COLUMNS = (
    "customer_id",
    "claim_id",
    "txn_id",
    "device_id",
    "ip_hash",
    "receipt_hash",
    "exposure_id",
)
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
EVALUATION_ARTIFACT = "evaluation/evaluation.parquet"
HISTORY_TAG = "cashback.champion_history"
HISTORY_LIMIT = 100
KIND_TAG = "cashback.kind"
DIGEST_KEY = "input_digest"
MODEL_PACKAGE = "models"
REQUIREMENT_PACKAGES = (
    "mlflow",
    "cloudpickle",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "lightgbm",
)

_EVALUATORS: dict[str, Evaluator] = {}
_configured: str | None = None
_DIGEST_SLICE_ROWS = 200_000
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_QUIET_MESSAGES = {
    # we pickle our own PythonModel classes on purpose, and pass the requirements explicitly
    "mlflow.pyfunc": ("Passing a Python object as `python_model`",),
    "mlflow.utils.environment": ("Failed to resolve installed pip version",),
}


# --------------------------------------------------------------------------- set-up and names


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with one of the prefixes."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow's tracking and registry at the configured store, quietly.

    The default tracking URI is a sqlite database under `<data_dir>/mlflow` (created here);
    experiments created by this module then keep their artifacts under
    `settings.mlflow_artifact_dir`. Also lowers MLflow's log level to WARNING (unless
    `MLFLOW_LOGGING_LEVEL` is set), hides artifact progress bars and two known noisy messages,
    and turns MLflow's usage telemetry off unless `MLFLOW_DISABLE_TELEMETRY` is set (set it in
    the environment to also skip the telemetry set-up MLflow does when first imported).
    Idempotent and cheap when nothing changed.

    Args:
        settings: the service settings.
    """
    global _configured  # noqa: PLW0603 - the one piece of process state MLflow needs
    uri = settings.mlflow_tracking_uri
    if _configured == uri and mlflow.get_tracking_uri() == uri:
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name, prefixes in _QUIET_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
    if settings.models.tracking_uri is None:
        (settings.data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _configured = uri


def _client(settings: Settings) -> MlflowClient:
    configure_mlflow(settings)
    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_name(settings: Settings, short: str) -> str:
    """The registered model name of a short name.

    Args:
        settings: the service settings (`models.name_prefix`).
        short: one of `MODEL_NAMES`.

    Returns:
        `<prefix><short>`, e.g. `cashback-fraud`.

    Raises:
        CashbackError: for an unknown short name.
    """
    if short not in MODEL_NAMES:
        msg = f"unknown model {short!r}: known models are {', '.join(MODEL_NAMES)}"
        raise CashbackError(msg)
    return settings.models.name_prefix + short


def _experiment_id(client: MlflowClient, settings: Settings, name: str) -> str:
    """The id of the experiment `name`, created (or restored) when needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    location = None
    if settings.models.tracking_uri is None:
        location = (settings.mlflow_artifact_dir / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


# --------------------------------------------------------------------------- evaluators


def register_evaluator(short: str, evaluator: Evaluator) -> None:
    """Make `evaluator` the one `evaluator_for(short)` returns.

    Args:
        short: one of `MODEL_NAMES`.
        evaluator: scores models of that package.

    Raises:
        CashbackError: for an unknown short name.
    """
    if short not in MODEL_NAMES:
        msg = f"unknown model {short!r}: known models are {', '.join(MODEL_NAMES)}"
        raise CashbackError(msg)
    _EVALUATORS[short] = evaluator


def evaluator_for(short: str) -> Evaluator:
    """The evaluator of a model: registered, or `models.<short>.evaluator()`.

    Args:
        short: one of `MODEL_NAMES`.

    Returns:
        The evaluator (registered for the next calls).

    Raises:
        CashbackError: for an unknown short name, or when the model package is missing or
            has no `evaluator()` function yet.
    """
    if short in _EVALUATORS:
        return _EVALUATORS[short]
    if short not in MODEL_NAMES:
        msg = f"unknown model {short!r}: known models are {', '.join(MODEL_NAMES)}"
        raise CashbackError(msg)
    module_name = f"{MODEL_PACKAGE}.{short}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        msg = f"no model package {module_name} yet: {short} cannot be evaluated"
        raise CashbackError(msg) from None
    factory = getattr(module, "evaluator", None)
    if not callable(factory):
        msg = f"{module_name} has no evaluator() yet: {short} cannot be promoted"
        raise CashbackError(msg)
    evaluator: Evaluator = factory()
    _EVALUATORS[short] = evaluator
    return evaluator


# --------------------------------------------------------------------------- data


def drop_ids(frame: pl.DataFrame, id_columns: Iterable[str] = ID_COLUMNS) -> pl.DataFrame:
    """The frame without raw ids: every column named `*_id` or listed in `id_columns`.

    Args:
        frame: any frame.
        id_columns: further columns to drop (absent ones are ignored).

    Returns:
        The frame without those columns.
    """
    listed = set(id_columns)
    return frame.drop([c for c in frame.columns if c.endswith("_id") or c in listed])


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns as sortable, CSV-writable values: categories as text, nested values as JSON."""
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.Binary):
            exprs.append(pl.col(name).bin.encode("hex"))
        elif dtype.is_nested():
            exprs.append(pl.struct(name).struct.json_encode().alias(name))
        elif isinstance(dtype, pl.Object):
            msg = f"column {name!r} holds Python objects: it cannot be digested"
            raise CashbackError(msg)
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def data_digest(frame: pl.DataFrame) -> str:
    r"""A sha256 of a frame's content, independent of row order.

    Serialization: the schema (`name:dtype` per column, in column order), then the rows sorted
    by every column (nulls last) and written as CSV without header, nulls as `\\N`, in slices
    of 200,000 rows; categoricals are hashed as their text, nested values as JSON, binary as
    hex. Row order does not change the digest; column order, names, types and values do. The
    CSV text of floats is exact (shortest round-trip form), so the digest is stable for a given
    polars version.

    Args:
        frame: the data (drop raw ids first: see `drop_ids`).

    Returns:
        64 hex characters.
    """
    digest = hashlib.sha256()
    schema = ",".join(f"{name}:{dtype}" for name, dtype in frame.schema.items())
    digest.update(schema.encode() + b"\n")
    if frame.width == 0:
        return digest.hexdigest()
    canonical = _canonical(frame)
    ordered = canonical.sort(canonical.columns, nulls_last=True, maintain_order=True)
    for chunk in ordered.iter_slices(_DIGEST_SLICE_ROWS):
        digest.update(chunk.write_csv(include_header=False, null_value="\\N").encode())
    return digest.hexdigest()


def default_pip_requirements() -> list[str]:
    """Pinned requirements of a logged model: the installed versions of the usual stack.

    Passing them spares MLflow's own inference, which loads the model in a subprocess and
    takes about ten seconds per model.
    """
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    pins = []
    for package in REQUIREMENT_PACKAGES:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


# --------------------------------------------------------------------------- logging a run


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version.

    Attributes:
        name: the registered model name.
        version: its version number.
        run_id: the run that logged it.
        model_uri: `models:/<name>/<version>`.
    """

    name: str
    version: int
    run_id: str
    model_uri: str


def _check_inputs(
    artifacts: Mapping[str, Path],
    plots: Mapping[str, Figure],
    input_example: pd.DataFrame,
    params: Mapping[str, object],
    id_columns: Iterable[str],
) -> None:
    missing = [f"{key}={path}" for key, path in artifacts.items() if not Path(path).exists()]
    if missing:
        msg = f"model artifacts not found: {', '.join(missing)}"
        raise CashbackError(msg)
    basenames = [Path(path).name for path in artifacts.values()]
    if len(set(basenames)) != len(basenames):
        msg = f"model artifact file names must differ (they share one directory): {basenames}"
        raise CashbackError(msg)
    bad = [key for key in plots if not _SAFE_NAME.match(key)]
    if bad:
        msg = f"plot names must be letters, digits, '_', '.' or '-': {bad}"
        raise CashbackError(msg)
    listed = set(id_columns)
    ids = [str(c) for c in input_example.columns if str(c).endswith("_id") or str(c) in listed]
    if ids:
        msg = (
            f"the input example has raw id columns {ids}: it is stored with the model, "
            "so pass features only"
        )
        raise CashbackError(msg)
    if DIGEST_KEY in params:
        msg = f"{DIGEST_KEY!r} is reserved: it is logged as the training data's digest"
        raise CashbackError(msg)


def _signature(
    python_model: PythonModel,
    artifacts: Mapping[str, Path],
    input_example: pd.DataFrame,
) -> Any:
    """Infer the signature from the input example and the output of a loaded copy on it."""
    # MLflow's PythonModel API is untyped: call it through Any
    probe: Any = copy.deepcopy(python_model)
    make_context: Any = PythonModelContext
    context = make_context(
        artifacts={key: str(Path(path).resolve()) for key, path in artifacts.items()},
        model_config={},
    )
    probe.load_context(context)
    if "context" in inspect.signature(probe.predict).parameters:
        output = probe.predict(context, input_example)
    else:
        output = probe.predict(input_example)
    return infer_signature(input_example, output)


def _register(
    client: MlflowClient, name: str, model_uri: str, model_id: str | None, run_id: str
) -> ModelVersion:
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:  # created meanwhile by another process
            client.get_registered_model(name)
    return client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id)


def log_model_run(
    settings: Settings,
    short: str,
    *,
    python_model: PythonModel,
    artifacts: Mapping[str, Path],
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    evaluation: pl.DataFrame,
    training_data: pl.DataFrame,
    input_example: pd.DataFrame,
    plots: Mapping[str, Figure],
    tags: Mapping[str, str] | None = None,
    id_columns: Iterable[str] = ID_COLUMNS,
    pip_requirements: list[str] | None = None,
    run_name: str | None = None,
) -> ModelVersionInfo:
    """Log one training run and register its model as the new `challenger`.

    In one run of the experiment named after the registered model: params and metrics; the
    training data (raw ids dropped: see `drop_ids`) as an MLflow dataset input with context
    "training", and the evaluation set likewise with context "evaluation"; the training data's
    `input_digest` (see `data_digest`) as a param and a tag; each plot as `plots/<key>.png`;
    the evaluation set (ids dropped) as `evaluation/evaluation.parquet`, so later models can be
    evaluated on exactly this set; and the pyfunc model (artifact name `model`) with a
    signature inferred from the input example and the model's output on it. The model is
    registered as a new version of `<prefix><short>` with the alias `challenger`.

    Args:
        settings: the service settings.
        short: one of `MODEL_NAMES`.
        python_model: the pyfunc model; its `load_context` reads `artifacts`.
        artifacts: files the model needs, by name; they are copied into the model's
            `artifacts/` directory under their file names (which must differ).
        params: training parameters (values logged as text).
        metrics: training-time metrics (the gate's metrics among them, for `list_models`).
        evaluation: the evaluation set the model's evaluator scores (ids are dropped).
        training_data: the data the model learnt from (ids are dropped before it is logged or
            digested).
        input_example: a few rows of model input (features only, no raw ids).
        plots: matplotlib figures, by name (letters, digits, `_`, `.`, `-`).
        tags: set on the run and on the model version.
        id_columns: raw id columns besides every `*_id` column.
        pip_requirements: the model's requirements (default: `default_pip_requirements()`).
        run_name: the run's name (default: MLflow's generated one).

    Returns:
        The new model version.

    Raises:
        CashbackError: for an unknown short name, missing or clashing artifact files, raw ids
            in the input example, a reserved param name or a bad plot name.
    """
    name = registered_name(settings, short)
    _check_inputs(artifacts, plots, input_example, params, id_columns)
    id_columns = tuple(id_columns)
    training = drop_ids(training_data, id_columns)
    evaluation_set = drop_ids(evaluation, id_columns)
    digest = data_digest(training)
    signature = _signature(python_model, artifacts, input_example)
    client = _client(settings)
    experiment_id = _experiment_id(client, settings, name)
    run_tags = {KIND_TAG: "train", "cashback.model": name, DIGEST_KEY: digest, **(tags or {})}
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run,
        tempfile.TemporaryDirectory(prefix="cashback-run-") as tmp,
    ):
        run_id = run.info.run_id
        mlflow.log_params({**{k: str(v) for k, v in params.items()}, DIGEST_KEY: digest})
        mlflow.log_metrics(dict(metrics))
        mlflow.log_input(
            from_polars(training, name=f"{name}-training", digest=digest[:32]),
            context="training",
        )
        mlflow.log_input(
            from_polars(
                evaluation_set,
                name=f"{name}-evaluation",
                digest=data_digest(evaluation_set)[:32],
            ),
            context="evaluation",
        )
        parquet = Path(tmp) / Path(EVALUATION_ARTIFACT).name
        evaluation_set.write_parquet(parquet)
        mlflow.log_artifact(str(parquet), artifact_path=str(Path(EVALUATION_ARTIFACT).parent))
        for key, figure in plots.items():
            mlflow.log_figure(figure, f"plots/{key.removesuffix('.png')}.png")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            logged = log_model(
                name=MODEL_ARTIFACT,
                python_model=python_model,
                artifacts={key: str(Path(path).resolve()) for key, path in artifacts.items()},
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements or default_pip_requirements(),
            )
        created = _register(client, name, logged.model_uri, logged.model_id, run_id)
    version = str(created.version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, DIGEST_KEY, digest)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return ModelVersionInfo(name, int(version), run_id, f"models:/{name}/{version}")


# --------------------------------------------------------------------------- reading versions


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """Map alias -> version of a registered model (empty when it is not registered)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    return {str(alias): str(version) for alias, version in model.aliases.items()}


def _no_champion(short: str) -> CashbackError:
    return CashbackError(
        f"no champion for {short}: run `cashback train {short}` "
        f"then `cashback models promote {short}`"
    )


def _resolve(client: MlflowClient, name: str, short: str, alias_or_version: str | int) -> str:
    """The version number an alias or version names, checked to exist."""
    text = str(alias_or_version)
    if text.isdigit():
        try:
            client.get_model_version(name, text)
        except MlflowException:
            msg = f"{name} has no version {text}"
            raise CashbackError(msg) from None
        return text
    version = _aliases(client, name).get(text)
    if version is None:
        if text == CHAMPION:
            raise _no_champion(short)
        msg = f"{name} has no version with the alias {text!r}"
        raise CashbackError(msg)
    return version


def load_version(settings: Settings, short: str, alias_or_version: str | int) -> PyFuncModel:
    """Load one version of a model as pyfunc.

    Args:
        settings: the service settings.
        short: one of `MODEL_NAMES`.
        alias_or_version: a version number, or an alias (`champion`, `challenger`).

    Returns:
        The pyfunc model.

    Raises:
        CashbackError: when no such version or alias exists.
    """
    name = registered_name(settings, short)
    version = _resolve(_client(settings), name, short, alias_or_version)
    return load_model(f"models:/{name}/{version}")


def load_champion(settings: Settings, short: str) -> PyFuncModel:
    """Load the champion (`models:/<name>@champion`) as pyfunc.

    Raises:
        CashbackError: when there is no champion yet, saying which commands make one.
    """
    return load_version(settings, short, CHAMPION)


def champion_version(settings: Settings, short: str) -> int | None:
    """The champion's version number, or None when there is none."""
    version = _aliases(_client(settings), registered_name(settings, short)).get(CHAMPION)
    return int(version) if version is not None else None


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


def champion_artifacts(settings: Settings, short: str) -> Path:
    """The champion's pyfunc `artifacts/` directory, for loading native model files directly.

    The files passed as `artifacts` to `log_model_run` are there under their file names. With
    a local artifact store the directory is the stored one (read it, do not write it);
    otherwise the model is downloaded once per version to
    `<data_dir>/mlflow/downloads/<name>/<version>`.

    Raises:
        CashbackError: when there is no champion yet.
    """
    return version_artifacts(settings, short, CHAMPION)


def version_artifacts(settings: Settings, short: str, alias_or_version: str | int) -> Path:
    """One version's pyfunc `artifacts/` directory (see `champion_artifacts`).

    Args:
        settings: the service settings.
        short: one of `MODEL_NAMES`.
        alias_or_version: a version number, or an alias (`champion`, `challenger`).

    Raises:
        CashbackError: when no such version or alias exists.
    """
    name = registered_name(settings, short)
    client = _client(settings)
    version = _resolve(client, name, short, alias_or_version)
    stored = _local_path(client.get_model_version_download_uri(name, version))
    if stored is not None and stored.is_dir():
        return stored / "artifacts"
    return _download_model(settings, name, version) / "artifacts"


def _download_model(settings: Settings, name: str, version: str) -> Path:
    """A local copy of a model version's directory, downloaded once (atomically)."""
    model_dir = settings.data_dir / "mlflow" / "downloads" / name / version
    if model_dir.is_dir():
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".download-") as tmp:
        fetched = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(Path(tmp) / "model")
        )
        try:
            Path(fetched).rename(model_dir)  # never a half-downloaded directory
        except OSError:
            if not model_dir.is_dir():  # not just another process that was quicker
                raise
    return model_dir


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ModelRow:
    """One registered model version.

    Attributes:
        name: the registered model name.
        short: its short name.
        version: the version number.
        aliases: its aliases (`champion`, `challenger`).
        created: when it was registered (UTC).
        run_id: the training run.
        primary_metric: the gate's primary metric (None when the model has no evaluator).
        primary_value: its value in the training run's metrics.
        tags: the version's tags (promotion decision, reason, ...).
    """

    name: str
    short: str
    version: int
    aliases: tuple[str, ...]
    created: datetime
    run_id: str | None
    primary_metric: str | None
    primary_value: float | None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (created as ISO 8601)."""
        row = asdict(self)
        row["created"] = self.created.isoformat()
        row["aliases"] = list(self.aliases)
        return row


def _primary_metric(short: str) -> str | None:
    try:
        return evaluator_for(short).gate.primary.name
    except CashbackError:
        return None


def list_models(settings: Settings) -> list[ModelRow]:
    """Every version of every registered cashback model, newest version first per model.

    Args:
        settings: the service settings.

    Returns:
        One row per model version, models in `MODEL_NAMES` order.
    """
    client = _client(settings)
    rows: list[ModelRow] = []
    for short in MODEL_NAMES:
        name = registered_name(settings, short)
        aliases = _aliases(client, name)
        if not aliases and not _exists(client, name):
            continue
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        metric = _primary_metric(short)
        for mv in client.search_model_versions(f"name = '{name}'"):
            value = None
            if metric is not None and mv.run_id:
                value = client.get_run(mv.run_id).data.metrics.get(metric)
            rows.append(
                ModelRow(
                    name=name,
                    short=short,
                    version=int(mv.version),
                    aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                    created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                    run_id=mv.run_id or None,
                    primary_metric=metric,
                    primary_value=value,
                    tags={str(k): str(v) for k, v in mv.tags.items()},
                )
            )
    order = {short: i for i, short in enumerate(MODEL_NAMES)}
    return sorted(rows, key=lambda r: (order[r.short], -r.version))


def _exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


# --------------------------------------------------------------------------- promotion


@dataclass(frozen=True)
class PromotionResult:
    """What `promote` decided.

    Attributes:
        name: the registered model name.
        challenger_version: the version judged.
        champion_version: the champion it was compared with (None: there was none).
        promoted: whether the challenger is now the champion.
        forced: whether promotion was forced.
        reason: the reason given.
        challenger_metrics: the challenger's metrics on the evaluation set.
        champion_metrics: the champion's on the same set (None: no champion, or it could not
            be scored on this set and promotion was forced).
        checks: the gate's checks, in words (empty without champion metrics).
        failed: the checks that failed, in words.
        run_id: the promotion run recording the decision.
    """

    name: str
    challenger_version: int
    champion_version: int | None
    promoted: bool
    forced: bool
    reason: str | None
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    checks: tuple[str, ...]
    failed: tuple[str, ...]
    run_id: str

    @property
    def decision(self) -> str:
        """`promoted`, `forced` or `refused`."""
        if not self.promoted:
            return "refused"
        return "forced" if self.forced else "promoted"


def _history(client: MlflowClient, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    raw = tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LIMIT:]))


def _record_run(
    client: MlflowClient,
    settings: Settings,
    name: str,
    kind: str,
    run_name: str,
    record: dict[str, Any],
) -> str:
    """A small run holding one lifecycle decision as `<kind>.json`; returns its id."""
    experiment_id = _experiment_id(client, settings, name)
    tags = {KIND_TAG: kind, "cashback.model": name}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    client.log_dict(run_id, record, f"{kind}.json")
    client.set_terminated(run_id)
    return run_id


def _evaluation_set(client: MlflowClient, run_id: str) -> pl.DataFrame:
    with tempfile.TemporaryDirectory(prefix="cashback-eval-") as tmp:
        try:
            path = client.download_artifacts(run_id, EVALUATION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            msg = f"run {run_id} has no {EVALUATION_ARTIFACT}: it was not logged by log_model_run"
            raise CashbackError(msg) from None
        return pl.read_parquet(path)


def _score(
    evaluator: Evaluator, name: str, version: str, evaluation: pl.DataFrame
) -> dict[str, float]:
    model = load_model(f"models:/{name}/{version}")
    metrics = {k: float(v) for k, v in evaluator.evaluate(model, evaluation).items()}
    missing = [s.name for s in evaluator.gate.metrics if s.name not in metrics]
    if missing:
        msg = f"the evaluator of {name} returned no {', '.join(missing)}"
        raise CashbackError(msg)
    return metrics


def promote(
    settings: Settings,
    short: str,
    *,
    evaluator: Evaluator | None = None,
    force: bool = False,
    reason: str | None = None,
) -> PromotionResult:
    """Make the challenger the champion when it is no worse on the same evaluation set.

    Both versions are scored by the evaluator on the challenger run's stored evaluation set.
    The gate passes when the challenger's primary metric is at most
    `settings.models.promotion_margin` worse than the champion's and no guardrail is more than
    `settings.models.guardrail_tolerance` worse (directions from the metric specs). Without a
    champion the challenger is promoted. On promotion the alias `champion` moves to the
    challenger, `challenger` is removed, and the previous champion is remembered for
    `rollback`. The decision (metrics of both, checks, reason, forced) is recorded as
    `promotion.*` tags on the challenger version and in a promotion run, promoted or not.

    Args:
        settings: the service settings.
        short: one of `MODEL_NAMES`.
        evaluator: scores the models (default: `evaluator_for(short)`).
        force: promote even when the gate fails (needs a reason).
        reason: why; required with `force`.

    Returns:
        The decision; when refused, `failed` says why and the champion is unchanged.

    Raises:
        CashbackError: without a challenger, when forcing without a reason, when the
            challenger is already the champion, or when the champion cannot be scored on the
            challenger's evaluation set (unless forced).
    """
    reason = reason.strip() if reason and reason.strip() else None
    if force and reason is None:
        msg = "a forced promotion needs a reason: add --reason TEXT"
        raise CashbackError(msg)
    name = registered_name(settings, short)
    client = _client(settings)
    aliases = _aliases(client, name)
    challenger = aliases.get(CHALLENGER)
    if challenger is None:
        msg = f"no challenger for {short}: run `cashback train {short}` first"
        raise CashbackError(msg)
    champion = aliases.get(CHAMPION)
    if champion == challenger:
        msg = f"{name} version {challenger} is already the champion"
        raise CashbackError(msg)
    evaluator = evaluator or evaluator_for(short)
    evaluation = _evaluation_set(client, str(client.get_model_version(name, challenger).run_id))
    challenger_metrics = _score(evaluator, name, challenger, evaluation)
    champion_metrics, note = _champion_metrics(evaluator, name, champion, evaluation, force)
    checks: tuple[Check, ...] = ()
    if champion_metrics is not None:
        checks = compare(
            evaluator.gate,
            challenger_metrics,
            champion_metrics,
            margin=settings.models.promotion_margin,
            tolerance=settings.models.guardrail_tolerance,
        )
    failed = tuple(c.text for c in checks if not c.passed)
    result = PromotionResult(
        name=name,
        challenger_version=int(challenger),
        champion_version=int(champion) if champion is not None else None,
        promoted=force or not failed,
        forced=force,
        reason=reason,
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
        checks=tuple(c.text for c in checks),
        failed=failed,
        run_id="",
    )
    result = replace(result, run_id=_record_promotion(client, settings, result, checks, note))
    if result.promoted:
        _move_champion(client, name, challenger, champion)
    return result


def _champion_metrics(
    evaluator: Evaluator,
    name: str,
    champion: str | None,
    evaluation: pl.DataFrame,
    force: bool,
) -> tuple[dict[str, float] | None, str | None]:
    """The champion's metrics (None without champion) and a note when it cannot be scored."""
    if champion is None:
        return None, None
    try:
        return _score(evaluator, name, champion, evaluation), None
    except MlflowException as error:
        note = f"champion v{champion} cannot be scored on this evaluation set: {error}"
        if not force:
            msg = f"{note}; promote with --force --reason TEXT"
            raise CashbackError(msg) from None
        return None, note


def _record_promotion(
    client: MlflowClient,
    settings: Settings,
    result: PromotionResult,
    checks: tuple[Check, ...],
    note: str | None,
) -> str:
    """Record a decision in a promotion run and as tags of the challenger; the run's id."""
    decided = datetime.now(UTC).isoformat(timespec="seconds")
    record: dict[str, Any] = {
        "model": result.name,
        "challenger_version": result.challenger_version,
        "champion_version": result.champion_version,
        "decision": result.decision,
        "forced": result.forced,
        "reason": result.reason,
        "note": note,
        "challenger_metrics": result.challenger_metrics,
        "champion_metrics": result.champion_metrics,
        "checks": [asdict(c) for c in checks],
        "failed": list(result.failed),
        "margin": settings.models.promotion_margin,
        "guardrail_tolerance": settings.models.guardrail_tolerance,
        "decided": decided,
    }
    version = str(result.challenger_version)
    run_id = _record_run(client, settings, result.name, "promotion", f"promote v{version}", record)
    tags = {
        "promotion.decision": result.decision,
        "promotion.forced": str(result.forced).lower(),
        "promotion.reason": result.reason,
        "promotion.challenger_metrics": json.dumps(result.challenger_metrics),
        "promotion.champion_metrics": json.dumps(result.champion_metrics),
        "promotion.champion_version": (
            str(result.champion_version) if result.champion_version is not None else None
        ),
        "promotion.failed": json.dumps(list(result.failed)) if result.failed else None,
        "promotion.note": note,
        "promotion.decided": decided,
        "promotion.run_id": run_id,
    }
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(result.name, version, key, value)
    return run_id


def _move_champion(client: MlflowClient, name: str, challenger: str, champion: str | None) -> None:
    """Champion alias to the challenger, challenger alias removed, history extended."""
    history = _history(client, name)
    if champion is not None:
        if not history or history[-1] != champion:
            history.append(champion)  # the alias was moved outside this module
        client.set_model_version_tag(name, challenger, "promotion.previous_champion", champion)
    _set_history(client, name, [*history, challenger])
    client.set_registered_model_alias(name, CHAMPION, challenger)
    client.delete_registered_model_alias(name, CHALLENGER)


@dataclass(frozen=True)
class RollbackResult:
    """What `rollback` did.

    Attributes:
        name: the registered model name.
        from_version: the champion before.
        to_version: the champion now.
        run_id: the rollback run recording it.
    """

    name: str
    from_version: int
    to_version: int
    run_id: str


def rollback(settings: Settings, short: str) -> RollbackResult:
    """Move `champion` back to the previous champion.

    The champion history (oldest first) is kept in the registered-model tag
    `cashback.champion_history`: each rollback drops the current champion from it, so two
    rollbacks go two promotions back. The rolled-back version keeps its tags and gets
    `rollback.*` tags; a rollback run records the move as `rollback.json`.

    Args:
        settings: the service settings.
        short: one of `MODEL_NAMES`.

    Returns:
        The versions before and after.

    Raises:
        CashbackError: without a champion, or without an earlier champion to go back to.
    """
    name = registered_name(settings, short)
    client = _client(settings)
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise _no_champion(short)
    history = _history(client, name)
    if not history or history[-1] != current:
        history.append(current)  # the alias was moved outside this module
    history.pop()
    while history and not _version_exists(client, name, history[-1]):
        history.pop()  # deleted versions cannot be champions again
    if not history:
        msg = f"{name} has no earlier champion than version {current} to roll back to"
        raise CashbackError(msg)
    target = history[-1]
    decided = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "model": name,
        "from_version": int(current),
        "to_version": int(target),
        "decided": decided,
    }
    run_id = _record_run(client, settings, name, "rollback", f"rollback v{current}", record)
    client.set_registered_model_alias(name, CHAMPION, target)
    _set_history(client, name, history)
    client.set_model_version_tag(name, current, "rollback.decided", decided)
    client.set_model_version_tag(name, current, "rollback.to_version", target)
    client.set_model_version_tag(name, current, "rollback.run_id", run_id)
    return RollbackResult(name, int(current), int(target), run_id)


def _version_exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True
