"""The baseline of the API load benchmark: the same libraries glued together the obvious way.

A small FastAPI app with two routes. `POST /v1/claims/score` answers what ours answers
as far as the plain libraries allow (the fraud probability in percent and a decision by the
champion's thresholds; no rules, no review cases, no auth):

1. idempotency: a claim_id already stored gets its stored answer (a SQLAlchemy select);
2. fresh features (claims in the last hour by customer, device and IP, minutes since the
   customer's last claim, receipt seen before) counted from its own decisions table with
   SQLAlchemy;
3. `FeatureStore.get_online_features(...)` for the stored views of the fraud_v1 service (its
   on-demand view fails in the plain SDK with a NameError in the registered function, so
   the three request-time features are computed in the handler);
4. a pandas frame of the model's input columns to `mlflow.pyfunc` `predict` of
   `models:/cashback-fraud@champion` (loaded once at start-up);
5. the decision written with a SQLAlchemy ORM session (SQLite in WAL mode, as ours).

And `POST /v1/offers/recommend`, the offer and rate of a customer (no holdout, experiments,
exploration, segment caps or auth):

1. the customer's latest exposure (a SQLAlchemy select): still valid at the context's `ts`,
   it is answered again;
2. `FeatureStore.get_online_features(...)` for the rates_v1 feature service;
3. a pandas frame of the rates model's inputs (the features, the flat immediate offer's
   columns `DEFAULT_OFFER` of `models/rates/dataset.py`, the customer's `fraud_share` from the
   rates run's file), numbers as float64, to `mlflow.pyfunc` `predict` of
   `models:/cashback-rates@champion` (loaded once at start-up), which gives the `rate`;
4. the exposure (numbered per customer, valid 7 days) inserted with a SQLAlchemy ORM
   session in one transaction.

The FeatureStore is built once at start-up too: building it per request (reading the
registry each time) would make a strawman, not a baseline. Started by uvicorn as
`tests.benchmarks.naive_api:app_from_environment` (factory) with the same `CASHBACK_*`
environment as `cashback serve`; `NAIVE_DB` is its SQLite file.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl
from fastapi import FastAPI, Request
from feast import FeatureStore
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cashback.privacy import hash_ip
from cashback.settings import Settings
from features.store import repo_config
from models.rates.dataset import DEFAULT_OFFER, OFFER_COLUMNS

MODEL_URI = "models:/cashback-fraud@champion"
RATES_URI = "models:/cashback-rates@champion"
SERVICE = "fraud_v1"
RATES_SERVICE = "rates_v1"
FRAUD_SHARES = Path("rates") / "fraud_shares.parquet"
ON_DEMAND_VIEW = "claim_on_demand"
FRESH_WINDOW = timedelta(hours=1)


def _wal(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Base(DeclarativeBase):
    """The naive service's tables."""


class Decision(Base):
    """One scored claim."""

    __tablename__ = "decisions"

    claim_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    device_id: Mapped[str | None] = mapped_column(String(128), index=True)
    ip_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    receipt_hash: Mapped[str | None] = mapped_column(String(128), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    risk_score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))


class Exposure(Base):
    """One offer shown to a customer, numbered per customer."""

    __tablename__ = "exposures"
    __table_args__ = (UniqueConstraint("customer_id", "sequence"),)

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    exposure_id: Mapped[str] = mapped_column(String(36))
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rate: Mapped[float] = mapped_column(Float)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)


class Claim(BaseModel):
    """The claim, as our API takes it."""

    claim_id: str
    customer_id: str
    txn_id: str
    amount: float
    cashback_amount: float
    payout_method: str
    device_id: str | None = None
    ip: str | None = None
    receipt_hash: str | None = None
    ts: AwareDatetime


class Answer(BaseModel):
    """The decision on a claim."""

    claim_id: str
    decision_id: str
    risk_score: float
    decision: str
    model_version: str
    fallback: bool = False


class OfferContext(BaseModel):
    """Where and when the offer is shown."""

    category: str | None = None
    channel: str | None = None
    ts: AwareDatetime | None = None


class OfferAsk(BaseModel):
    """The offer request, as our API takes it."""

    customer_id: str
    context: OfferContext = Field(default_factory=OfferContext)


