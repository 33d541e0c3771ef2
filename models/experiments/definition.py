"""Experiment definitions: what is tested, on whom, how it is judged, loaded from YAML.

A definition file (one experiment) looks like this; every field but `targeting`, `unit`,
`guardrail_metrics` and `traffic` is required, and unknown fields are refused:

```yaml
key: rate-boost-q3            # slug: lowercase letters, digits, '-' or '_'
hypothesis: A 3% rate lifts the spend of at-risk customers more than it costs.
layer: rates                  # experiments of one layer never share a customer
variants:                     # at least two; weights sum to 1 (within 1e-9)
  - {name: control, weight: 0.5, policy: rate_card}
  - {name: boost, weight: 0.5, policy: "rate:0.03"}
targeting:                    # empty lists (or no targeting) = everyone
  segments: [bargain_hunters]
  lifecycle: [at_risk, regular]
unit: customer                # the only unit
start: 2025-07-01T00:00:00Z   # UTC; a date alone is 00:00 UTC
stop: 2025-08-01              # after start
primary_metric: net_incremental_margin
guardrail_metrics: [fraud_loss, cashback_paid]
traffic: 1.0                  # share of the layer's buckets this experiment takes
```

A variant's policy is `rate_card` (the default rate card), `personalized` (the rate
policy), `rate:R` (a fixed rate 0 <= R < 1) or `offer:OFFER_ID` (one catalog offer).
Metrics come from `cashback.vocab.ExperimentMetric`. The global holdout share is a setting
(`experiments.holdout_share`), never part of an experiment.

Status: draft -> running -> stopped (`TRANSITIONS`); `completed` marks imported or simulated
experiments and has no way out. `layer_buckets` is set by the store when the experiment
starts (the range of the layer's buckets it owns) and cannot be given in a file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cashback.errors import CashbackError
from cashback.vocab import ExperimentMetric, ExperimentStatus, Lifecycle

SLUG = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
SLUG_MAX = 64
WEIGHT_TOLERANCE = 1e-9
NAMED_POLICIES = ("rate_card", "personalized")
RATE_PREFIX = "rate:"
OFFER_PREFIX = "offer:"
FIELDS_SET_BY_THE_STORE = ("status", "layer_buckets")
T = TypeVar("T")

TRANSITIONS: Mapping[ExperimentStatus, frozenset[ExperimentStatus]] = {
    ExperimentStatus.DRAFT: frozenset({ExperimentStatus.RUNNING}),
    ExperimentStatus.RUNNING: frozenset({ExperimentStatus.STOPPED}),
    ExperimentStatus.STOPPED: frozenset(),
    ExperimentStatus.COMPLETED: frozenset(),
}


def _slug(value: str) -> str:
    if len(value) > SLUG_MAX or not SLUG.fullmatch(value):
        msg = (
            f"{value!r} is not a slug: lowercase letters and digits, words joined by '-' or "
            f"'_', starting with a letter, at most {SLUG_MAX} characters"
        )
        raise ValueError(msg)
    return value


def _policy(value: str) -> str:
    if value in NAMED_POLICIES:
        return value
    if value.startswith(RATE_PREFIX):
        try:
            rate = float(value.removeprefix(RATE_PREFIX))
        except ValueError:
            rate = math.nan
        if 0.0 <= rate < 1.0:
            return value
        msg = f"{value!r}: a fixed rate is 'rate:R' with 0 <= R < 1, e.g. 'rate:0.03'"
        raise ValueError(msg)
    offer = value.removeprefix(OFFER_PREFIX)
    if value.startswith(OFFER_PREFIX) and offer and not any(c.isspace() for c in offer):
        return value
    msg = (
        f"unknown policy {value!r}: expected {' or '.join(NAMED_POLICIES)}, a fixed rate "
        "'rate:0.03', or an offer 'offer:OFFER_ID'"
    )
    raise ValueError(msg)


def _parse_time(text: str) -> date:
    """A date (YYYY-MM-DD) or an ISO 8601 time."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        msg = f"{text!r} is not a date or an ISO 8601 time (e.g. 2025-07-01T00:00:00Z)"
        raise ValueError(msg) from None


