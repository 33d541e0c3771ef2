"""Readable segment names from the clusters' profiles.

Each cluster is compared with the whole active population on:
- recency (median days since the last purchase): twice the population's and at least
  `LAPSING_MIN_DAYS` -> "lapsing";
- otherwise tenure (median days since sign-up): at most `RECENT_RATIO` times the
  population's and under a year -> "recently joined";
- otherwise frequency (median purchases over 365 days): at least `HIGH` times the
  population's -> "frequent", at most `LOW` times -> "occasional";
- basket size (median average basket over 365 days): at least `HIGH` times ->
  "high-value", at most `SMALL_BASKET` times -> "small-basket";
- main channel: among the channels whose share (among members who bought in the share
  window) is at least `CHANNEL_LIFT` times the population's and at least
  `CHANNEL_MIN_SHARE`, the largest -> "app", "store", "online";
- main category: likewise with `CATEGORY_LIFT` and `CATEGORY_MIN_SHARE` -> "fashion",
  "grocery", ...

A name is the activity word, then the strongest two of the other traits (by how far they
are from the population, in log ratio), then "buyers", in a fixed word order: e.g.
"frequent small-basket app buyers", "occasional high-value store buyers", "lapsing fashion
buyers". When two clusters get the same name, their next traits are added until the names
differ; clusters still alike are numbered ("... buyers 2"). A cluster without any trait is
"typical buyers".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from models.segments.model import INACTIVE, ClusterSpace, IntArray, share_label

LAPSING_RATIO = 2.0
LAPSING_MIN_DAYS = 60.0
RECENT_RATIO = 0.5
RECENT_MAX_DAYS = 365.0
HIGH = 1.6
LOW = 0.6
SMALL_BASKET = 0.75
CHANNEL_LIFT = 1.25
CHANNEL_MIN_SHARE = 0.4
CATEGORY_LIFT = 1.3
CATEGORY_MIN_SHARE = 0.15
MIN_MIX_MEMBERS = 20
TRAITS_IN_NAME = 2
WORD_ORDER = ("basket", "channel", "category")
CATEGORY_WORDS = {"groceries": "grocery"}


@dataclass
class ClusterTraits:
    """What sets one cluster apart from the population.

    Attributes:
        cluster: the cluster number.
        customers: members.
        purchases: median purchases over 365 days.
        basket: median average basket over 365 days.
        recency: median days since the last purchase.
        tenure: median days since sign-up.
        top_channel: the channel most over-represented against the population (None when
            too few members bought in the share window).
        top_category: the category most over-represented (likewise).
        activity: "lapsing", "recently joined", "frequent", "occasional" or None.
        traits: (kind, word, strength) of the distinctive traits, strongest first.
    """

    cluster: int
    customers: int
    purchases: float
    basket: float
    recency: float
    tenure: float
    top_channel: str | None = None
    top_category: str | None = None
    activity: str | None = None
    traits: list[tuple[str, str, float]] = field(default_factory=list)


def _median(frame: pl.DataFrame, column: str) -> float:
    value = frame[column].drop_nulls().median()
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _mix(frame: pl.DataFrame, columns: tuple[str, ...], window_count: str) -> dict[str, float]:
    """Mean share of each column among members who bought in the share window."""
    buyers = frame.filter(pl.col(window_count).fill_null(0) > 0)
    if buyers.height < MIN_MIX_MEMBERS or not columns:
        return {}
    means = buyers.select(pl.col(c).fill_null(0.0).mean() for c in columns).row(0)
    return {c: float(m) for c, m in zip(columns, means, strict=True)}


def _ratio(value: float, reference: float) -> float:
    if not (reference > 0) or math.isnan(value):
        return 1.0
    return max(value, 1e-9) / reference


def _top_lift(
    mix: dict[str, float], population: dict[str, float], min_lift: float, min_share: float
) -> tuple[str | None, float | None]:
    """The column that sets the cluster apart, and its lift when it counts as a trait.

    Among the columns at least `min_lift` times the population's share and at least
    `min_share`, the largest share (a cluster buying 34 % electronics at 3.4 times the
    population's is an electronics cluster, even if its 16 % travel is 4 times); without
    any, the most over-represented column, without a lift.
    """
    lifts = {c: _ratio(share, population.get(c, 0.0)) for c, share in mix.items()}
    if not lifts:
        return None, None
    qualified = [c for c in lifts if lifts[c] >= min_lift and mix[c] >= min_share]
    if qualified:
        best = max(qualified, key=lambda c: (mix[c], c))
        return best, lifts[best]
    return max(lifts, key=lambda c: (lifts[c], c)), None


def category_word(column: str) -> str:
    """A category share column as a word (`share_groceries_90d` -> `grocery`)."""
    label = share_label(column)
    return CATEGORY_WORDS.get(label, label.replace("_", " "))


def cluster_traits(
    frame: pl.DataFrame, labels: IntArray, k: int, space: ClusterSpace, window_count: str
) -> list[ClusterTraits]:
    """Each cluster's traits against the population of `frame` (the active customers).

    Args:
        frame: active customers' features.
        labels: each row's cluster (0..k-1).
        k: number of clusters.
        space: the clustering space (which columns are the channel and category mixes).
        window_count: purchases over the share window (e.g. `purchases_90d`).
    """
    channels, categories = space.channel_columns, space.category_columns
    population = {
        "purchases": _median(frame, "purchases_365d"),
        "basket": _median(frame, "avg_basket_365d"),
        "recency": _median(frame, "days_since_last_purchase"),
        "tenure": _median(frame, "tenure_days"),
    }
    pop_channels = _mix(frame, channels, window_count)
    pop_categories = _mix(frame, categories, window_count)
    out = []
    for cluster in range(k):
        members = frame.filter(pl.Series(labels == cluster))
        t = ClusterTraits(
            cluster=cluster,
            customers=members.height,
            purchases=_median(members, "purchases_365d"),
            basket=_median(members, "avg_basket_365d"),
            recency=_median(members, "days_since_last_purchase"),
            tenure=_median(members, "tenure_days"),
        )
        recency = _ratio(t.recency, population["recency"])
        tenure = _ratio(t.tenure, population["tenure"])
        frequency = _ratio(t.purchases, population["purchases"])
        if recency >= LAPSING_RATIO and t.recency >= LAPSING_MIN_DAYS:
            t.activity = "lapsing"
        elif tenure <= RECENT_RATIO and t.tenure < RECENT_MAX_DAYS:
            t.activity = "recently joined"
        elif frequency >= HIGH:
            t.activity = "frequent"
        elif frequency <= LOW:
            t.activity = "occasional"
        basket = _ratio(t.basket, population["basket"])
        if basket >= HIGH:
            t.traits.append(("basket", "high-value", math.log(basket)))
        elif basket <= SMALL_BASKET:
            t.traits.append(("basket", "small-basket", -math.log(basket)))
        channel, lift = _top_lift(
            _mix(members, channels, window_count), pop_channels, CHANNEL_LIFT, CHANNEL_MIN_SHARE
        )
        t.top_channel = share_label(channel) if channel else None
        if channel and lift:
            t.traits.append(("channel", share_label(channel), math.log(lift)))
        category, lift = _top_lift(
            _mix(members, categories, window_count),
            pop_categories,
            CATEGORY_LIFT,
            CATEGORY_MIN_SHARE,
        )
        t.top_category = share_label(category) if category else None
        if category and lift:
            t.traits.append(("category", category_word(category), math.log(lift)))
        t.traits.sort(key=lambda trait: -trait[2])
        out.append(t)
    return out


def _name(traits: ClusterTraits, count: int) -> str:
    chosen = traits.traits[:count]
    words = [traits.activity] if traits.activity else []
    words += [word for kind in WORD_ORDER for (k, word, _) in chosen if k == kind]
    return " ".join([*words, "buyers"]) if words else "typical buyers"


def segment_names(traits: list[ClusterTraits]) -> tuple[str, ...]:
    """A short, unique name per cluster (never `inactive`)."""
    counts = dict.fromkeys(range(len(traits)), TRAITS_IN_NAME)
    names = {t.cluster: _name(t, counts[t.cluster]) for t in traits}
    most = max((len(t.traits) for t in traits), default=0)
    for _ in range(most):
        clashes = _clashing(names)
        if not clashes:
            break
        for t in traits:
            if t.cluster in clashes:
                counts[t.cluster] += 1
                names[t.cluster] = _name(t, counts[t.cluster])
    seen: dict[str, int] = {}
    for t in sorted(traits, key=lambda t: t.cluster):
        base = names[t.cluster]
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1 or base == INACTIVE:
            names[t.cluster] = f"{base} {seen[base]}"
    return tuple(names[t.cluster] for t in sorted(traits, key=lambda t: t.cluster))


def _clashing(names: dict[int, str]) -> set[int]:
    values = list(names.values())
    return {c for c, n in names.items() if values.count(n) > 1}


def name_clusters(
    frame: pl.DataFrame, labels: IntArray, k: int, space: ClusterSpace, window_count: str
) -> tuple[tuple[str, ...], list[ClusterTraits]]:
    """Names and traits of the clusters of `frame` (active customers, `labels` 0..k-1)."""
    traits = cluster_traits(frame, np.asarray(labels), k, space, window_count)
    return segment_names(traits), traits
