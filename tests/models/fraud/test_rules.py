"""Fraud rules: each kind fires exactly where it should, lists take precedence, load errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cashback.errors import CashbackError
from cashback.settings import FeatureSettings
from features.catalog import service_features
from features.training import CLAIM_COLUMNS
from models.fraud.rules import (
    ALLOW,
    ALLOWLISTED,
    BLOCK,
    REVIEW,
    RuleResult,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]

RULES = """\
version: 1
rules:
  - {name: customer_burst, kind: velocity, entity: customer, window: 1h, max_claims: 3,
     action: review}
  - {name: device_week, kind: velocity, entity: device, window: 7d, max_claims: 10,
     action: review}
  - {name: ip_day, kind: velocity, entity: ip, window: 24h, max_claims: 4, action: review}
  - {name: shared_device, kind: shared, entity: device, max_customers: 3, action: block}
  - {name: shared_ip, kind: shared, entity: ip, window: 30d, max_customers: 5, action: review}
  - {name: big_cashback, kind: amount, field: cashback_amount, op: ">", value: 20,
     action: review}
  - {name: basket_outlier, kind: amount, field: amount_vs_avg_basket, op: ">=", value: 5,
     action: review}
  - {name: tiny_share, kind: amount, field: cashback_share, op: "<=", value: 0.001,
     action: review}
  - {name: young_big, kind: new_account, max_tenure_days: 7, min_amount: 150, action: review}
  - {name: young_device, kind: new_account, entity: device, max_tenure_days: 2,
     action: review}
  - {name: receipt, kind: receipt_reuse, action: block}
  - {name: switched_off, kind: receipt_reuse, action: block, enabled: false}
lists:
  block: {device_id: [dev-bad], receipt_hash: [r-bad]}
  allow: {customer_id: [c-vip], ip_hash: [ip-office]}
