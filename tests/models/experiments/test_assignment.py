"""Deterministic assignment: the documented hash, holdout, layers, variants, targeting, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import reduce

import numpy as np
import polars as pl
import pytest

from cashback.settings import ExperimentSettings, Settings
from models.experiments.assignment import (
    COLUMNS,
    Reason,
    assign,
    assign_batch,
    bucket,
    bucket_array,
    hash64,
    hash64_array,
    variant_boundaries,
)
from models.experiments.definition import BucketRange, ExperimentDefinition
from tests.conftest import PROJECT_ROOT

AT = datetime(2025, 7, 15, tzinfo=UTC)
NO_HOLDOUT = ExperimentSettings(holdout_share=0.0)


def reference_hash(salt: str, customer_id: str) -> int:
    """The spec of the module docstring, written apart from the module's code."""
    modulus = 2**64
    data = (salt + ":" + customer_id).encode("utf-8")
    h = reduce(lambda h, b: ((h ^ b) * 1099511628211) % modulus, data, 14695981039346656037)
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = ((h ^ (h >> 33)) * multiplier) % modulus
    return h ^ (h >> 33)


# (salt, customer_id) -> (64-bit hash, bucket of 10,000), from the reference above
KNOWN = [
    ("global-holdout", "c000001", 13892169472621316531, 6531),
    ("global-holdout", "c000002", 17109675339387957687, 7687),
    ("layer:rates", "c000001", 16668388996810914967, 4967),
    ("layer:rates", "c000002", 8459850562054891139, 1139),
    ("experiment:rate-boost", "c000001", 5862288427215664196, 4196),
    ("experiment:rate-boost", "42", 14369052169530030663, 663),
    ("global-holdout", "customer-123456789", 14873325260496841147, 1147),
    ("layer:email", "Ünïcödé-客户", 2533034363597551547, 1547),
    ("layer:rates", "", 17785107158514514171, 4171),
    ("s", "0", 7646461165964057248, 7248),
]


def experiment(
    key: str = "rate-boost",
    *,
    layer: str = "rates",
    weights: Sequence[float] = (0.5, 0.5),
    buckets: tuple[int, int] = (0, 10_000),
    segments: Sequence[str] = (),
    lifecycle: Sequence[str] = (),
    status: str = "running",
) -> ExperimentDefinition:
    names = ["control", "treatment", "third", "fourth"]
    return ExperimentDefinition.model_validate(
        {
            "key": key,
            "hypothesis": "a higher rate lifts spend",
            "layer": layer,
            "variants": [
                {"name": names[i], "weight": w, "policy": "rate_card" if i == 0 else "rate:0.03"}
                for i, w in enumerate(weights)
            ],
            "targeting": {"segments": list(segments), "lifecycle": list(lifecycle)},
            "start": "2025-07-01",
            "stop": "2025-08-01",
            "primary_metric": "spend_per_customer",
            "status": status,
            "layer_buckets": {"start": buckets[0], "end": buckets[1]},
        }
    )


def ids(n: int, prefix: str = "c") -> pl.Series:
    return pl.Series("customer_id", [f"{prefix}{i:07d}" for i in range(n)])


def within(count: int, n: int, share: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * share) <= sigmas * math.sqrt(n * share * (1 - share))


# ------------------------------------------------------------------------- the hash


@pytest.mark.parametrize(("salt", "customer_id", "hashed", "expected"), KNOWN)
def test_known_ids_hash_to_the_pinned_buckets(
    salt: str, customer_id: str, hashed: int, expected: int
) -> None:
    assert reference_hash(salt, customer_id) == hashed
    assert hash64(salt, customer_id) == hashed
    assert bucket(salt, customer_id, 10_000) == expected
    vectorized = bucket_array(salt, pl.Series([customer_id, "other"]), 10_000)
    assert int(vectorized[0]) == expected


