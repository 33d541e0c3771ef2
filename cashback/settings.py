"""One settings object for the whole service, read from `CASHBACK_*` env vars and `.env`."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PEPPER_FILE_NAME = ".ip_pepper"
CONSOLE_SECRET_FILE_NAME = ".console_secret"  # noqa: S105 (a file name)
MIN_SECRET_CHARS = 16


class SimulationSettings(BaseModel):
    """Defaults of the simulated world (`cashback data simulate`)."""

    customers: int = Field(default=20_000, ge=10, description="customers in the demo world")
    days: int = Field(default=365, ge=14, le=3 * 365, description="days simulated")
    seed: int = Field(default=7, ge=0)
    start: str = Field(default="2025-01-01", description="first simulated day (UTC)")
    fraud_share: float = Field(default=0.02, ge=0.0, lt=0.5, description="share of claims")
    audit_share: float = Field(default=0.01, ge=0.0, le=1.0, description="random audit sample")
    exploration: float = Field(default=0.2, ge=0.0, le=1.0, description="share of explored rates")
    rate_grid: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
    holdout_share: float = Field(default=0.05, ge=0.0, lt=1.0, description="global holdout")
    workers: int = Field(default=2, ge=1, le=64, description="processes simulating chunks")
    chunk_customers: int = Field(
        default=50_000,
        ge=1_000,
        description="customers generated per chunk; part of the world's definition (same seed "
        "and chunk size give the same bytes)",
    )


class FeatureSettings(BaseModel):
    """How customer features are computed (`features/`)."""

    model_config = ConfigDict(frozen=True)

    windows_days: tuple[int, ...] = Field(
        default=(7, 30, 90, 365), description="look-back windows of behaviour features"
    )
    share_window_days: int = Field(default=90, ge=1, description="window of mix shares")
    categories: tuple[str, ...] = Field(
        default=(
            "groceries",
            "fashion",
            "electronics",
            "home",
            "beauty",
            "travel",
            "entertainment",
            "sports",
        ),
        description="the program's main categories (each gets a spend-share feature)",
    )
    new_customer_days: int = Field(default=30, ge=1, description="lifecycle: new below this tenure")
    inactive_days: int = Field(default=180, ge=1, description="lifecycle: inactive after this")
    at_risk_gap_multiple: float = Field(
        default=2.5, gt=1.0, description="at risk: silent for this many typical gaps"
    )
    at_risk_min_days: int = Field(default=45, ge=1, description="at risk: and at least this long")
    rfm_sample_customers: int = Field(
        default=10_000,
        ge=100,
        description="customers (a fixed hash sample) whose values set RFM quintiles at a close",
    )


class FeatureStoreSettings(BaseModel):
    """Where the Feast repo keeps its registry, batch tables and online store."""

    project: str = Field(default="cashback", pattern=r"^[a-z][a-z0-9_]*$")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = Field(
        default="localhost:6379", description="host:port[,db=N][,password=...] for redis"
    )
    subdirectory: str = Field(
        default="features", description="under data_dir: registry, batch tables, sqlite store"
    )
    max_staleness_days: int = Field(
        default=2, ge=1, description="online values older than this many closes are stale"
    )


class ModelSettings(BaseModel):
    """The model lifecycle: MLflow tracking and registry, and the promotion gate."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default: a sqlite database <data_dir>/mlflow/mlflow.db "
        "with artifacts beside it",
    )
    name_prefix: str = Field(
        default="cashback-", description="registered model names are <prefix><short name>"
    )
    promotion_margin: float = Field(
        default=0.005,
        ge=0.0,
        description="promote when the challenger's primary metric is at most this much worse "
        "than the champion's, on the same evaluation set",
    )
    guardrail_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        description="a guardrail metric counts as worse only beyond this difference",
    )


