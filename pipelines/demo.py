"""Job: the demo end to end (`cashback demo`, what `make run` calls).

Builds whatever is absent, in order, on the embedded defaults: the simulated world in the
data directory, its feature tables, the Feast registry and the SQLite online store, the
champion fraud model in the local MLflow registry, the customer models (churn, value,
segments: each trained and promoted when the data allow, else skipped with the reason) and
their scores in the online store, and the rate policy (with its rate card) that offers are
priced with, and says where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl

from cashback.settings import Settings
from cashback.tables import present_tables, scan_parquet_path, table_path
from pipelines import simulate


def run(settings: Settings) -> Iterator[str]:
    """Build the demo's artefacts if absent.

    Args:
        settings: the service settings (data directory, simulation defaults).

    Yields:
        Lines saying what was built or found, and where.
    """
    data = settings.data_dir
    if "transactions" in present_tables(data):
        yield f"demo world found in {data}/ (remove it to rebuild: make clean-data)"
    else:
        config = simulate.world_config(settings)
        yield (
            f"simulating the demo world: {config.customers:,} customers over {config.days} "
            f"days from {config.start} (seed {config.seed}, preset {config.preset})"
        )
        simulate.run(config, data, settings)
        yield f"demo world written to {data}/"
    for name in present_tables(data):
        rows = scan_parquet_path(table_path(data, name)).select(pl.len()).collect().item()
        yield f"  {name:<14} {rows:>12,} rows   {table_path(data, name)}"
    yield f"  ground truth: {data / 'truth'}/ (segments, true fraud, explored exposures)"
    yield from _features(settings)
    yield from _fraud_model(settings)
    yield from _customer_models(settings)
    yield from _rates_model(settings)
    yield f"check it: cashback data validate {data}"


def _features(settings: Settings) -> Iterator[str]:
    """Build the feature tables, register them with Feast and fill the online store."""
    from features.store import apply, batch_table_path, materialize_tables  # noqa: PLC0415
    from pipelines import build_features  # noqa: PLC0415

    if batch_table_path(settings, "customer_behaviour").exists():
        yield f"feature tables found in {settings.feature_dir}/"
    else:
        built = build_features.run(settings)
        yield f"feature tables as of {built.close:%Y-%m-%d} written to {settings.feature_dir}/"
    apply(settings)
    reports = materialize_tables(settings)
    written = sum(r.written for r in reports)
    yield (
        f"online store ({settings.feature_store.online_store}) holds {len(reports)} views; "
        f"{written:,} entities written now"
    )


def _fraud_model(settings: Settings) -> Iterator[str]:
    """Train the fraud model and make it the champion, unless there is one."""
    from models.registry import champion_version, promote  # noqa: PLC0415
    from pipelines import train_fraud  # noqa: PLC0415

    version = champion_version(settings, "fraud")
    if version is not None:
        yield f"fraud model found: cashback-fraud v{version} is the champion"
        return
    yield "training the fraud model"
    trained = train_fraud.run(settings)
    result = promote(settings, "fraud")
    yield (
        f"cashback-fraud v{trained.version} is the champion (PR-AUC on the audit sample "
        f"{trained.metrics['audit_pr_auc']:.3f}, decision: {result.decision}); "
        f"MLflow tracking: {settings.mlflow_tracking_uri}"
    )


def _customer_models(settings: Settings) -> Iterator[str]:
    """Train and promote churn, value and segments if absent; score customers online."""
    from cashback.errors import CashbackError  # noqa: PLC0415
    from features.store import materialize_tables  # noqa: PLC0415
    from models.registry import champion_version, promote  # noqa: PLC0415
    from pipelines import score_customers, train_churn, train_segments, train_value  # noqa: PLC0415

    jobs: dict[str, Callable[[Settings], object]] = {
        "churn": train_churn.run,
        "clv": train_value.run,
        "segments": train_segments.run,
    }
    for short, train in jobs.items():
        version = champion_version(settings, short)
        if version is not None:
            yield f"{short} model found: cashback-{short} v{version} is the champion"
            continue
        try:
            train(settings)
        except CashbackError as error:
            yield f"{short} model skipped: {error}"
            continue
        result = promote(settings, short)
        yield f"cashback-{short} v{result.challenger_version} trained ({result.decision})"
    scored = score_customers.run(settings)
    reports = materialize_tables(settings)
    written = sum(r.written for r in reports if r.feature_view == "customer_scores")
    yield (
        f"customer scores as of {scored.close:%Y-%m-%d} in the online store "
        f"({written:,} written now)"
    )


def _rates_model(settings: Settings) -> Iterator[str]:
    """Train the rate policy and make it the champion, unless there is one."""
    from cashback.errors import CashbackError  # noqa: PLC0415
    from models.registry import champion_version, promote  # noqa: PLC0415
    from pipelines import train_rates  # noqa: PLC0415

    version = champion_version(settings, "rates")
    if version is not None:
        yield f"rates policy found: cashback-rates v{version} is the champion"
        return
    yield "training the rate policy (response to the rate, budget, rate card)"
    try:
        trained = train_rates.run(settings, register=True)
    except CashbackError as error:
        yield f"rates policy skipped (offers fall back to the default rate card): {error}"
        return
    result = promote(settings, "rates")
    yield (
        f"cashback-rates v{trained.version} is the champion (DR value per exposure "
        f"{trained.metrics['dr_value']:.2f}, decision: {result.decision}); rate card in "
        f"{trained.paths['rate_card']}"
    )