def _utc(value: object) -> object:
    """Dates are 00:00 UTC; aware times are converted to UTC; naive times are refused."""
    if isinstance(value, str):
        value = _parse_time(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            msg = f"{value.isoformat()} has no time zone: write it in UTC, e.g. ...T00:00:00Z"
            raise ValueError(msg)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _unique(values: tuple[T, ...]) -> tuple[T, ...]:
    repeated = sorted(str(v) for v, n in Counter(values).items() if n > 1)
    if repeated:
        msg = f"listed more than once: {', '.join(repeated)}"
        raise ValueError(msg)
    return values


Slug = Annotated[str, AfterValidator(_slug)]
UtcTime = Annotated[datetime, BeforeValidator(_utc)]


class Variant(BaseModel):
    """One arm of an experiment.

    Attributes:
        name: a slug, unique within the experiment.
        weight: the share of the experiment's customers who get it.
        policy: what they get: `rate_card`, `personalized`, `rate:R` or `offer:OFFER_ID`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Slug
    weight: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    policy: Annotated[str, AfterValidator(_policy)]


class Targeting(BaseModel):
    """Who may enter: customers in one of the segments and one of the lifecycle stages.

    An empty list does not restrict (no targeting at all = everyone).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    segments: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(_unique)
    ] = ()
    lifecycle: Annotated[tuple[Lifecycle, ...], AfterValidator(_unique)] = ()

    def includes(self, segment: str | None, lifecycle: str | None) -> bool:
        """Whether a customer with this segment and lifecycle stage is targeted.

        An unknown (None) segment or stage is outside any list that restricts it.
        """
        in_segment = not self.segments or segment in self.segments
        in_stage = not self.lifecycle or lifecycle in self.lifecycle
        return in_segment and in_stage

    def overlaps(self, other: Targeting) -> bool:
        """Whether some customer could be targeted by both (each dimension must meet)."""
        segments = (
            not self.segments
            or not other.segments
            or bool(set(self.segments) & set(other.segments))
        )
        stages = (
            not self.lifecycle
            or not other.lifecycle
            or bool(set(self.lifecycle) & set(other.lifecycle))
        )
        return segments and stages


