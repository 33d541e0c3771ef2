"""Segment names: short, readable, unique, and true to the clusters' profiles."""

from __future__ import annotations

import polars as pl

from cashback.settings import SegmentSettings
from models.segments.fit import fit_clusters, predict
from models.segments.model import active_mask, clustering_space, raw_matrix
from models.segments.naming import ClusterTraits, name_clusters, segment_names
from tests.models.segments.conftest import FEATURES


def test_given_planted_types_then_the_names_describe_them(customers: pl.DataFrame) -> None:
    # given the four planted types, clustered
    space = clustering_space(FEATURES)
    active = customers.filter(pl.Series(active_mask(customers)))
    x = raw_matrix(active, space.columns)
    fit = fit_clusters(space, x, SegmentSettings(k_min=4, k_max=4, n_init=4))
    labels = predict(fit.pipeline, x)

    # when the clusters are named
    names, traits = name_clusters(active, labels, fit.k, space, "purchases_90d")

    # then each type's cluster has the words of its profile
    by_type = {
        planted: names[int(pl.Series(labels).filter(active["planted"] == planted).mode()[0])]
        for planted in ("loyal", "big", "new", "fading")
    }
    print(by_type)
    assert by_type["loyal"].startswith("frequent")
    assert "store" in by_type["loyal"] or "grocery" in by_type["loyal"]
    assert "high-value" in by_type["big"]
    assert by_type["new"].startswith("recently joined")
    assert by_type["fading"].startswith("lapsing")
    # and names are unique, short, and end with "buyers"
    assert len(set(names)) == len(names)
    assert all(n.endswith("buyers") and len(n.split()) <= 6 for n in names)
    assert [t.customers for t in traits] == [int((labels == c).sum()) for c in range(fit.k)]


def _traits(cluster: int, activity: str | None, *traits: tuple[str, str, float]) -> ClusterTraits:
    return ClusterTraits(
        cluster, 100, 5.0, 50.0, 10.0, 500.0, activity=activity, traits=list(traits)
    )


def test_given_alike_clusters_then_names_grow_until_they_differ() -> None:
    # given two clusters alike on their two strongest traits, a third like none, a fourth
    # identical to the third
    traits = [
        _traits(0, "frequent", ("channel", "app", 0.5), ("basket", "small-basket", 0.4),
                ("category", "fashion", 0.1)),
        _traits(1, "frequent", ("channel", "app", 0.6), ("basket", "small-basket", 0.3),
                ("category", "beauty", 0.2)),
        _traits(2, None),
        _traits(3, None),
    ]  # fmt: skip

    # when named
    names = segment_names(traits)

    # then the first two add their next trait, the last two are numbered
    assert names == (
        "frequent small-basket app fashion buyers",
        "frequent small-basket app beauty buyers",
        "typical buyers",
        "typical buyers 2",
    )