class FraudSettings(BaseModel):
    """Claim risk model, decisions and rules (`cashback train fraud`, `cashback fraud ...`)."""

    maturity_days: int = Field(
        default=90,
        ge=1,
        description="claims younger than this at the cut-off are out of training and metrics "
        "(at least the longest label delay)",
    )
    reviews_per_day: int = Field(
        default=100, ge=0, description="the risk team's review capacity, claims per day"
    )
    review_cost: float = Field(
        default=0.5,
        ge=0.0,
        description="cost of one manual review (about a minute of an analyst's time), in "
        "the program's currency",
    )
    block_precision: float = Field(
        default=0.95, gt=0.0, le=1.0, description="block only where precision reaches this"
    )
    validation_share: float = Field(default=0.15, gt=0.0, lt=0.5, description="by time")
    calibration_share: float = Field(default=0.15, gt=0.0, lt=0.5, description="by time")
    test_share: float = Field(default=0.2, gt=0.0, lt=0.5, description="latest, by time")
    num_leaves: int = Field(default=31, ge=2)
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    max_rounds: int = Field(default=600, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    anomaly_trees: int = Field(default=40, ge=10, description="IsolationForest trees")
    reason_count: int = Field(default=3, ge=1, le=10, description="reasons per flagged claim")
    rules_file: Path | None = Field(
        default=Path("config/fraud_rules.yaml"),
        description="YAML rules evaluated with the model (relative to the working directory; "
        "empty: no rules)",
    )
    seed: int = Field(default=7, ge=0)


class CustomerModelSettings(BaseModel):
    """Churn and value models (`cashback train churn`)."""

    churn_horizon_days: int = Field(
        default=90, ge=7, description="churn = no purchase in the next this many days"
    )
    value_horizon_days: int = Field(
        default=180, ge=7, description="customer value = spend over the next this many days"
    )
    inactive_limit_days: int = Field(
        default=365,
        ge=30,
        description="customers silent for longer are outside the scored population",
    )
    train_snapshots: int = Field(default=4, ge=1, description="monthly training snapshots")
    snapshot_step_days: int = Field(default=30, ge=1, description="days between snapshots")
    min_history_days: int = Field(
        default=60, ge=1, description="history needed before the first snapshot"
    )
    min_positives: int = Field(
        default=30, ge=1, description="fewest churners (and stayers) a snapshot may hold"
    )
    # shallow trees with large leaves: churn labels are noisy and the calibration snapshot's
    # base rate differs from the validation snapshot's (seasons); deeper trees overfit the
    # training snapshots on small programs (Online Retail: 3k customers a snapshot)
    num_leaves: int = Field(default=4, ge=2)
    min_data_in_leaf: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.03, gt=0.0, le=1.0)
    max_rounds: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    seed: int = Field(default=7, ge=0)


class SegmentSettings(BaseModel):
    """Behaviour segments (`cashback train segments`)."""

    k_min: int = Field(default=3, ge=2, le=30, description="fewest clusters tried")
    k_max: int = Field(default=8, ge=2, le=30, description="most clusters tried")
    min_stability: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="k is chosen by silhouette among the k whose two-halves stability (ARI) "
        "reaches this (the most stable k when none does)",
    )
    n_init: int = Field(default=10, ge=1, description="k-means restarts per fit")
    silhouette_sample: int = Field(
        default=4_000, ge=100, description="customers the silhouette is computed on"
    )
    fit_customers: int = Field(
        default=200_000,
        ge=1_000,
        description="at most this many active customers (a seeded sample) fit the clusters; "
        "every customer is assigned",
    )
    evaluation_customers: int = Field(
        default=5_000, ge=100, description="active customers in the logged evaluation set"
    )
    min_customers_per_cluster: int = Field(
        default=10, ge=1, description="refuse to cluster fewer active customers than this x k_max"
    )
    churn_days: int = Field(
        default=90, ge=1, description="profiles: churn = no purchase in this many days after"
    )
    threads: int = Field(default=1, ge=1, le=64, description="threads of the k-means fits")
    seed: int = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _k_range(self) -> SegmentSettings:
        if self.k_min > self.k_max:
            msg = f"segments.k_min ({self.k_min}) is above segments.k_max ({self.k_max})"
            raise ValueError(msg)
        return self