"""

QUIET: dict[str, Any] = {
    "claim_id": "k1",
    "customer_id": "c1",
    "device_id": "dev1",
    "ip_hash": "ip1",
    "receipt_hash": "r1",
    "customer_claims_1h": 1,
    "device_claims_1h": 1,
    "ip_claims_1h": 1,
    "device_claims_24h": 0,
    "device_claims_7d": 0,
    "ip_claims_24h": 0,
    "ip_claims_7d": 0,
    "device_customers_30d": 1,
    "ip_customers_30d": 1,
    "device_youngest_account_days": 400.0,
    "ip_youngest_account_days": 400.0,
    "tenure_days": 400.0,
    "amount": 50.0,
    "cashback_amount": 1.0,
    "amount_vs_avg_basket": 1.0,
    "cashback_share": 0.02,
    "receipt_seen_before": False,
}


def _dtype(value: object) -> type[pl.DataType]:
    if isinstance(value, str):
        return pl.String
    if isinstance(value, bool):
        return pl.Boolean
    return pl.Int64 if isinstance(value, int) else pl.Float64


SCHEMA = {k: _dtype(v) for k, v in QUIET.items()}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return parse_rules(RULES, "test.yaml")


def frame(*changes: dict[str, Any]) -> pl.DataFrame:
    """One quiet claim per change, with the change applied."""
    return pl.DataFrame([QUIET | c for c in changes], schema=SCHEMA)


def both(rules: RuleSet, change: dict[str, Any]) -> tuple[RuleResult, RuleResult]:
    """The vectorized and the single-claim verdicts on one claim."""
    row = rules.evaluate(frame(change)).row(0, named=True)
    return RuleResult(tuple(row["rule_hits"]), row["rule_action"]), rules.evaluate_one(
        QUIET | change
    )


@pytest.mark.parametrize(
    ("change", "hits", "action"),
    [
        ({}, (), ALLOW),
        ({"customer_claims_1h": 4}, ("customer_burst",), REVIEW),
        ({"customer_claims_1h": 3}, (), ALLOW),
        ({"device_claims_7d": 11}, ("device_week",), REVIEW),
        ({"device_claims_7d": 10, "device_claims_1h": 50}, (), ALLOW),
        ({"ip_claims_24h": 5}, ("ip_day",), REVIEW),
        ({"ip_claims_24h": 4, "ip_claims_7d": 99}, (), ALLOW),
        ({"device_customers_30d": 4}, ("shared_device",), BLOCK),
        ({"device_customers_30d": 3}, (), ALLOW),
        ({"ip_customers_30d": 6}, ("shared_ip",), REVIEW),
        ({"ip_customers_30d": 5}, (), ALLOW),
        ({"cashback_amount": 20.01}, ("big_cashback",), REVIEW),
        ({"cashback_amount": 20.0}, (), ALLOW),
        ({"amount_vs_avg_basket": 5.0}, ("basket_outlier",), REVIEW),
        ({"amount_vs_avg_basket": 4.99}, (), ALLOW),
        ({"cashback_share": 0.001}, ("tiny_share",), REVIEW),
        ({"cashback_share": 0.0011}, (), ALLOW),
        ({"tenure_days": 7.0, "amount": 150.0}, ("young_big",), REVIEW),
        ({"tenure_days": 7.01, "amount": 500.0}, (), ALLOW),
        ({"tenure_days": 1.0, "amount": 149.99}, (), ALLOW),
        ({"device_youngest_account_days": 2.0}, ("young_device",), REVIEW),
        ({"device_youngest_account_days": 2.5, "ip_youngest_account_days": 0.0}, (), ALLOW),
        ({"receipt_seen_before": True}, ("receipt",), BLOCK),
    ],
)
def test_each_kind_of_rule_fires_exactly_where_it_should(
    rules: RuleSet, change: dict[str, Any], hits: tuple[str, ...], action: str
) -> None:
    # given a quiet claim with one feature moved to (or just short of) a rule's threshold
    # when the rules are evaluated on a frame and on the claim alone
    vectorized, single = both(rules, change)
    # then exactly the expected rule fires, with its action, on both paths
    assert vectorized == RuleResult(hits, action)
    assert single == vectorized


@pytest.mark.parametrize(
    ("change", "hits", "action"),
    [
        # a block list blocks
        ({"device_id": "dev-bad"}, ("block_list.device_id",), BLOCK),
        ({"receipt_hash": "r-bad"}, ("block_list.receipt_hash",), BLOCK),
        # an allow list overrides review rules
        (
            {"customer_id": "c-vip", "customer_claims_1h": 9},
            ("customer_burst", "allow_list.customer_id"),
            ALLOWLISTED,
        ),
        ({"ip_hash": "ip-office"}, ("allow_list.ip_hash",), ALLOWLISTED),
        # but neither block-list entries nor block rules
        (
            {"customer_id": "c-vip", "device_id": "dev-bad"},
            ("block_list.device_id", "allow_list.customer_id"),
            BLOCK,
        ),
        (
            {"ip_hash": "ip-office", "receipt_seen_before": True},
            ("receipt", "allow_list.ip_hash"),
            BLOCK,
        ),
        # a block rule wins over review rules; hits keep the file order
        (
            {"receipt_seen_before": True, "customer_claims_1h": 9, "cashback_amount": 50.0},
            ("customer_burst", "big_cashback", "receipt"),
            BLOCK,
        ),
    ],
)
def test_lists_and_actions_follow_the_documented_precedence(
    rules: RuleSet, change: dict[str, Any], hits: tuple[str, ...], action: str
) -> None:
    # given claims on block / allow lists, some also hitting rules
    # when the rules are evaluated
    vectorized, single = both(rules, change)
    # then block lists and block rules beat the allow list, which beats review rules
    assert vectorized == RuleResult(hits, action)
    assert single == vectorized


def test_null_and_nan_features_never_fire(rules: RuleSet) -> None:
    # given a claim whose features are all unknown (null), and one with NaN floats that
    # would pass every threshold if NaN compared as a number
    unknown = dict.fromkeys(QUIET, None) | {"claim_id": "k0"}
    nan = {k: math.nan for k, v in QUIET.items() if isinstance(v, float)}
    claims = pl.concat([pl.DataFrame([unknown], schema=SCHEMA), frame(nan)])
    # when the rules are evaluated on both paths
    out = rules.evaluate(claims)
    # then nothing fires
    assert out["rule_hits"].to_list() == [[], []]
    assert out["rule_action"].to_list() == [ALLOW, ALLOW]
    assert rules.evaluate_one(unknown) == RuleResult((), ALLOW)
    assert rules.evaluate_one(QUIET | nan) == RuleResult((), ALLOW)
    assert rules.evaluate_one({}) == RuleResult((), ALLOW)


def test_a_lazy_frame_gets_the_same_columns_lazily(rules: RuleSet) -> None:
    # given claims as a lazy frame
    claims = frame({}, {"customer_claims_1h": 4}, {"device_id": "dev-bad"})
    # when the rules are evaluated on it
    out = rules.evaluate(claims.lazy())
    # then the result is lazy, with the same rows and verdicts as the eager path
    assert isinstance(out, pl.LazyFrame)
    collected = out.collect()
    assert collected.equals(rules.evaluate(claims))
    assert collected.schema["rule_hits"] == pl.List(pl.String)
    assert collected["rule_action"].to_list() == [ALLOW, REVIEW, BLOCK]


def test_evaluate_one_agrees_with_the_vectorized_rules_on_random_claims(
    rules: RuleSet,
) -> None:
    # given a few hundred random claims around every threshold, with nulls and NaNs
    rng = np.random.default_rng(7)
    n = 400

    def ints(high: int) -> list[int | None]:
        return [None if rng.random() < 0.1 else int(v) for v in rng.integers(0, high, n)]

    def floats(high: float) -> list[float | None]:
        values = rng.uniform(0, high, n)
        values[rng.random(n) < 0.05] = np.nan
        return [None if rng.random() < 0.1 else float(v) for v in values]

    def ids(prefix: str, special: str) -> list[str | None]:
        return [
            None if r < 0.05 else special if r < 0.15 else f"{prefix}{i}"
            for i, r in enumerate(rng.random(n))
        ]

    claims = pl.DataFrame(
        {
            "claim_id": [f"k{i}" for i in range(n)],
            "customer_id": ids("c", "c-vip"),
            "device_id": ids("dev", "dev-bad"),
            "ip_hash": ids("ip", "ip-office"),
            "receipt_hash": ids("r", "r-bad"),
            "customer_claims_1h": ints(6),
            "device_claims_1h": ints(6),
            "ip_claims_1h": ints(6),
            "device_claims_24h": ints(8),
            "device_claims_7d": ints(14),
            "ip_claims_24h": ints(8),
            "ip_claims_7d": ints(14),
            "device_customers_30d": ints(6),
            "ip_customers_30d": ints(8),
            "device_youngest_account_days": floats(6),
            "ip_youngest_account_days": floats(6),
            "tenure_days": floats(14),
            "amount": floats(300),
            "cashback_amount": floats(30),
            "amount_vs_avg_basket": floats(8),
            "cashback_share": floats(0.003),
            "receipt_seen_before": [None if r < 0.1 else bool(r > 0.9) for r in rng.random(n)],
        },
        schema=SCHEMA,
    )
    # when both paths evaluate them
    out = rules.evaluate(claims)
    single = [rules.evaluate_one(row) for row in claims.to_dicts()]
    # then they agree on every claim, and the sample exercised every action
    assert [list(r.hits) for r in single] == out["rule_hits"].to_list()
    assert [r.action for r in single] == out["rule_action"].to_list()
    assert set(out["rule_action"]) == {ALLOW, ALLOWLISTED, REVIEW, BLOCK}


def test_required_features_and_missing_columns(rules: RuleSet) -> None:
    # given the test rules (one of them disabled)
    # when asked what they read
    needed = rules.required_features
    # then they list each column once, in first-use order, lists last
    assert needed == (
        "customer_claims_1h",
        "device_claims_7d",
        "ip_claims_24h",
        "device_customers_30d",
        "ip_customers_30d",
        "cashback_amount",
        "amount_vs_avg_basket",
        "cashback_share",
        "tenure_days",
        "amount",
        "device_youngest_account_days",
        "receipt_seen_before",
        "device_id",
        "receipt_hash",
        "customer_id",
        "ip_hash",
    )
    assert "switched_off" not in rules.names
    # and a frame without some of them is refused, naming them
    with pytest.raises(RulesError, match=r"lack: tenure_days, amount$"):
        rules.evaluate(frame({}).drop("tenure_days", "amount"))


def test_an_empty_rule_set_allows_everything() -> None:
    # given no rules
    rules = RuleSet.empty()
    # when evaluated
    out = rules.evaluate(frame({}, {"receipt_seen_before": True}))
    # then every claim is allowed with no hits
    assert out["rule_hits"].to_list() == [[], []]
    assert out.schema["rule_hits"] == pl.List(pl.String)
    assert out["rule_action"].to_list() == [ALLOW, ALLOW]
    assert rules.evaluate_one(QUIET) == RuleResult((), ALLOW)
    assert rules.required_features == ()


def test_the_shipped_example_loads_and_reads_only_fraud_v1_columns() -> None:
    # given the example rules file
    path = PROJECT_ROOT / "config" / "fraud_rules.yaml"
    # when it is loaded
    rules = load_rules(path)
    # then it has a rule of every kind, and reads only what the fraud_v1 rows carry
    kinds = {r.kind for r in rules.spec.rules}
    assert kinds == {"velocity", "shared", "amount", "new_account", "receipt_reuse"}
    available = {*service_features("fraud_v1", FeatureSettings()), *CLAIM_COLUMNS}
    available |= {"customer_id"}
    assert set(rules.required_features) <= available


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert isinstance(caught.value, CashbackError)
    return str(caught.value).replace(str(path), "x.yaml")


VELOCITY = """\
version: 1
rules:
  - name: device_burst
    kind: velocity
    entity: device
    window: 1h
    max_claims: 5
    action: review
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VELOCITY + "    colour: red\n",
            (
                "x.yaml:9: rules[0].colour: unknown field 'colour' (known: kind, entity, window, "
                "max_claims, name, action, description, enabled)"
            ),
        ),
        (
            VELOCITY + "  - {name: big, kind: amount, field: amount, op: '=>', value: 200,"
            " action: review}\n",
            "x.yaml:9: rules[1].op: unknown op '=>' (known: >, >=, <, <=)",
        ),
        (
            VELOCITY.replace("window: 1h", "window: 2h"),
            "x.yaml:6: rules[0].window: unknown window '2h' for entity device (known: 1h, 24h, 7d)",
        ),
        (
            VELOCITY.replace("entity: device", "entity: customer").replace("1h", "24h"),
            "x.yaml:6: rules[0].window: unknown window '24h' for entity customer (known: 1h)",
        ),
        (
            VELOCITY.replace("max_claims: 5", "max_claims: five"),
            "x.yaml:7: rules[0].max_claims: expected an integer, got text 'five'",
        ),
        (
            VELOCITY.replace("max_claims: 5", "max_claims: 5.5"),
            "x.yaml:7: rules[0].max_claims: expected an integer, got float 5.5",
        ),
        (
            VELOCITY + "  - name: device_burst\n    kind: receipt_reuse\n    action: block\n",
            "x.yaml:9: rules[1].name: duplicate rule name 'device_burst' (first at line 3)",
        ),
        (
            VELOCITY.replace("kind: velocity", "kind: list"),
            (
                "x.yaml:4: rules[0].kind: unknown kind 'list' (known: velocity, shared, amount, "
                "new_account, receipt_reuse); block and allow lists go under `lists:`"
            ),
        ),
        (
            VELOCITY.replace("entity: device", "entity: phone"),
            "x.yaml:5: rules[0].entity: unknown entity 'phone' (known: customer, device, ip)",
        ),
        (
            VELOCITY.replace("    max_claims: 5\n", ""),
            "x.yaml:3: rules[0].max_claims: missing field 'max_claims'",
        ),
        (
            VELOCITY + "lists:\n  block:\n    device: [d1]\n",
            (
                "x.yaml:11: lists.block.device: unknown field 'device' "
                "(known: customer_id, device_id, ip_hash, receipt_hash)"
            ),
        ),
        (VELOCITY.replace("version: 1", "version: 2"), "x.yaml:1: version: unknown version 2"),
        ("", "x.yaml: the rules file is empty"),
        ("# only a comment\n", "x.yaml: the rules file is empty"),
        ("- a\n- b\n", "x.yaml:1: expected a mapping with `version` and `rules`, got a list"),
        ("version: 1\nrules: [\n", "x.yaml:3: not valid YAML"),
        ("version: 1\nrules: []\nrules: []\n", "x.yaml:3: rules: repeated key (first at line 2)"),
    ],
)
def test_load_errors_name_the_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    # given a rules file with one problem
    # when it is loaded
    error = _error(tmp_path, text)
    # then the error names the file, the line and the field
    assert error.startswith(message)


def test_every_problem_of_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    # given a file with a wrong type on line 13 and an unknown window on line 6
    text = VELOCITY.replace("window: 1h", "window: 2h") + (
        "  - name: big\n    kind: amount\n    field: amount\n    op: '>'\n    value: '200'\n"
        "    action: review\n"
    )
    # when it is loaded
    lines = _error(tmp_path, text).splitlines()
    # then both are reported, one line each, in file order
    assert lines == [
        "x.yaml:6: rules[0].window: unknown window '2h' for entity device (known: 1h, 24h, 7d)",
        "x.yaml:13: rules[1].value: expected a number, got text '200'",
    ]


def test_a_missing_rules_file_is_a_user_error(tmp_path: Path) -> None:
    # given no file
    # when it is loaded
    # then the error says so
    with pytest.raises(RulesError, match=r"nope\.yaml: rules file not found"):
        load_rules(tmp_path / "nope.yaml")
