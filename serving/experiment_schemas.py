"""Request and response bodies of the experiments routes (`/v1/experiments`).

A new experiment is sent as JSON with the fields of a YAML definition file
(`models.experiments.definition`, `config/experiments/rate_boost.example.yaml`) and is
validated by the definition's own model, so that /docs shows its schema and a bad field gets
a 422 naming it. Experiments are answered with the stored `ExperimentDefinition`.

The results are those of `cashback experiments analyze`: one `LiftResult` per metric and
variant has the columns of its `lifts.parquet` (`models.experiments.analysis.LIFT_COLUMNS`);
numbers that could not be estimated (NaN) are null, with the reason in `message`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, field_validator
from pydantic.json_schema import SkipJsonSchema

from cashback.vocab import ExperimentStatus
from models.experiments.analysis import Decision, ExperimentAnalysis, MetricKind, Role, Source
from models.experiments.definition import BucketRange, ExperimentDefinition
from models.experiments.multiple_testing import Method
from models.experiments.store import ExperimentRow

EXPERIMENT_EXAMPLE: dict[str, JsonValue] = {
    "key": "rate-boost-q3",
    "hypothesis": "A fixed 3% rate lifts the spend of regular and at-risk customers by more "
    "than the extra cashback it costs, without more fraud.",
    "layer": "rates",
    "variants": [
        {"name": "control", "weight": 0.5, "policy": "rate_card"},
        {"name": "boost", "weight": 0.5, "policy": "rate:0.03"},
    ],
    "targeting": {"segments": [], "lifecycle": ["regular", "at_risk"]},
    "unit": "customer",
    "start": "2025-07-01T00:00:00Z",
    "stop": "2025-08-01T00:00:00Z",
    "primary_metric": "net_incremental_margin",
    "guardrail_metrics": ["fraud_loss", "cashback_paid", "retention_30d"],
    "traffic": 1.0,
}


def _nan_to_none(value: object) -> object:
    """NaN (a number that could not be estimated) becomes null."""
    return None if isinstance(value, float) and math.isnan(value) else value


Number = Annotated[float | None, BeforeValidator(_nan_to_none)]


class ExperimentCreate(ExperimentDefinition):
    """A new experiment: the fields of a YAML definition file; it is created in draft.

    `status` and `layer_buckets` are set by the start and stop routes, never sent.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [EXPERIMENT_EXAMPLE]})

    status: SkipJsonSchema[ExperimentStatus] = ExperimentStatus.DRAFT
    layer_buckets: SkipJsonSchema[BucketRange | None] = None

    @field_validator("status", "layer_buckets", mode="before")
    @classmethod
    def _set_by_the_store(cls, _value: object) -> object:
        msg = "set by POST /v1/experiments/{key}/start and /stop, not in a definition"
        raise ValueError(msg)

    def definition(self) -> ExperimentDefinition:
        """The definition to store (a plain `ExperimentDefinition`, in draft)."""
        return ExperimentDefinition.model_validate(self.model_dump())


class VariantSummary(BaseModel):
    """A variant as the experiments table holds it."""

    name: str
    weight: float = Field(description="the designed share of the experiment's customers")
    policy: str = Field(description="rate_card, personalized, rate:R or offer:OFFER_ID")


class ExperimentSummary(BaseModel):
    """One experiment of the list."""

    key: str
    experiment_id: str = Field(description="its id in the contract tables")
    layer: str
    status: ExperimentStatus
    start: datetime
    end: datetime | None
    variants: list[VariantSummary]
    defined: bool = Field(
        description="whether a full definition is stored (false for experiments written by "
        "the simulator or an importer: they can be listed and analysed, not shown or started)"
    )

    @classmethod
    def of(cls, row: ExperimentRow) -> ExperimentSummary:
        """The summary of a row of the experiments table."""
        variants = [VariantSummary(name=n, weight=w, policy=p) for n, w, p in row.variants]
        return cls(
            key=row.key,
            experiment_id=row.experiment_id,
            layer=row.layer,
            status=row.status,
            start=row.start,
            end=row.end,
            variants=variants,
            defined=row.defined,
        )


class ExperimentDetail(BaseModel):
    """An experiment's definition, status and window, and its customers so far."""

    definition: ExperimentDefinition
    assigned: dict[str, int] = Field(description="customers assigned so far, per variant")


class AnalysisDesign(BaseModel):
    """What was analysed."""

    key: str
    experiment_id: str
    source: Source = Field(
        description="events (metrics from transactions and claims) or outcomes (imported)"
    )
    control: str
    variants: list[str] = Field(description="every variant, the control first")
    start: datetime
    end: datetime = Field(description="the end of the analysis window")
    data_end: datetime | None = Field(description="the end of the data (null for outcomes)")