def test_vectorized_hash_equals_the_reference_on_ids_of_any_length_and_script() -> None:
    # given ids of 0 to 40 characters, ASCII and not, with nulls and a sliced series
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ0123456789-_é客ü")
    values = ["".join(rng.choice(alphabet, rng.integers(0, 40))) for _ in range(3_000)]
    series = pl.Series([*values, None]).slice(1)

    # when hashed in numpy
    hashed = hash64_array("layer:rates", series)

    # then every hash is the reference's (a null hashes as the empty string)
    expected = [reference_hash("layer:rates", v or "") for v in series.to_list()]
    assert hashed.dtype == np.uint64
    assert [int(h) for h in hashed] == expected


def test_buckets_are_uniform() -> None:
    counts = np.bincount(bucket_array("layer:rates", ids(200_000), 100).astype(np.int64))
    expected = 2_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 99 + 5 * math.sqrt(2 * 99)  # 99 degrees of freedom, far tail


def test_assignment_is_the_same_in_another_process() -> None:
    # given assignments computed here
    customers = [f"c{i:07d}" for i in range(0, 5_000, 7)]
    definition = experiment(weights=(0.2, 0.3, 0.5))
    here = [assign(c, [definition], Settings(), at=AT).model_dump(mode="json") for c in customers]

    # when a fresh interpreter (another string hash seed) computes them
    script = (
        "import json, sys\n"
        "from datetime import datetime\n"
        "from cashback.settings import Settings\n"
        "from models.experiments.assignment import assign\n"
        "from models.experiments.definition import ExperimentDefinition\n"
        "args = json.loads(sys.stdin.read())\n"
        "d = ExperimentDefinition.model_validate(args['definition'])\n"
        "at = datetime.fromisoformat(args['at'])\n"
        "print(json.dumps([assign(c, [d], Settings(), at=at).model_dump(mode='json')"
        " for c in args['customers']]))\n"
    )
    payload = {
        "definition": definition.model_dump(mode="json"),
        "at": AT.isoformat(),
        "customers": customers,
    }
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
    )

    # then they are the same
    assert json.loads(done.stdout) == here


# ------------------------------------------------------------------------- one vs many


def test_batch_gives_exactly_the_single_customer_answers_on_100k_ids() -> None:
    # given two layers, targeting, the holdout, and customers with segments and stages
    n = 100_000
    rng = np.random.default_rng(5)
    customers = ids(n)
    segments = rng.choice(np.array(["bargain", "loyal", "casual", None], dtype=object), n)
    stages = rng.choice(np.array(["new", "regular", "at_risk", "inactive", None], dtype=object), n)
    experiments = [
        experiment("a", weights=(0.3, 0.7), buckets=(0, 4_000)),
        experiment("b", weights=(0.25, 0.25, 0.5), buckets=(4_000, 9_000), segments=["loyal"]),
        experiment("c", layer="email", lifecycle=["at_risk", "new"]),
        experiment("draft", layer="other", status="draft"),
    ]
    settings = ExperimentSettings(holdout_share=0.1)

    # when assigned in one batch and one at a time
    batch = assign_batch(
        customers, experiments, settings, segments=segments, lifecycles=stages, at=AT
    )
    single = [
        assign(c, experiments, settings, segment=s, lifecycle=st, at=AT).model_dump(mode="json")
        for c, s, st in zip(customers.to_list(), segments, stages, strict=True)
    ]

    # then every row is the same
    assert batch.columns == list(COLUMNS)
    expected = pl.DataFrame(single).select(COLUMNS[1:]).cast(batch.drop("customer_id").schema)
    assert batch.drop("customer_id").equals(expected)
    assert set(batch["reason"]) == {"holdout", "experiment", "no_experiment"}
    assert set(batch["experiment_key"].drop_nulls()) == {"a", "b", "c"}


def test_assignment_is_deterministic() -> None:
    definition = experiment(weights=(0.2, 0.8))
    first = assign_batch(ids(10_000), [definition], Settings(), at=AT)
    again = assign_batch(ids(10_000).to_numpy(), [definition], Settings(), at=AT)
    assert first.equals(again)
    assert assign("c0000042", [definition], Settings(), at=AT) == assign(
        "c0000042", [definition], Settings(), at=AT
    )


# ------------------------------------------------------------------------- properties


