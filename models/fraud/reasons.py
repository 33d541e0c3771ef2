"""Why a claim was flagged, in words a risk analyst reads, and which kind of abuse it looks like.

Reasons are the features with the largest positive tree SHAP contributions to the claim's
risk, each turned into a short sentence with the claim's value and the typical value (the
median over the training claims). The abuse type is the family of features (multi-account,
receipt reuse, velocity, new account, claim then return) that contributes most to the risk;
`other` when no family adds risk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cashback.vocab import AbuseType
from models.fraud.dataset import CATEGORICAL, FloatMatrix

FAMILIES: dict[str, AbuseType] = {
    "device_customers_30d": AbuseType.MULTI_ACCOUNT,
    "ip_customers_30d": AbuseType.MULTI_ACCOUNT,
    "device_youngest_account_days": AbuseType.MULTI_ACCOUNT,
    "ip_youngest_account_days": AbuseType.MULTI_ACCOUNT,
    "receipt_seen_before": AbuseType.RECEIPT_REUSE,
    "customer_claims_1h": AbuseType.VELOCITY,
    "device_claims_1h": AbuseType.VELOCITY,
    "ip_claims_1h": AbuseType.VELOCITY,
    "device_claims_24h": AbuseType.VELOCITY,
    "ip_claims_24h": AbuseType.VELOCITY,
    "device_claims_7d": AbuseType.VELOCITY,
    "ip_claims_7d": AbuseType.VELOCITY,
    "minutes_since_last_claim": AbuseType.VELOCITY,
    "tenure_days": AbuseType.NEW_ACCOUNT,
    "return_rate_7d": AbuseType.CLAIM_THEN_RETURN,
    "return_rate_30d": AbuseType.CLAIM_THEN_RETURN,
    "return_rate_90d": AbuseType.CLAIM_THEN_RETURN,
    "return_rate_365d": AbuseType.CLAIM_THEN_RETURN,
}
FAMILY_ORDER: tuple[AbuseType, ...] = (
    AbuseType.MULTI_ACCOUNT,
    AbuseType.RECEIPT_REUSE,
    AbuseType.VELOCITY,
    AbuseType.NEW_ACCOUNT,
    AbuseType.CLAIM_THEN_RETURN,
)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _share(value: float) -> str:
    return f"{value:.0%}"


def _stage(value: float) -> str:
    stages = CATEGORICAL["lifecycle"]
    return stages[int(value)].replace("_", " ") if 0 <= value < len(stages) else "unknown"


def _minutes(value: float) -> str:
    return f"{value:,.0f} minutes" if value < 120 else f"{value / 60:,.1f} hours"


Template = tuple[str, Callable[[float], str]]
# "{v}" is the formatted value, "{s}" the plural ending ("" for exactly one)
TEMPLATES: dict[str, Template] = {
    "device_customers_30d": ("{v} account{s} used this device in the last 30 days", _count),
    "ip_customers_30d": ("{v} account{s} claimed from this IP in the last 30 days", _count),
    "device_youngest_account_days": (
        "the newest account on this device is {v} day{s} old",
        _count,
    ),
    "ip_youngest_account_days": ("the newest account on this IP is {v} day{s} old", _count),
    "customer_claims_1h": ("{v} claim{s} by this customer in the last hour", _count),
    "device_claims_1h": ("{v} claim{s} from this device in the last hour", _count),
    "ip_claims_1h": ("{v} claim{s} from this IP in the last hour", _count),
    "device_claims_24h": ("{v} claim{s} from this device in the day before", _count),
    "ip_claims_24h": ("{v} claim{s} from this IP in the day before", _count),
    "device_claims_7d": ("{v} claim{s} from this device in the week before", _count),
    "ip_claims_7d": ("{v} claim{s} from this IP in the week before", _count),
    "minutes_since_last_claim": ("the previous claim was {v} earlier", _minutes),
    "tenure_days": ("the account is {v} day{s} old", _count),
    "amount_vs_avg_basket": (
        "the amount is {v} times the customer's average basket",
        "{:.1f}".format,
    ),
    "cashback_share": ("the cashback is {v} of the amount", _share),
    "claims_30d": ("{v} claim{s} by this customer in the last 30 days", _count),
    "hour_of_day": ("claimed at {v}:00 UTC", "{:02.0f}".format),
    "lifecycle": ("the customer's lifecycle stage is {v}", _stage),
    "anomaly_score": ("an unusual combination of claim features (anomaly {v})", "{:.2f}".format),
}


def _generic(name: str) -> Template:
    words = name.replace("_", " ")
    return (f"{words} is {{v}}", "{:,.2f}".format)


def sentence(name: str, value: float, typical: float | None) -> str:
    """One reason in words: the feature's value and, when known, its typical value.

    Args:
        name: the feature.
        value: the claim's value (nan: unknown).
        typical: the median over the training claims.
    """
    if name == "receipt_seen_before":
        return "this receipt was already used for an earlier claim"
    text, fmt = TEMPLATES.get(name, _generic(name))
    if math.isnan(value):
        return f"{name.replace('_', ' ')} is unknown"
    out = text.format(v=fmt(value), s="" if value == 1 else "s")
    if typical is not None and not math.isnan(typical):
        out += f"; typical is {fmt(typical)}"
    return out


@dataclass(frozen=True)
class Explanation:
    """Why one claim is risky.

    Attributes:
        reasons: sentences, most important first.
        features: the features behind them, in the same order.
        abuse_type: the kind of abuse it looks like.
    """

    reasons: tuple[str, ...]
    features: tuple[str, ...]
    abuse_type: str


def family_matrix(names: Sequence[str]) -> FloatMatrix:
    """Features x abuse families: 1 where a feature belongs to a family."""
    matrix = np.zeros((len(names), len(FAMILY_ORDER)))
    for i, name in enumerate(names):
        family = FAMILIES.get(name)
        if family is not None:
            matrix[i, FAMILY_ORDER.index(family)] = 1.0
    return matrix


def abuse_types(contributions: FloatMatrix, names: Sequence[str]) -> list[str]:
    """The abuse type of each claim from its SHAP contributions (vectorized).

    Args:
        contributions: claims x (features + bias), as LightGBM's `pred_contrib` returns.
        names: the feature names (without the bias).
    """
    positive = np.maximum(contributions[:, : len(names)], 0.0)
    by_family = positive @ family_matrix(names)
    best = np.argmax(by_family, axis=1)
    has = by_family[np.arange(len(best)), best] > 0
    labels = np.array([family.value for family in FAMILY_ORDER], dtype=object)
    return list(np.where(has, labels[best], AbuseType.OTHER.value))


def explain(
    contributions: FloatMatrix,
    values: FloatMatrix,
    names: Sequence[str],
    typical: dict[str, float],
    count: int,
) -> list[Explanation]:
    """Reasons and abuse type for each claim.

    Args:
        contributions: claims x (features + bias) SHAP contributions.
        values: claims x features, the values the model saw.
        names: the feature names.
        typical: median of each feature over the training claims.
        count: reasons per claim (only features that add risk are given).
    """
    types = abuse_types(contributions, names)
    top = np.argsort(-contributions[:, : len(names)], axis=1)[:, :count]
    out = []
    for row, (order, abuse) in enumerate(zip(top, types, strict=True)):
        # an unknown value can add risk, but "X is unknown" explains nothing to an analyst
        chosen = [
            int(i) for i in order if contributions[row, i] > 0 and not math.isnan(values[row, i])
        ]
        out.append(
            Explanation(
                reasons=tuple(
                    sentence(names[i], float(values[row, i]), typical.get(names[i])) for i in chosen
                ),
                features=tuple(names[i] for i in chosen),
                abuse_type=abuse,
            )
        )
    return out