class BucketRange(BaseModel):
    """The half-open range [start, end) of a layer's buckets that one experiment owns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(gt=0)

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and end <= start:
            msg = f"end ({end}) must be above start ({start})"
            raise ValueError(msg)
        return end

    @property
    def size(self) -> int:
        """Number of buckets in the range."""
        return self.end - self.start


class ExperimentDefinition(BaseModel):
    """An experiment: hypothesis, layer, variants, targeting, window, metrics and status.

    Attributes:
        key: slug naming the experiment (its experiment_id in the contract tables).
        hypothesis: what is expected to happen, and why.
        layer: slug; running experiments of one layer never share a customer.
        variants: at least two, names unique, weights summing to 1 (within 1e-9).
        targeting: segments and lifecycle stages allowed in (empty: everyone).
        unit: the unit of assignment and analysis: always the customer.
        start: when assignment may begin (UTC).
        stop: when it ends (UTC), after start.
        primary_metric: the metric the decision is made on.
        guardrail_metrics: metrics that must not get worse (unique, without the primary).
        traffic: the share of the layer's buckets the experiment takes when it starts.
        status: draft, running, stopped (or completed, for imported experiments).
        layer_buckets: the buckets of the layer it owns, set when it starts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: Slug
    hypothesis: str = Field(min_length=1)
    layer: Slug
    variants: tuple[Variant, ...] = Field(min_length=2)
    targeting: Targeting = Targeting()
    unit: Literal["customer"] = "customer"
    start: UtcTime
    stop: UtcTime
    primary_metric: ExperimentMetric
    guardrail_metrics: Annotated[tuple[ExperimentMetric, ...], AfterValidator(_unique)] = ()
    traffic: float = Field(default=1.0, gt=0.0, le=1.0)
    status: ExperimentStatus = ExperimentStatus.DRAFT
    layer_buckets: BucketRange | None = None

    @field_validator("hypothesis")
    @classmethod
    def _not_blank(cls, hypothesis: str) -> str:
        if not hypothesis.strip():
            msg = "the hypothesis is blank: say what should happen, and why"
            raise ValueError(msg)
        return hypothesis.strip()

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = Counter(v.name for v in variants)
        repeated = sorted(name for name, n in names.items() if n > 1)
        if repeated:
            msg = f"variant names must be unique; repeated: {', '.join(repeated)}"
            raise ValueError(msg)
        total = math.fsum(v.weight for v in variants)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            msg = f"variant weights sum to {total!r}, expected 1 (within {WEIGHT_TOLERANCE:g})"
            raise ValueError(msg)
        return variants

    @field_validator("stop")
    @classmethod
    def _stop_after_start(cls, stop: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if isinstance(start, datetime) and stop <= start:
            msg = f"stop ({stop.isoformat()}) must be after start ({start.isoformat()})"
            raise ValueError(msg)
        return stop

    @field_validator("guardrail_metrics")
    @classmethod
    def _guardrails_without_primary(
        cls, guardrails: tuple[ExperimentMetric, ...], info: ValidationInfo
    ) -> tuple[ExperimentMetric, ...]:
        primary = info.data.get("primary_metric")
        if primary in guardrails:
            msg = f"{primary} is the primary metric: it cannot also be a guardrail"
            raise ValueError(msg)
        return guardrails

    def transition(self, to: ExperimentStatus) -> Self:
        """The same experiment with status `to`.

        Raises:
            CashbackError: when the move is not allowed (e.g. a stopped experiment restarted).
        """
        allowed = TRANSITIONS[self.status]
        if to not in allowed:
            options = ", ".join(sorted(allowed)) or "none: it is final"
            msg = (
                f"experiment {self.key!r} is {self.status}: it cannot become {to} "
                f"(allowed: {options})"
            )
            raise CashbackError(msg)
        return self.model_copy(update={"status": to})

    def active_at(self, at: datetime) -> bool:
        """Whether the experiment is running and `at` is within [start, stop)."""
        return self.status == ExperimentStatus.RUNNING and self.start <= at < self.stop

    def buckets_for(self, buckets: int) -> int:
        """How many of a layer's `buckets` the experiment's traffic asks for (at least 1)."""
        return max(1, min(buckets, math.floor(self.traffic * buckets + 0.5)))


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(file)"


def describe(error: ValidationError, source: str) -> str:
    """One line naming the source and each field that failed, with the reason."""
    problems = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (a typo?)"
        elif item["type"] in {"enum", "literal_error"}:
            message = f"got {item['input']!r}; {message[0].lower()}{message[1:]}"
        problems.append(f"{_location(tuple(item['loc']))}: {message}")
    return f"{source}: invalid experiment definition: {'; '.join(problems)}"


def parse_definition(data: object, source: str) -> ExperimentDefinition:
    """Validate a mapping (e.g. parsed YAML) as a new experiment definition.

    Args:
        data: the parsed document.
        source: what to name in errors (the file).

    Returns:
        The definition, in draft.

    Raises:
        CashbackError: naming the source and every field that failed.
    """
    if not isinstance(data, Mapping):
        msg = f"{source}: expected a mapping of experiment fields, got {type(data).__name__}"
        raise CashbackError(msg)
    given = [name for name in FIELDS_SET_BY_THE_STORE if name in data]
    if given:
        msg = (
            f"{source}: {', '.join(given)}: set by `cashback experiments start/stop`, not in "
            "a definition file"
        )
        raise CashbackError(msg)
    try:
        return ExperimentDefinition.model_validate(data)
    except ValidationError as error:
        raise CashbackError(describe(error, source)) from None


def load_definition(path: Path) -> ExperimentDefinition:
    """Read one experiment definition from a YAML file.

    Raises:
        CashbackError: naming the file (and the field) when it cannot be read or is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        msg = f"{path}: cannot read the experiment definition ({error.strerror or error})"
        raise CashbackError(msg) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        msg = f"{path}: not valid YAML: {' '.join(str(error).split())}"
        raise CashbackError(msg) from None
    return parse_definition(data, str(path))