@pytest.mark.parametrize("share", [0.05, 0.2])
def test_holdout_share_is_the_setting_within_binomial_tolerance(share: float) -> None:
    n = 200_000
    result = assign_batch(ids(n), [experiment()], ExperimentSettings(holdout_share=share), at=AT)
    held = int(result["holdout"].sum())
    assert within(held, n, share)
    # holdout customers are in no experiment: they get the default rate card
    assert result.filter(pl.col("holdout"))["experiment_key"].null_count() == held


def test_variant_shares_follow_the_weights() -> None:
    n = 200_000
    weights = (0.2, 0.3, 0.5)
    result = assign_batch(ids(n), [experiment(weights=weights)], NO_HOLDOUT, at=AT)
    counts = result["variant"].value_counts()
    by_name = dict(zip(counts["variant"], counts["count"], strict=True))
    for name, weight in zip(("control", "treatment", "third"), weights, strict=True):
        assert within(by_name[name], n, weight)


def test_variant_does_not_depend_on_the_layer_bucket_or_the_holdout() -> None:
    # the three hashes have their own salts: within any layer range the split is the same
    n = 200_000
    customers = ids(n)
    result = assign_batch(customers, [experiment()], NO_HOLDOUT, at=AT)
    layer = bucket_array("layer:rates", customers, 10_000)
    treated = (result["variant"] == "treatment").to_numpy()
    low = treated[layer < 5_000].mean()
    high = treated[layer >= 5_000].mean()
    assert abs(low - high) < 4.5 * math.sqrt(0.25 / (n / 2) * 2)


def test_experiments_of_one_layer_never_share_a_customer() -> None:
    # given two experiments holding halves of the layer, and one in another layer
    n = 100_000
    left = experiment("left", buckets=(0, 5_000))
    right = experiment("right", buckets=(5_000, 10_000))
    other = experiment("other", layer="email")

    # when each is assigned alone
    taken = {
        e.key: set(
            assign_batch(ids(n), [e], NO_HOLDOUT, at=AT)
            .filter(pl.col("experiment_key") == e.key)["customer_id"]
            .to_list()
        )
        for e in (left, right, other)
    }

    # then the layer's two share nobody and split it; the other layer is orthogonal
    assert not taken["left"] & taken["right"]
    assert len(taken["left"] | taken["right"]) == n
    assert within(len(taken["left"]), n, 0.5)
    assert within(len(taken["left"] & taken["other"]), n, 0.5)


def test_boundaries_follow_the_documented_rounding() -> None:
    assert variant_boundaries([0.5, 0.5], 10_000) == (5_000, 10_000)
    assert variant_boundaries([1 / 3, 1 / 3, 1 / 3], 10_000) == (3_333, 6_667, 10_000)
    assert variant_boundaries([0.0, 1.0], 100) == (0, 100)


def test_targeting_by_segment_and_lifecycle() -> None:
    # given a tiny hand-made customer frame, and an experiment for loyal at-risk customers
    customers = pl.DataFrame(
        {
            "customer_id": ["a1", "a2", "a3", "a4", "a5", "a6"],
            "segment": ["loyal", "loyal", "bargain", None, "loyal", "loyal"],
            "lifecycle": ["at_risk", "regular", "at_risk", "at_risk", None, "at_risk"],
        }
    )
    definition = experiment(segments=["loyal"], lifecycle=["at_risk"])

    # when assigned in a batch and one by one
    result = assign_batch(
        customers["customer_id"],
        [definition],
        NO_HOLDOUT,
        segments=customers["segment"],
        lifecycles=customers["lifecycle"],
        at=AT,
    )
    one = [
        assign(
            r["customer_id"],
            [definition],
            NO_HOLDOUT,
            segment=r["segment"],
            lifecycle=r["lifecycle"],
            at=AT,
        )
        for r in customers.iter_rows(named=True)
    ]

    # then only the loyal at-risk customers enter (unknowns stay out)
    assert result.filter(pl.col("experiment_key").is_not_null())["customer_id"].to_list() == [
        "a1",
        "a6",
    ]
    assert [a.experiment_key is not None for a in one] == [True, False, False, False, False, True]
    # and without segments given, a segment-targeted experiment takes nobody
    unknown = assign_batch(customers["customer_id"], [definition], NO_HOLDOUT, at=AT)
    assert unknown["experiment_key"].null_count() == customers.height