class ExperimentSettings(BaseModel):
    """Experiment assignment (`cashback experiments ...`, the serving API).

    Changing `buckets` or `holdout_salt` reshuffles every customer (assignments already in
    the assignments table stay: first assignment only).
    """

    holdout_share: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="global holdout: share of customers who get the default rate card and no "
        "experiment",
    )
    holdout_salt: str = Field(
        default="global-holdout", min_length=1, description="salt of the global holdout hash"
    )
    buckets: int = Field(
        default=10_000, ge=100, le=1_000_000, description="hash buckets of a layer or holdout"
    )
    alpha: float = Field(
        default=0.05, gt=0.0, lt=0.5, description="1 - the level of the analysis' intervals"
    )
    correction: Literal["holm", "bh"] = Field(
        default="holm",
        description="multiple-testing correction across metrics x variants: holm (family-wise "
        "error) or bh (Benjamini-Hochberg, false discovery rate)",
    )
    cap_quantile: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="cap mean metrics at this pooled quantile (e.g. 0.99); None: no capping",
    )
    srm_threshold: float = Field(
        default=0.001, gt=0.0, lt=1.0, description="flag a sample ratio mismatch below this p"
    )
    sequential_tuning_n: float = Field(
        default=5_000.0,
        gt=0.0,
        description="customers (all variants) at which the always-valid intervals are tightest",
    )
    primary_metric: str = Field(
        default="net_incremental_margin",
        description="primary metric of an experiment without a stored definition (simulated, "
        "imported)",
    )
    guardrail_metrics: tuple[str, ...] = Field(
        default=("fraud_loss",),
        description="guardrail metrics of an experiment without a stored definition",
    )
    outcome_covariates: tuple[str, ...] = Field(
        default=("history",),
        description="imported outcomes that are pre-experiment values (Hillstrom's history): "
        "CUPED covariates, not analysed as outcomes",
    )
    power: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="power of the planning calculator"
    )
    results_subdirectory: str = Field(
        default="experiments/results",
        description="under data_dir: analysis results, one directory per experiment key",
    )


class RateSettings(BaseModel):
    """Personalized rates (`cashback train rates`): learners, policy and budget."""

    grid: tuple[float, ...] = Field(
        default=(0.0, 0.01, 0.02, 0.03, 0.05, 0.08), description="rates the policy may give"
    )
    min_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_rate: float = Field(default=0.08, gt=0.0, lt=1.0)
    segment_caps: dict[str, float] = Field(
        default_factory=dict, description="highest rate per segment name, e.g. {'inactive': 0.02}"
    )
    budget_share: float | None = Field(
        default=None,
        gt=0.0,
        description="budget per exposure window as a share of what the default rate card "
        "costs for the same customers (None: no budget)",
    )
    frontier_budgets: tuple[PositiveFloat, ...] = Field(
        default=(0.5, 0.75, 1.0, 1.5, 2.0),
        min_length=1,
        description="budgets `cashback rates simulate-budget` solves by default, as multiples "
        "of the default card's cost",
    )
    excluded_attributes: tuple[str, ...] = Field(
        default=("region", "age_band"),
        description="customer attributes the policy never uses; the rate card reports the "
        "average rate by each of them",
    )
    test_share: float = Field(
        default=0.25, gt=0.0, lt=0.9, description="latest share of exposures held out"
    )
    max_training_exposures: int = Field(
        default=400_000, ge=1_000, description="a seeded sample of the training exposures"
    )
    n_estimators: int = Field(default=300, ge=10)
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=200, ge=1)
    effect_num_leaves: int = Field(
        default=7, ge=2, description="leaves per tree of the response's rate-effect stage"
    )
    effect_min_child_samples: int = Field(default=500, ge=1)
    effect_n_estimators: int = Field(default=600, ge=10)
    resamples: int = Field(
        default=3,
        ge=1,
        description="propensity-balanced resamples the rate-effect stage averages",
    )
    bootstrap_replicates: int = Field(default=200, ge=10)
    seed: int = Field(default=7, ge=0)


