"""Every contract rule: start from a valid dataset, break one row, get exactly one message."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from cashback.contract import FOREIGN_KEYS, TABLES, TS, spec
from cashback.validation import (
    FIRST_ROWS_PER_RULE,
    ContractError,
    check_table,
    format_violation,
)
from tests.cashback.dataset_builder import (
    check,
    ts,
    valid_dataset,
    with_frame,
    with_row,
    with_values,
)

UNKNOWN = "zz-unknown"


@pytest.fixture(scope="module")
def dataset() -> dict[str, pl.DataFrame]:
    return valid_dataset()


def test_given_the_built_dataset_when_checked_then_every_table_satisfies_the_contract(
    dataset: dict[str, pl.DataFrame],
) -> None:
    report = check(dataset)

    assert set(dataset) == set(TABLES)
    assert all(frame.height >= 2 for frame in dataset.values())
    assert report.ok
    assert report.messages() == []
    assert report.total == 0


# ---------------------------------------------------------------- schema rules


@pytest.mark.parametrize("table", list(TABLES))
def test_given_a_table_without_its_last_column_then_missing_column_names_it(
    dataset: dict[str, pl.DataFrame], table: str
) -> None:
    column = spec(table).columns[-1].name
    broken = with_frame(dataset, table, dataset[table].drop(column))

    report = check(broken)

    assert report.messages() == [f"{table} column {column}: rule missing_column: column missing"]


def test_given_a_table_with_a_broken_schema_then_its_cross_table_rules_are_skipped(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # without customer_id every foreign key to customers would fail: they are not run
    broken = with_frame(dataset, "customers", dataset["customers"].drop("customer_id"))

    assert check(broken).messages() == [
        "customers column customer_id: rule missing_column: column missing"
    ]


@pytest.mark.parametrize(
    ("table", "column", "dtype", "expected"),
    [
        (
            "transactions",
            "amount",
            pl.String,
            "transactions column amount: rule dtype: expected dtype Float64, got String",
        ),
        (
            "offers",
            "validation_days",
            pl.Int64,
            "offers column validation_days: rule dtype: expected dtype Int32, got Int64",
        ),
        (
            "customers",
            "signup_ts",
            pl.Datetime("ns", "UTC"),
            (
                "customers column signup_ts: rule dtype: expected dtype "
                "Datetime(time_unit='us', time_zone='UTC'), "
                "got Datetime(time_unit='ns', time_zone='UTC')"
            ),
        ),
        (
            "offers",
            "tiers",
            pl.List(pl.Struct({"threshold": pl.Float64, "rate": pl.Float32})),
            (
                "offers column tiers: rule dtype: expected dtype "
                "List(Struct({'threshold': Float64, 'rate': Float64})), "
                "got List(Struct({'threshold': Float64, 'rate': Float32}))"
            ),
        ),
    ],
    ids=["float-as-string", "int32-as-int64", "utc-in-nanoseconds", "nested-field"],
)
def test_given_a_column_of_the_wrong_dtype_then_rule_dtype_names_both(
    dataset: dict[str, pl.DataFrame],
    table: str,
    column: str,
    dtype: pl.DataType,
    expected: str,
) -> None:
    frame = dataset[table].with_columns(pl.col(column).cast(dtype))

    assert check(with_frame(dataset, table, frame)).messages() == [expected]


TIMESTAMP_COLUMNS = [(t.name, c.name) for t in TABLES.values() for c in t.columns if c.dtype == TS]


@pytest.mark.parametrize(("table", "column"), TIMESTAMP_COLUMNS)
@pytest.mark.parametrize(
    ("zone", "shown"),
    [(None, "None"), ("Europe/Paris", "'Europe/Paris'")],
    ids=["naive", "paris"],
)
def test_given_timestamps_not_in_utc_then_rule_utc_names_the_column(
    dataset: dict[str, pl.DataFrame], table: str, column: str, zone: str | None, shown: str
) -> None:
    stamps = pl.col(column)
    moved = stamps.dt.replace_time_zone(None) if zone is None else stamps.dt.convert_time_zone(zone)
    frame = dataset[table].with_columns(moved)

    assert check(with_frame(dataset, table, frame)).messages() == [
        (
            f"{table} column {column}: rule utc: expected timestamps in UTC, "
            f"got Datetime(time_unit='us', time_zone={shown})"
        )
    ]


def test_given_extra_columns_then_they_are_ignored(dataset: dict[str, pl.DataFrame]) -> None:
    frame = dataset["customers"].with_columns(pl.lit("x").alias("notes"))

    assert check(with_frame(dataset, "customers", frame)).ok


# ---------------------------------------------------------------- one-column rules

NOT_NULL_COLUMNS = [(t.name, c.name) for t in TABLES.values() for c in t.columns if not c.nullable]


@pytest.mark.parametrize(("table", "column"), NOT_NULL_COLUMNS)
def test_given_a_null_in_a_required_column_then_rule_not_null_names_the_row(
    dataset: dict[str, pl.DataFrame], table: str, column: str
) -> None:
    broken = with_values(dataset, table, 2, **{column: None})

    report = check_table(spec(table), broken[table])

    assert report.messages() == [
        f"{table} row 2 column {column}: rule not_null: expected a value, got null"
    ]


def test_given_a_null_in_a_nullable_column_then_it_is_fine(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = with_values(dataset, "claims", 1, exposure_id=None, device_id=None, ip_hash=None)

    assert check(broken).ok


VOCAB_COLUMNS = [
    (t.name, c.name, c.vocab) for t in TABLES.values() for c in t.columns if c.vocab is not None
]


def test_every_enum_of_the_design_is_a_checked_vocabulary() -> None:
    checked = {(table, column) for table, column, _ in VOCAB_COLUMNS}

    assert checked == {
        ("transactions", "channel"),
        ("offers", "kind"),
        ("offers", "payout"),
        ("claims", "payout_method"),
        ("claim_labels", "label"),
        ("claim_labels", "abuse_type"),
        ("claim_labels", "source"),
        ("experiments", "status"),
    }


@pytest.mark.parametrize(("table", "column", "vocab"), VOCAB_COLUMNS)
def test_given_a_value_outside_the_vocabulary_then_rule_vocabulary_lists_the_allowed_values(
    dataset: dict[str, pl.DataFrame], table: str, column: str, vocab: Any
) -> None:
    broken = with_values(dataset, table, 1, **{column: "bogus"})

    allowed = ", ".join(v.value for v in vocab)
    assert check(broken).messages() == [
        f"{table} row 1 column {column}: rule vocabulary: expected one of {allowed}, got bogus"
    ]


def test_given_a_channel_outside_the_vocabulary_then_the_message_reads_well(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = with_values(dataset, "transactions", 3, channel="Online")

    assert check(broken).messages() == [
        (
            "transactions row 3 column channel: rule vocabulary: "
            "expected one of online, store, app, got Online"
        )
    ]


INF = float("inf")
NAN = float("nan")

ROW_CASES: list[Any] = [
    # finite: money columns and finite floats
    pytest.param(
        "transactions", 4, {"amount": INF},
        "transactions row 4 column amount: rule finite: expected a finite number, got inf",
        id="finite-amount-inf",
    ),
    pytest.param(
        "transactions", 4, {"amount": NAN},
        "transactions row 4 column amount: rule finite: expected a finite number, got NaN",
        id="finite-amount-nan",
    ),
    pytest.param(
        "merchants", 2, {"margin_rate": NAN},
        "merchants row 2 column margin_rate: rule finite: expected a finite number, got NaN",
        id="finite-margin",
    ),
    pytest.param(
        # reported once, by finite, not also by range
        "exposures", 3, {"rate": -INF},
        "exposures row 3 column rate: rule finite: expected a finite number, got -inf",
        id="finite-not-also-range",
    ),
    pytest.param(
        "exposures", 3, {"propensity": NAN},
        "exposures row 3 column propensity: rule finite: expected a finite number, got NaN",
        id="finite-propensity",
    ),
    pytest.param(
        "claims", 2, {"cashback_amount": INF},
        "claims row 2 column cashback_amount: rule finite: expected a finite number, got inf",
        id="finite-cashback",
    ),
    pytest.param(
        "outcomes", 2, {"value": -INF},
        "outcomes row 2 column value: rule finite: expected a finite number, got -inf",
        id="finite-outcome",
    ),
    # money_cents
    pytest.param(
        "transactions", 3, {"amount": 55.505},
        "transactions row 3 column amount: rule money_cents: "
        "expected at most two decimals, got 55.505",
        id="money-cents-amount",
    ),
    pytest.param(
        "claims", 3, {"cashback_amount": 0.199},
        "claims row 3 column cashback_amount: rule money_cents: "
        "expected at most two decimals, got 0.199",
        id="money-cents-cashback",
    ),
    # range
    pytest.param(
        "merchants", 1, {"margin_rate": 1.5},
        "merchants row 1 column margin_rate: rule range: expected a value in [0.0, 1.0], got 1.5",
        id="range-margin",
    ),
    pytest.param(
        "offers", 1, {"rate": -0.01},
        "offers row 1 column rate: rule range: expected a value in [0.0, 1.0], got -0.01",
        id="range-offer-rate",
    ),
    pytest.param(
        "offers", 5, {"validation_days": 400},
        "offers row 5 column validation_days: rule range: expected a value in [0, 365], got 400",
        id="range-validation-days",
    ),
    pytest.param(
        "exposures", 1, {"rate": 1.2},
        "exposures row 1 column rate: rule range: expected a value in [0.0, 1.0], got 1.2",
        id="range-exposure-rate",
    ),
    pytest.param(
        "exposures", 3, {"propensity": 0.0},
        "exposures row 3 column propensity: rule range: "
        "expected a value in [1e-9, 1.0], got 0.0",
        id="range-propensity",
    ),
    pytest.param(
        "claims", 2, {"amount": -55.5},
        "claims row 2 column amount: rule range: expected a value in [0.0, inf], got -55.5",
        id="range-claim-amount",
    ),
    pytest.param(
        "claims", 2, {"cashback_amount": -1.0},
        "claims row 2 column cashback_amount: rule range: "
        "expected a value in [0.0, inf], got -1.0",
        id="range-cashback",
    ),
    # nonzero
    pytest.param(
        "transactions", 4, {"amount": 0.0},
        "transactions row 4 column amount: rule nonzero: "
        "expected a non-zero amount (purchase > 0, return < 0)",
        id="nonzero",
    ),
    # return_link
    pytest.param(
        "transactions", 2, {"original_txn_id": None},
        "transactions row 2 column original_txn_id: rule return_link: "
        "a return (negative amount) needs original_txn_id",
        id="return-link-missing",
    ),
    pytest.param(
        "transactions", 3, {"original_txn_id": "t1"},
        "transactions row 3 column original_txn_id: rule return_link: "
        "a purchase (positive amount) must not have original_txn_id",
        id="return-link-on-purchase",
    ),
    # valid_window
    pytest.param(
        "exposures", 3, {"valid_until": ts(2)},
        "exposures row 3 column valid_until: rule valid_window: expected valid_until after ts",
        id="window-exposure-empty",
    ),
    pytest.param(
        "exposures", 3, {"valid_until": ts(1)},
        "exposures row 3 column valid_until: rule valid_window: expected valid_until after ts",
        id="window-exposure-reversed",
    ),
    pytest.param(
        "experiments", 1, {"end_ts": ts(1, month=1)},
        "experiments row 1 column end_ts: rule valid_window: expected end_ts after start_ts",
        id="window-experiment",
    ),
    pytest.param(
        "offers", 4, {"end_ts": ts(1, month=1)},
        "offers row 4 column end_ts: rule valid_window: expected end_ts after start_ts",
        id="window-offer",
    ),
    # offer_kind_fields
    pytest.param(
        "offers", 1, {"rate": None},
        "offers row 1 column rate: rule offer_kind_fields: a flat offer needs rate",
        id="kind-flat-rate",
    ),
    pytest.param(
        "offers", 2, {"tiers": None},
        "offers row 2 column tiers: rule offer_kind_fields: a tiered offer needs tiers",
        id="kind-tiered-null-tiers",
    ),
    pytest.param(
        "offers", 2, {"tiers": []},
        "offers row 2 column tiers: rule offer_kind_fields: a tiered offer needs tiers",
        id="kind-tiered-empty-tiers",
    ),
    pytest.param(
        "offers", 3, {"category": None},
        "offers row 3 column category: rule offer_kind_fields: a category offer needs category",
        id="kind-category",
    ),
    pytest.param(
        "offers", 4, {"start_ts": None},
        "offers row 4 column start_ts: rule offer_kind_fields: a seasonal offer needs start_ts",
        id="kind-seasonal-start",
    ),
    pytest.param(
        "offers", 4, {"end_ts": None},
        "offers row 4 column end_ts: rule offer_kind_fields: a seasonal offer needs end_ts",
        id="kind-seasonal-end",
    ),
    pytest.param(
        "offers", 5, {"tiers": None},
        "offers row 5 column tiers: rule offer_kind_fields: a cumulative offer needs tiers",
        id="kind-cumulative",
    ),
    # variant_weights
    pytest.param(
        "experiments", 2,
        {"variants": [
            {"name": "a", "weight": 0.5, "policy": "a"},
            {"name": "b", "weight": 0.4, "policy": "b"},
        ]},
        "experiments row 2 column variants: rule variant_weights: "
        "expected at least two variants with non-negative weights that sum to 1",
        id="weights-sum",
    ),
    pytest.param(
        "experiments", 2, {"variants": [{"name": "a", "weight": 1.0, "policy": "a"}]},
        "experiments row 2 column variants: rule variant_weights: "
        "expected at least two variants with non-negative weights that sum to 1",
        id="weights-single-variant",
    ),
    pytest.param(
        "experiments", 1,
        {"variants": [
            {"name": "a", "weight": 1.5, "policy": "a"},
            {"name": "b", "weight": -0.5, "policy": "b"},
        ]},
        "experiments row 1 column variants: rule variant_weights: "
        "expected at least two variants with non-negative weights that sum to 1",
        id="weights-negative",
    ),
    # cross-table rules on transactions and claims
    pytest.param(
        "transactions", 2, {"original_txn_id": "t404"},
        "transactions row 2 column original_txn_id: rule return_original: "
        "t404 is not a purchase in transactions",
        id="return-original-unknown",
    ),
    pytest.param(
        "transactions", 2, {"customer_id": "c2"},
        "transactions row 2 column original_txn_id: rule return_same_customer: "
        "t1 belongs to customer c1",
        id="return-same-customer",
    ),
    pytest.param(
        "transactions", 2, {"ts": ts(31, month=1)},
        "transactions row 2 column ts: rule return_after_purchase: "
        "return at 2025-01-31 12:00:00.000000+00:00 "
        "precedes its purchase at 2025-02-01 12:00:00.000000+00:00",
        id="return-after-purchase",
    ),
    pytest.param(
        "transactions", 2, {"amount": -100.01},
        "transactions row 2 column amount: rule return_exceeds_purchase: "
        "returns of t1 total 100.01 but the purchase was 100.0",
        id="return-exceeds",
    ),
    pytest.param(
        "claims", 3, {"txn_id": "t1"},
        "claims row 3 column txn_id: rule claim_same_customer: t1 belongs to customer c1",
        id="claim-same-customer",
    ),
    pytest.param(
        "exposures", 2, {"ts": ts(31, month=1)},
        "exposures row 2 column ts: rule exposure_overlap: "
        "customer c1 already has exposure e1 valid until 2025-02-01 12:00:00.000000+00:00",
        id="exposure-overlap",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("table", "row", "values", "expected"), ROW_CASES)
def test_given_one_broken_row_then_the_report_has_exactly_its_message(
    dataset: dict[str, pl.DataFrame],
    table: str,
    row: int,
    values: dict[str, Any],
    expected: str,
) -> None:
    broken = with_values(dataset, table, row, **values)

    report = check(broken)

    assert report.messages() == [expected]
    assert report.total == 1


# ---------------------------------------------------------------- keys


# (table, row of the repeat, key columns, key value, row of the first occurrence)
UNIQUE_CASES = [
    ("customers", 3, "customer_id", "c2", 2),
    ("merchants", 3, "merchant_id", "m2", 2),
    ("transactions", 5, "txn_id", "t4", 4),
    ("offers", 6, "offer_id", "o-cumulative", 5),
    ("claims", 4, "claim_id", "k3", 3),
    ("experiments", 3, "experiment_id", "x2", 2),
    ("claim_labels", 4, "claim_id/source", "k2/chargeback", 3),
    ("assignments", 4, "experiment_id/customer_id", "x2/c1", 3),
    ("outcomes", 4, "experiment_id/customer_id/metric", "x1/c2/retention_7", 3),
]


@pytest.mark.parametrize(
    ("table", "row", "columns", "key", "first"), UNIQUE_CASES, ids=[c[0] for c in UNIQUE_CASES]
)
def test_given_a_repeated_key_then_rule_unique_flags_the_repeat_and_points_at_the_first(
    dataset: dict[str, pl.DataFrame], table: str, row: int, columns: str, key: str, first: int
) -> None:
    broken = with_row(dataset, table)  # a copy of the last row

    message = f"rule unique: duplicate key {key} (first at row {first})"
    assert check(broken).messages() == [f"{table} row {row} column {columns}: {message}"]


def test_given_a_key_repeated_in_exposures_then_the_repeat_is_flagged(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # same exposure_id, a later window so that only the key is wrong
    broken = with_row(dataset, "exposures", ts=ts(20), valid_until=ts(27))

    assert check(broken).messages() == [
        "exposures row 4 column exposure_id: rule unique: duplicate key e3 (first at row 3)"
    ]


def test_given_a_composite_key_that_differs_in_one_part_then_it_is_unique(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # k2 already has a chargeback label; a review label of the same claim is another key
    broken = with_row(dataset, "claim_labels", source="review", decided_ts=ts(2, month=4))

    assert check(broken).ok


def test_given_a_key_three_times_then_both_repeats_point_at_the_first(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = with_row(with_row(dataset, "merchants"), "merchants")

    assert check(broken).messages() == [
        "merchants row 3 column merchant_id: rule unique: duplicate key m2 (first at row 2)",
        "merchants row 4 column merchant_id: rule unique: duplicate key m2 (first at row 2)",
    ]


# ---------------------------------------------------------------- foreign keys

# for each (child, column): the values of one more child row that only breaks that key,
# and the expected messages (a claim of an unknown customer also belongs to another's txn)
FOREIGN_KEY_CASES: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {
    ("transactions", "customer_id"): ({"txn_id": "t9", "customer_id": UNKNOWN}, []),
    ("transactions", "merchant_id"): ({"txn_id": "t9", "merchant_id": UNKNOWN}, []),
    ("exposures", "customer_id"): ({"exposure_id": "e9", "customer_id": UNKNOWN}, []),
    ("exposures", "offer_id"): (
        {"exposure_id": "e9", "ts": ts(20), "valid_until": ts(27), "offer_id": UNKNOWN},
        [],
    ),
    ("exposures", "experiment_id"): (
        {"exposure_id": "e9", "ts": ts(20), "valid_until": ts(27), "experiment_id": UNKNOWN},
        [],
    ),
    ("claims", "customer_id"): (
        {"claim_id": "k9", "customer_id": UNKNOWN},
        ["claims row 4 column txn_id: rule claim_same_customer: t4 belongs to customer c2"],
    ),
    ("claims", "txn_id"): ({"claim_id": "k9", "txn_id": UNKNOWN}, []),
    ("claims", "exposure_id"): ({"claim_id": "k9", "exposure_id": UNKNOWN}, []),
    ("claim_labels", "claim_id"): ({"claim_id": UNKNOWN}, []),
    ("assignments", "experiment_id"): ({"experiment_id": UNKNOWN}, []),
    ("outcomes", "experiment_id"): ({"experiment_id": UNKNOWN}, []),
}


def test_every_foreign_key_of_the_contract_has_a_case() -> None:
    assert set(FOREIGN_KEY_CASES) == {(child, column) for child, column, _, _ in FOREIGN_KEYS}


@pytest.mark.parametrize(("child", "column", "parent", "parent_column"), FOREIGN_KEYS)
def test_given_a_reference_to_a_missing_parent_then_rule_foreign_key_names_the_parent(
    dataset: dict[str, pl.DataFrame], child: str, column: str, parent: str, parent_column: str
) -> None:
    values, also = FOREIGN_KEY_CASES[(child, column)]
    broken = with_row(dataset, child, **values)
    row = broken[child].height

    # the report is ordered by table, rule, column, row
    assert check(broken).messages() == [
        *also,
        (
            f"{child} row {row} column {column}: rule foreign_key: "
            f"{UNKNOWN} not found in {parent}.{parent_column}"
        ),
    ]


def test_given_a_null_optional_reference_then_no_foreign_key_is_checked(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = with_values(dataset, "exposures", 1, experiment_id=None, variant=None)

    assert check(broken).ok


# ---------------------------------------------------------------- returns


def test_given_a_return_of_a_return_then_rule_return_original_flags_it(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = with_row(dataset, "transactions", txn_id="t5", customer_id="c1",
                      merchant_id="m1", ts=ts(6), amount=-10.0, original_txn_id="t2")  # fmt: skip

    assert check(broken).messages() == [
        (
            "transactions row 5 column original_txn_id: rule return_original: "
            "t2 is not a purchase in transactions"
        )
    ]


def _second_return(dataset: dict[str, pl.DataFrame], amount: float, day: int) -> dict[str, Any]:
    return with_row(dataset, "transactions", txn_id="t5", customer_id="c1", merchant_id="m1",
                    ts=ts(day), amount=amount, channel="online", original_txn_id="t1")  # fmt: skip


def test_given_two_partial_returns_that_add_up_to_the_purchase_then_they_are_fine(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # t1 is 100.00 and t2 already returns 40.00
    assert check(_second_return(dataset, -60.0, day=6)).ok


def test_given_two_partial_returns_that_together_exceed_then_the_second_one_is_flagged(
    dataset: dict[str, pl.DataFrame],
) -> None:
    broken = _second_return(dataset, -60.01, day=6)

    assert check(broken).messages() == [
        (
            "transactions row 5 column amount: rule return_exceeds_purchase: "
            "returns of t1 total 100.01 but the purchase was 100.0"
        )
    ]


def test_given_returns_out_of_file_order_then_the_one_that_crosses_in_time_is_flagged(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # the new return (row 5) happens before t2 (row 2): t2 is the one that goes over
    broken = _second_return(dataset, -60.01, day=3)

    assert check(broken).messages() == [
        (
            "transactions row 2 column amount: rule return_exceeds_purchase: "
            "returns of t1 total 100.01 but the purchase was 100.0"
        )
    ]


def test_given_a_full_return_then_it_is_fine(dataset: dict[str, pl.DataFrame]) -> None:
    assert check(with_values(dataset, "transactions", 2, amount=-100.0)).ok


# ---------------------------------------------------------------- exposures


def test_given_back_to_back_windows_then_they_do_not_overlap(
    dataset: dict[str, pl.DataFrame],
) -> None:
    exposures = dataset["exposures"]
    e1_until, e2_start = exposures["valid_until"][0], exposures["ts"][1]

    assert exposures["customer_id"][0] == exposures["customer_id"][1]
    assert e1_until == e2_start
    assert check(dataset).ok


def test_given_a_window_inside_an_earlier_long_one_then_each_later_window_is_flagged(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # e3 (c2) is valid from the 2nd to the 9th; e4 and e5 both start inside it, one after the
    # other: e5 is flagged too although e4 ended before it started
    broken = with_row(dataset, "exposures", exposure_id="e4", ts=ts(3), valid_until=ts(4))
    broken = with_row(broken, "exposures", exposure_id="e5", ts=ts(5), valid_until=ts(6))

    assert check(broken).messages() == [
        f"exposures row {row} column ts: rule exposure_overlap: "
        "customer c2 already has exposure e3 valid until 2025-02-09 12:00:00.000000+00:00"
        for row in (4, 5)
    ]


def test_given_exposures_out_of_file_order_then_the_later_window_is_flagged(
    dataset: dict[str, pl.DataFrame],
) -> None:
    overlapping = with_values(dataset, "exposures", 2, ts=ts(31, month=1))
    reversed_rows = overlapping["exposures"].reverse()  # e3, e2, e1

    assert check(with_frame(dataset, "exposures", reversed_rows)).messages() == [
        (
            "exposures row 2 column ts: rule exposure_overlap: "
            "customer c1 already has exposure e1 valid until 2025-02-01 12:00:00.000000+00:00"
        )
    ]


def test_given_overlapping_windows_of_different_customers_then_they_are_fine(
    dataset: dict[str, pl.DataFrame],
) -> None:
    # e3 (c2) spans the 2nd to the 9th, like e2 (c1)
    assert check(with_values(dataset, "exposures", 3, ts=ts(1))).ok


# ---------------------------------------------------------------- the report


def test_given_many_rows_breaking_one_rule_then_the_first_are_kept_and_all_counted(
    dataset: dict[str, pl.DataFrame],
) -> None:
    n = FIRST_ROWS_PER_RULE + 2
    frame = pl.concat([dataset["merchants"]] * 5).with_columns(
        pl.format("m{}", pl.int_range(pl.len())).alias("merchant_id"),
        pl.lit(2.0).alias("margin_rate"),
    )[:n]

    report = check({"merchants": frame})

    assert report.total == n
    assert len(report.messages()) == FIRST_ROWS_PER_RULE
    assert report.messages()[0] == (
        "merchants row 1 column margin_rate: rule range: expected a value in [0.0, 1.0], got 2.0"
    )
    assert report.counts.rows() == [("merchants", "margin_rate", "range", n)]
    assert f"(and {n - 1} more)" in report.summary()


def test_given_a_contract_error_then_its_text_names_the_source_and_the_violation(
    dataset: dict[str, pl.DataFrame],
) -> None:
    report = check(with_values(dataset, "transactions", 4, amount=INF))

    error = ContractError(report, "data/transactions.parquet")

    assert str(error) == (
        "1 contract violation(s) in data/transactions.parquet:\n"
        "  transactions row 4 column amount: rule finite: expected a finite number, got inf"
    )


def test_format_violation_of_a_whole_column_has_no_row() -> None:
    violation = {"table": "offers", "row": None, "column": "kind", "rule": "missing_column",
                 "message": "column missing"}  # fmt: skip

    assert format_violation(violation) == "offers column kind: rule missing_column: column missing"
