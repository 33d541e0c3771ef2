"""The evaluation contract every model follows, and the promotion gate built on it.

A model package says how its models are judged with an `Evaluator`: a `Gate` (one primary
metric that decides, guardrail metrics that may not get worse) and `evaluate`, which scores
any pyfunc model of that package on an evaluation frame. Promotion evaluates the challenger
and the champion with the same evaluator on the same frame (the challenger run's stored
evaluation set), then `compare` turns the two metric dicts into checks in words.

This module imports neither MLflow nor polars at run time, so model packages can define their
evaluators cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import polars as pl
    from mlflow.pyfunc import PyFuncModel


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the gate.

    Attributes:
        name: the key in the evaluator's metric dict (and in the training run's metrics).
        higher_is_better: direction of "better" (AUC: True, Brier score: False).
    """

    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class Gate:
    """What promotion looks at.

    Attributes:
        primary: the deciding metric: the challenger may be worse than the champion by at most
            the promotion margin.
        guardrails: metrics that may not get worse beyond the guardrail tolerance.
    """

    primary: MetricSpec
    guardrails: tuple[MetricSpec, ...] = ()

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """The primary metric, then the guardrails."""
        return (self.primary, *self.guardrails)


class Evaluator(Protocol):
    """Scores a model of one package on an evaluation frame; the gate says what matters."""

    @property
    def gate(self) -> Gate:
        """The metrics promotion compares."""
        ...

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """Metrics of `model` on `evaluation` (at least every metric of the gate)."""
        ...


@dataclass(frozen=True)
class Check:
    """One metric of the gate compared between challenger and champion.

    Attributes:
        metric: the metric's name.
        role: "primary" or "guardrail".
        challenger: the challenger's value.
        champion: the champion's value.
        allowance: how much worse the challenger may be (margin or tolerance).
        passed: whether the challenger is within the allowance.
        text: the comparison in words, e.g. "pr_auc 0.412 < champion 0.451 - margin 0.005".
    """

    metric: str
    role: str
    challenger: float
    champion: float
    allowance: float
    passed: bool
    text: str


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def check_metric(
    spec: MetricSpec, role: str, challenger: float, champion: float, allowance: float
) -> Check:
    """Compare one metric.

    Args:
        spec: the metric and its direction.
        role: "primary" (the allowance is the promotion margin) or "guardrail" (the tolerance).
        challenger: the challenger's value.
        champion: the champion's value.
        allowance: how much worse the challenger may be, in the metric's units.

    Returns:
        The check. A NaN challenger fails; a NaN champion passes (nothing to keep).
    """
    word = "margin" if role == "primary" else "tolerance"
    if math.isnan(challenger):
        return Check(spec.name, role, challenger, champion, allowance, False, f"{spec.name} is NaN")
    if math.isnan(champion):
        text = f"{spec.name} {_fmt(challenger)} (champion NaN)"
        return Check(spec.name, role, challenger, champion, allowance, True, text)
    if spec.higher_is_better:
        passed = challenger >= champion - allowance
        op = ">=" if passed else "<"
        text = f"{spec.name} {_fmt(challenger)} {op} champion {_fmt(champion)} - {word} "
    else:
        passed = challenger <= champion + allowance
        op = "<=" if passed else ">"
        text = f"{spec.name} {_fmt(challenger)} {op} champion {_fmt(champion)} + {word} "
    return Check(spec.name, role, challenger, champion, allowance, passed, text + _fmt(allowance))


def compare(
    gate: Gate,
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    *,
    margin: float,
    tolerance: float,
) -> tuple[Check, ...]:
    """Every check of the gate: the primary metric, then each guardrail.

    Args:
        gate: the metrics and their directions.
        challenger: the challenger's metrics on the evaluation set.
        champion: the champion's metrics on the same set.
        margin: how much worse the challenger's primary metric may be.
        tolerance: how much worse a guardrail may be.

    Returns:
        One check per metric of the gate; promotion needs all of them passed.

    Raises:
        KeyError: when a metric of the gate is missing from either dict (an evaluator bug).
    """
    primary = gate.primary.name
    checks = [check_metric(gate.primary, "primary", challenger[primary], champion[primary], margin)]
    checks.extend(
        check_metric(spec, "guardrail", challenger[spec.name], champion[spec.name], tolerance)
        for spec in gate.guardrails
    )
    return tuple(checks)