class KpiSettings(BaseModel):
    """Program KPIs (`cashback kpis compute`, `GET /v1/kpis`)."""

    period: Literal["week", "month"] = Field(default="month", description="reporting period")
    bootstrap_replicates: int = Field(
        default=200, ge=10, description="customer bootstrap replicates of the return on cashback"
    )
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = Field(default=0, ge=0)


class ServingSettings(BaseModel):
    """The API (`cashback serve`): server, app database, request limits, claim audits."""

    host: str = Field(default="127.0.0.1", description="address `cashback serve` binds")
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    metrics_directory: Path | None = Field(
        default=None,
        description="where the workers of one server keep their Prometheus counts, so that "
        "/metrics sums them; `cashback serve` sets it (<directory>/metrics) for several workers",
    )
    directory: Path | None = Field(
        default=None,
        description="where the API keeps its SQLite app database and claim log (default: "
        "<data_dir>/serving)",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="larger request bodies are refused (413)"
    )
    audit_share: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="share of allowed claims that open a review case anyway (marked audit)",
    )
    migrate_on_startup: bool = Field(
        default=True, description="apply the app database migrations when the API starts"
    )
    db_pool_size: int = Field(default=10, ge=1, le=200, description="app database connections")
    db_busy_timeout_s: float = Field(
        default=30.0, gt=0.0, description="SQLite: how long a writer waits for another's lock"
    )
    retry_load_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="/readyz tries again to load a missing model or store at most this often",
    )
    champion_check_seconds: float = Field(
        default=60.0,
        ge=0.0,
        description="each worker asks the registry this often for the fraud and rates "
        "champions and swaps in a newly promoted one without a restart (0: never)",
    )
    reasons_batch: int = Field(
        default=64, ge=1, description="flagged claims explained together off the request path"
    )
    reasons_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Linux nice value of the thread that explains flagged claims: under load "
        "the requests get the core first and the reasons wait (0: same priority)",
    )
    exploration_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="share of personalized offers whose rate is drawn uniformly from the "
        "allowed rates (logged with its propensity, so that the policy can be re-learnt)",
    )
    policy_offer_id: str = Field(
        default="flat-immediate",
        min_length=1,
        description="the catalog offer that carries a personalized or experimental rate",
    )
    default_offer_id: str = Field(
        default="default-card",
        min_length=1,
        description="the catalog offer of the default rate card (holdout, fallbacks)",
    )
    experiments_refresh_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description="each worker re-reads the running experiments at most this often",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0.0,
        description="a valid API key is remembered this long by each worker (a revoked key "
        "stops working at most this late; 0: look every key up)",
    )
    review_lock_minutes: float = Field(
        default=15.0,
        ge=0.0,
        description="an analyst who takes a review case holds it this long (others get 409)",
    )
    console_secret: SecretStr | None = Field(
        default=None,
        description="key signing the web console's session cookies; required in prod. In dev "
        "a random one is kept in <data_dir>/.console_secret.",
    )
    console_session_hours: float = Field(
        default=8.0, gt=0.0, le=24 * 30, description="a console sign-in lasts this long"
    )
    console_secure_cookie: bool | None = Field(
        default=None,
        description="send the console's cookies over HTTPS only (default: in prod only)",
    )