class OfferAnswer(BaseModel):
    """The customer's offer."""

    decision_id: str
    exposure_id: str
    customer_id: str
    rate: float
    valid_from: datetime
    valid_until: datetime
    model_version: str


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class Naive:
    """What the naive service loads at start-up."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.mlflow_tracking_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.model = mlflow.pyfunc.load_model(MODEL_URI)
        schema = self.model.metadata.get_input_schema()
        self.columns: list[str] = schema.input_names()
        self.text = {c.name for c in schema.inputs if str(c.type) == "DataType.string"}
        local = Path(mlflow.artifacts.download_artifacts(MODEL_URI))
        self.thresholds = json.loads((local / "artifacts" / "model.json").read_text())["thresholds"]
        self.version = str(mlflow.MlflowClient().get_model_version_by_alias(
            "cashback-fraud", "champion").version)  # fmt: skip
        self.store = FeatureStore(config=repo_config(settings))
        # the service's on-demand view cannot run in the plain SDK (its registered function
        # refers to a name the SDK does not restore): its three request-time features are
        # computed here instead, and the stored views are read by reference
        service = self.store.get_feature_service(SERVICE)
        self.references = [
            f"{view.name}:{feature.name}"
            for view in service.feature_view_projections
            if view.name != ON_DEMAND_VIEW
            for feature in view.features
        ]
        self.pepper = settings.ip_pepper_bytes()
        self.rates = mlflow.pyfunc.load_model(RATES_URI)
        rates_schema = self.rates.metadata.get_input_schema()
        self.rates_columns: list[str] = rates_schema.input_names()
        self.rates_text = {c.name for c in rates_schema.inputs if str(c.type) == "DataType.string"}
        self.rates_version = str(mlflow.MlflowClient().get_model_version_by_alias(
            "cashback-rates", "champion").version)  # fmt: skip
        self.rates_service = self.store.get_feature_service(RATES_SERVICE)
        shares = pl.read_parquet(settings.data_dir / FRAUD_SHARES).drop_nulls()
        self.fraud_shares = dict(zip(shares["customer_id"], shares["fraud_share"], strict=True))
        self.exposure_days = settings.exposure_days
        self.engine = create_engine(f"sqlite:///{os.environ['NAIVE_DB']}")
        # the same journal as our app database (WAL, no fsync per commit): without it each
        # commit waits for the disk, and the comparison would be about fsync, not serving
        event.listen(self.engine, "connect", _wal)
        Base.metadata.create_all(self.engine)

    def fresh(self, session: Session, claim: Claim, ip_hash: str | None) -> dict[str, Any]:
        """Fresh claim features counted from the decisions stored so far."""
        ts, since = claim.ts, claim.ts - FRESH_WINDOW

        def count(column: Any, value: str | None) -> float:
            if value is None:
                return math.nan
            query = select(func.count()).where(column == value, Decision.ts > since)
            return float(session.scalar(query.where(Decision.ts <= ts)) or 0) + 1

        last = session.scalar(
            select(func.max(Decision.ts)).where(
                Decision.customer_id == claim.customer_id, Decision.ts <= ts
            )
        )
        seen = claim.receipt_hash is not None and session.scalar(
            select(Decision.claim_id).where(Decision.receipt_hash == claim.receipt_hash).limit(1)
        )
        if last is not None and last.tzinfo is None:  # SQLite gives naive datetimes back
            last = last.replace(tzinfo=UTC)
        minutes = math.nan if last is None else (ts - last).total_seconds() / 60
        return {
            "customer_claims_1h": count(Decision.customer_id, claim.customer_id),
            "device_claims_1h": count(Decision.device_id, claim.device_id),
            "ip_claims_1h": count(Decision.ip_hash, ip_hash),
            "minutes_since_last_claim": minutes,
            "receipt_seen_before": float(bool(seen)),
        }

    def score(self, claim: Claim) -> Answer:
        """Score and store a claim (or answer the stored decision)."""
        with Session(self.engine) as session:
            stored = session.get(Decision, claim.claim_id)
            if stored is not None:
                return self.answer(stored)
            ip_hash = None if claim.ip is None else hash_ip(claim.ip, self.pepper)
            fresh = self.fresh(session, claim, ip_hash)
            entity = {
                "customer_id": claim.customer_id,
                "device_id": claim.device_id or "",
                "ip_hash": ip_hash or "",
            }
            features = self.store.get_online_features(
                features=self.references, entity_rows=[entity]
            ).to_dict()
            basket, amount = features["avg_basket_90d"][0], claim.amount
            on_demand = {
                "amount_vs_avg_basket": amount / basket if basket else math.nan,
                "cashback_share": claim.cashback_amount / amount if amount else math.nan,
                "hour_of_day": claim.ts.astimezone(UTC).hour,
            }
            row = {**features, **fresh, **on_demand}
            values = {c: row[c][0] if isinstance(row[c], list) else row[c] for c in self.columns}
            frame = pd.DataFrame(
                {
                    c: [v if c in self.text else math.nan if v is None else float(v)]
                    for c, v in values.items()
                }
            )
            probability = float(self.model.predict(frame)["probability"].iloc[0])
            decision = "allow"
            block = self.thresholds["block_probability"]
            if block is not None and probability >= block:
                decision = "block"
            elif probability * claim.cashback_amount >= self.thresholds["review_expected_loss"]:
                decision = "review"
            stored = Decision(
                claim_id=claim.claim_id,
                decision_id=str(uuid.uuid4()),
                customer_id=claim.customer_id,
                device_id=claim.device_id,
                ip_hash=ip_hash,
                receipt_hash=claim.receipt_hash,
                ts=claim.ts,
                risk_score=probability * 100,
                decision=decision,
            )
            session.add(stored)
            session.commit()
            return self.answer(stored)

    def answer(self, stored: Decision) -> Answer:
        """The API's view of a stored decision."""
        return Answer(
            claim_id=stored.claim_id,
            decision_id=stored.decision_id,
            risk_score=stored.risk_score,
            decision=stored.decision,
            model_version=self.version,
        )

    def recommend(self, ask: OfferAsk) -> OfferAnswer:
        """The customer's valid exposure, else a new one priced by the rates pyfunc."""
        at = ask.context.ts or datetime.now(UTC)
        with Session(self.engine) as session:
            latest = session.scalars(
                select(Exposure)
                .where(Exposure.customer_id == ask.customer_id)
                .order_by(Exposure.sequence.desc())
                .limit(1)
            ).first()
            if latest is not None and at < _aware(latest.valid_until):
                return self.offer_answer(latest)
            features = self.store.get_online_features(
                features=self.rates_service, entity_rows=[{"customer_id": ask.customer_id}]
            ).to_dict()
            row: dict[str, Any] = {name: values[0] for name, values in features.items()}
            row |= {c: DEFAULT_OFFER.get(c, 0.0) for c in OFFER_COLUMNS}
            row["fraud_share"] = self.fraud_shares.get(ask.customer_id, 0.0)
            values = {c: row.get(c) for c in self.rates_columns}
            frame = pd.DataFrame(
                {
                    c: [v if c in self.rates_text else math.nan if v is None else float(v)]
                    for c, v in values.items()
                }
            )
            rate = float(self.rates.predict(frame)["rate"].iloc[0])
            stored = Exposure(
                decision_id=str(uuid.uuid4()),
                exposure_id=str(uuid.uuid4()),
                customer_id=ask.customer_id,
                sequence=1 if latest is None else latest.sequence + 1,
                ts=at,
                valid_until=at + timedelta(days=self.exposure_days),
                rate=rate,
                features=values,
                context=ask.context.model_dump(mode="json"),
            )
            session.add(stored)
            session.commit()
            return self.offer_answer(stored)

    def offer_answer(self, stored: Exposure) -> OfferAnswer:
        """The API's view of a stored exposure."""
        return OfferAnswer(
            decision_id=stored.decision_id,
            exposure_id=stored.exposure_id,
            customer_id=stored.customer_id,
            rate=stored.rate,
            valid_from=_aware(stored.ts),
            valid_until=_aware(stored.valid_until),
            model_version=self.rates_version,
        )


def create_naive_app(settings: Settings) -> FastAPI:
    """The naive service for these settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.naive = Naive(settings)
        yield
        app.state.naive.engine.dispose()

    app = FastAPI(title="naive baseline", lifespan=lifespan)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/claims/score")
    def score(claim: Claim, request: Request) -> Answer:
        naive: Naive = request.app.state.naive
        return naive.score(claim)

    @app.post("/v1/offers/recommend")
    def recommend(ask: OfferAsk, request: Request) -> OfferAnswer:
        naive: Naive = request.app.state.naive
        return naive.recommend(ask)

    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory: the settings of the environment."""
    return create_naive_app(Settings())