class AnalysisSettings(BaseModel):
    """How the statistics were computed."""

    alpha: float = Field(description="1 - the intervals' level")
    correction: Method = Field(description="multiple-testing correction across metrics x variants")
    cap_quantile: float | None = Field(description="mean metrics capped at this pooled quantile")


class SrmVariant(BaseModel):
    """One variant of the sample ratio mismatch check."""

    variant: str
    weight: float
    observed: int = Field(description="customers assigned")
    expected: float = Field(description="customers the weight implies for the same total")


class SrmResult(BaseModel):
    """Whether the split of customers is the one designed (chi-square test)."""

    mismatch: bool = Field(description="true: do not trust the results")
    p_value: float
    threshold: float = Field(description="a p-value below it flags a mismatch")
    statistic: float
    df: int
    variants: list[SrmVariant]


class VerdictResult(BaseModel):
    """What to do with one variant, in words."""

    variant: str
    decision: Decision
    text: str


class LiftResult(BaseModel):
    """One metric, one variant against the control (the columns of `lifts.parquet`)."""

    metric: str
    variant: str
    control: str
    role: Role
    kind: MetricKind
    lower_is_better: bool
    n_control: int | None
    n_treatment: int | None
    mean_control: Number
    mean_treatment: Number
    absolute: Number = Field(description="treatment - control")
    absolute_se: Number
    absolute_ci_low: Number
    absolute_ci_high: Number
    relative: Number = Field(description="treatment / control - 1 (delta-method interval)")
    relative_ci_low: Number
    relative_ci_high: Number
    p_value: Number = Field(description="Welch's p-value")
    z_p_value: Number = Field(description="a proportion's pooled z-test p-value")
    adjusted_p_value: Number = Field(description="adjusted across metrics x variants")
    significant: bool = Field(description="adjusted_p_value < alpha")
    cuped_absolute: Number = Field(description="the CUPED-adjusted absolute lift")
    cuped_ci_low: Number
    cuped_ci_high: Number
    cuped_relative: Number
    cuped_relative_ci_low: Number
    cuped_relative_ci_high: Number
    cuped_p_value: Number
    cuped_theta: Number
    variance_reduction: Number = Field(description="share of the lift's variance CUPED removed")
    sequential_ci_low: Number = Field(description="always-valid interval, safe to peek at")
    sequential_ci_high: Number
    sequential_p_value: Number
    sequential_relative_ci_low: Number
    sequential_relative_ci_high: Number
    chance_to_win: Number = Field(description="Bayesian chance to beat the control")
    expected_loss: Number = Field(description="expected loss of shipping the variant")
    expected_loss_control: Number
    expected_loss_relative: Number
    cap: Number = Field(description="the cap applied to the metric (null: not capped)")
    n_capped: int
    message: str | None = Field(description="why the lift could not be estimated")
    cuped_message: str | None = Field(description="why CUPED was skipped")


class ExperimentResults(BaseModel):
    """The analysis of an experiment, as `cashback experiments analyze` gives it."""

    design: AnalysisDesign
    settings: AnalysisSettings
    primary_metric: str
    guardrail_metrics: list[str]
    verdicts: list[VerdictResult] = Field(description="one per variant against the control")
    srm: SrmResult
    lifts: list[LiftResult] = Field(description="every metric x variant against the control")
    messages: list[str] = Field(description="notes on the data: metrics without data, skips")

    @classmethod
    def of(cls, analysis: ExperimentAnalysis) -> ExperimentResults:
        """The API's view of an analysis."""
        design, srm = analysis.design, analysis.srm
        return cls(
            design=AnalysisDesign(
                key=design.key,
                experiment_id=design.experiment_id,
                source=design.source,
                control=design.control,
                variants=list(design.variants),
                start=design.start,
                end=design.end,
                data_end=design.data_end,
            ),
            settings=AnalysisSettings(
                alpha=analysis.options.alpha,
                correction=analysis.options.correction,
                cap_quantile=analysis.options.cap_quantile,
            ),
            primary_metric=analysis.primary_metric,
            guardrail_metrics=list(analysis.guardrail_metrics),
            verdicts=[
                VerdictResult(variant=v.variant, decision=v.decision, text=v.text)
                for v in analysis.verdicts
            ],
            srm=SrmResult(
                mismatch=srm.mismatch,
                p_value=srm.p_value,
                threshold=srm.threshold,
                statistic=srm.statistic,
                df=srm.df,
                variants=[
                    SrmVariant(variant=v, weight=w, observed=o, expected=e)
                    for v, w, o, e in zip(
                        design.variants, design.weights, srm.observed, srm.expected, strict=True
                    )
                ],
            ),
            lifts=[LiftResult.model_validate(row) for row in analysis.to_frame().to_dicts()],
            messages=list(analysis.messages),
        )