class Settings(BaseSettings):
    """Service configuration.

    Every field can be set with an env var `CASHBACK_<FIELD>` (nested with `__`, e.g.
    `CASHBACK_SIMULATION__FRAUD_SHARE=0.03`) or in a `.env` file in the working directory.
    """

    model_config = SettingsConfigDict(
        env_prefix="CASHBACK_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: Literal["dev", "prod"] = "dev"
    data_dir: Path = Path("data")
    ip_pepper: SecretStr | None = Field(
        default=None,
        description="HMAC key for ip_hash; required in prod. In dev a random one is kept in "
        "<data_dir>/.ip_pepper.",
    )
    default_margin_rate: float = Field(default=0.30, gt=0.0, lt=1.0)
    default_rate: float = Field(default=0.01, ge=0.0, lt=1.0, description="default rate card")
    exposure_days: int = Field(default=7, ge=1, le=90)
    currency: str = "EUR"
    simulation: SimulationSettings = SimulationSettings()
    features: FeatureSettings = FeatureSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    models: ModelSettings = ModelSettings()
    fraud: FraudSettings = FraudSettings()
    customers: CustomerModelSettings = CustomerModelSettings()
    segments: SegmentSettings = SegmentSettings()
    rates: RateSettings = RateSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    kpis: KpiSettings = KpiSettings()
    serving: ServingSettings = ServingSettings()
    database_url: SecretStr | None = Field(
        default=None,
        description="app database URL, e.g. postgresql+psycopg://user:password@host/db "
        "(default: SQLite in WAL mode under the serving directory)",
    )

    @property
    def feature_dir(self) -> Path:
        """Where the feature store keeps its files."""
        return self.data_dir / self.feature_store.subdirectory

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI: the setting, or a sqlite database under data_dir."""
        if self.models.tracking_uri:
            return self.models.tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def serving_dir(self) -> Path:
        """Where the API keeps its SQLite app database and claim log."""
        return self.serving.directory or self.data_dir / "serving"

    @property
    def app_database_url(self) -> str:
        """The app database URL: the setting, or a SQLite file under `serving_dir`."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.serving_dir / 'app.db').resolve()}"

    @property
    def mlflow_artifact_dir(self) -> Path:
        """Where runs started against the default tracking database keep their artifacts."""
        return (self.data_dir / "mlflow" / "artifacts").resolve()

    @model_validator(mode="after")
    def _refuse_missing_secrets_in_prod(self) -> Settings:
        if self.environment == "prod" and (
            self.ip_pepper is None or len(self.ip_pepper.get_secret_value()) < 16
        ):
            msg = "CASHBACK_IP_PEPPER must be set (at least 16 characters) when environment=prod"
            raise ValueError(msg)
        console_secret = self.serving.console_secret
        if self.environment == "prod" and (
            console_secret is None or len(console_secret.get_secret_value()) < MIN_SECRET_CHARS
        ):
            msg = (
                "CASHBACK_SERVING__CONSOLE_SECRET must be set (at least 16 characters) when "
                "environment=prod"
            )
            raise ValueError(msg)
        return self

    def ip_pepper_bytes(self) -> bytes:
        """The HMAC key for IP hashes.

        Returns:
            The configured pepper, or in dev the one kept in `<data_dir>/.ip_pepper`
            (created with a random value the first time, atomically).
        """
        if self.ip_pepper is not None:
            return self.ip_pepper.get_secret_value().encode()
        return _kept_secret(self.data_dir / PEPPER_FILE_NAME)

    def console_secret_bytes(self) -> bytes:
        """The key signing the web console's session cookies.

        Returns:
            The configured `serving.console_secret`, or in dev the one kept in
            `<data_dir>/.console_secret` (created with a random value the first time).
        """
        if self.serving.console_secret is not None:
            return self.serving.console_secret.get_secret_value().encode()
        return _kept_secret(self.data_dir / CONSOLE_SECRET_FILE_NAME)

    @property
    def console_cookie_secure(self) -> bool:
        """Whether the console's cookies are HTTPS-only (the setting, else prod only)."""
        configured = self.serving.console_secure_cookie
        return self.environment == "prod" if configured is None else configured


def _kept_secret(path: Path) -> bytes:
    """A dev secret kept in a file: created with a random value the first time, atomically."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