def test_only_running_experiments_inside_their_window_take_customers() -> None:
    definition = experiment()
    assert assign("c1", [definition], NO_HOLDOUT, at=AT).reason == Reason.EXPERIMENT
    for at in (datetime(2025, 6, 30, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC)):
        assert assign("c1", [definition], NO_HOLDOUT, at=at).reason == Reason.NO_EXPERIMENT
    for status in ("draft", "stopped"):
        stale = experiment(status=status)
        assert assign("c1", [stale], NO_HOLDOUT, at=AT).reason == Reason.NO_EXPERIMENT


# ------------------------------------------------------------------------- errors


def test_a_broken_definition_gives_control_with_the_error_stated() -> None:
    # given a running definition whose weights were broken after validation
    good = experiment()
    broken = good.model_copy(
        update={"variants": tuple(v.model_copy(update={"weight": 0.7}) for v in good.variants)}
    )

    # when a customer (and a batch) is assigned
    one = assign("c0000001", [good, broken], Settings(), at=AT)
    many = assign_batch(ids(1_000), [broken], Settings(), at=AT)

    # then the customer gets control, and the answer says why
    assert one.reason == Reason.ERROR
    assert (one.experiment_key, one.variant, one.holdout) == (None, None, False)
    assert one.error is not None
    assert "rate-boost" in one.error
    assert "sum to 1.4" in one.error
    assert many["reason"].unique().to_list() == ["error"]
    assert many["error"].unique().to_list() == [one.error]
    assert many["experiment_key"].null_count() == 1_000


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ({"layer_buckets": None}, "without layer buckets"),
        ({"layer_buckets": BucketRange(start=0, end=20_000)}, "outside [0, 10000)"),
    ],
)
def test_running_experiments_without_valid_buckets_are_errors(
    update: dict[str, object], words: str
) -> None:
    broken = experiment().model_copy(update=update)
    result = assign("c1", [broken], Settings(), at=AT)
    assert result.reason == Reason.ERROR
    assert words in (result.error or "")


def test_overlapping_experiments_of_one_layer_are_an_error_not_a_coin_toss() -> None:
    clash = [experiment("a", buckets=(0, 6_000)), experiment("b", buckets=(5_000, 10_000))]
    result = assign("c1", clash, Settings(), at=AT)
    assert result.reason == Reason.ERROR
    assert "'a' and 'b'" in (result.error or "")
    # disjoint targeting makes the same ranges fine
    apart = [
        experiment("a", buckets=(0, 6_000), segments=["loyal"]),
        experiment("b", buckets=(5_000, 10_000), segments=["bargain"]),
    ]
    assert assign("c1", apart, Settings(), at=AT).reason != Reason.ERROR


def test_missing_customer_ids_get_control_with_the_error() -> None:
    customers = pl.Series(["c1", None, "", "c4"])
    result = assign_batch(customers, [experiment()], NO_HOLDOUT, at=AT)
    assert result["reason"].to_list() == ["experiment", "error", "error", "experiment"]
    for value in (None, ""):
        one = assign(value, [experiment()], NO_HOLDOUT, at=AT)  # type: ignore[arg-type]
        assert one.reason == Reason.ERROR
        assert one.error == result["error"][1]


def test_bad_settings_or_inputs_give_control_for_everyone() -> None:
    broken = NO_HOLDOUT.model_copy(update={"holdout_share": 1.5})
    assert assign("c1", [experiment()], broken, at=AT).reason == Reason.ERROR
    result = assign_batch(ids(3), [experiment()], NO_HOLDOUT, segments=["a"], at=AT)
    assert result["reason"].to_list() == ["error"] * 3
    assert "segment has 1 values for 3 customers" in result["error"][0]
    floats = assign_batch(pl.Series([1.5, 2.5]), [experiment()], NO_HOLDOUT, at=AT)
    assert floats["reason"].to_list() == ["error"] * 2
