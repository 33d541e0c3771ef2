"""Rules backtests: volumes, precision and recall on the audit sample and the truth, compare."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from models.fraud.backtest import Estimate, backtest, compare, wilson
from models.fraud.rules import RulesError, parse_rules

OLD = """\
version: 1
rules:
  - {name: big, kind: amount, field: amount, op: ">", value: 100, action: review}
  - {name: receipt, kind: receipt_reuse, action: block}
lists:
  allow: {customer_id: [vip]}
"""
NEW = """\
version: 1
rules:
  - {name: big, kind: amount, field: amount, op: ">", value: 300, action: review}
  - {name: receipt, kind: receipt_reuse, action: block}
  - {name: cash, kind: amount, field: cashback_amount, op: ">", value: 10.5, action: review}
lists:
  allow: {customer_id: [vip]}
"""
DAY = datetime(2025, 3, 1, tzinfo=UTC)

# claim number: (amount, receipt reused, customer, label, label source, true fraud)
CLAIMS: dict[int, tuple[float, bool, str, str | None, str | None, bool]] = {
    1: (500.0, False, "c1", "fraud", "audit", True),
    2: (200.0, False, "c2", "legit", "audit", False),
    3: (200.0, False, "c3", None, None, True),
    4: (50.0, True, "c4", "fraud", "audit", True),
    5: (500.0, True, "c5", "fraud", "chargeback", True),
    6: (50.0, False, "c6", "fraud", "audit", True),
    7: (50.0, False, "c7", "legit", "audit", False),
    8: (50.0, False, "c8", "legit", "audit", False),
    9: (50.0, False, "c9", "legit", "review", False),
    10: (500.0, False, "vip", "fraud", "audit", True),
    11: (50.0, False, "c11", None, None, True),
    12: (50.0, False, "c12", "fraud", "audit+chargeback", True),
}


def scored() -> pl.DataFrame:
    """The claims, on two days; claim k has a cashback of k."""
    rows = [
        {
            "claim_id": f"k{k}",
            "ts": DAY + timedelta(hours=3 * k),
            "customer_id": customer,
            "amount": amount,
            "cashback_amount": float(k),
            "receipt_seen_before": receipt,
            "label": label,
            "label_source": source,
            "is_fraud": fraud,
        }
        for k, (amount, receipt, customer, label, source, fraud) in CLAIMS.items()
    ]
    return pl.DataFrame(rows)


def flagged_by(rule: str, k: int) -> bool:
    """The rules of OLD / NEW written out by hand, for the independent count."""
    amount, receipt, customer, *_ = CLAIMS[k]
    vip = customer == "vip"
    if rule == "old":
        return receipt or (amount > 100 and not vip)
    return receipt or (not vip and (amount > 300 or float(k) > 10.5))  # cashback k


def expected(flags: set[int]) -> dict[str, tuple[int, int]]:
    """(hits, n) of precision and recall, counted in plain Python."""
    audited = {k for k, c in CLAIMS.items() if c[4] is not None and "audit" in c[4]}
    audit_frauds = {k for k in audited if CLAIMS[k][3] == "fraud"}
    true_frauds = {k for k, c in CLAIMS.items() if c[5]}
    return {
        "audit_precision": (len(flags & audit_frauds), len(flags & audited)),
        "audit_recall": (len(flags & audit_frauds), len(audit_frauds)),
        "truth_precision": (len(flags & true_frauds), len(flags)),
        "truth_recall": (len(flags & true_frauds), len(true_frauds)),
    }


def estimates(row: Any) -> dict[str, tuple[int, int]]:
    return {
        m: (getattr(row, m).hits, getattr(row, m).n)
        for m in ("audit_precision", "audit_recall", "truth_precision", "truth_recall")
    }


def test_wilson_interval_matches_the_textbook_values() -> None:
    # given 8 successes in 10 trials, and none at all
    # when the 95 % Wilson intervals are computed
    low, high = wilson(8, 10)
    # then they match the published values, and an empty sample has none
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))
    assert wilson(0, 5)[0] == 0.0
    assert wilson(5, 5)[1] == 1.0


def test_backtest_counts_and_estimates_match_a_hand_count() -> None:
    # given twelve hand-made claims over two days and two rules with an allow list
    rules = parse_rules(OLD, "old.yaml")
    # when they are backtested
    report = backtest(rules, scored())
    # then the overall row matches the count done by hand
    flags = {k for k in CLAIMS if flagged_by("old", k)}
    assert flags == {1, 2, 3, 4, 5}
    overall = report.flagged
    assert (overall.hits, overall.review, overall.block) == (5, 3, 2)
    assert overall.share == pytest.approx(5 / 12)
    assert report.days == 2.0
    assert overall.per_day == pytest.approx(2.5)
    assert overall.cashback == pytest.approx(1 + 2 + 3 + 4 + 5)
    assert estimates(overall) == expected(flags)
    assert estimates(overall)["audit_precision"] == (2, 3)
    assert overall.audit_precision.interval == wilson(2, 3)
    assert (report.claims, report.audited, report.audited_frauds, report.true_frauds) == (
        12,
        8,
        5,
        8,
    )
    # and each rule's row describes the claims it fired on
    big = report.rule("big")
    assert (big.hits, big.review, big.block, big.allowlisted, big.only) == (5, 3, 1, 1, 3)
    assert estimates(big)["audit_precision"] == (2, 3)  # claims 1, 2 and 10 are audited
    receipt = report.rule("receipt")
    assert (receipt.hits, receipt.block, receipt.only) == (2, 2, 1)
    assert estimates(receipt)["audit_recall"] == (1, 5)
    allow = report.rule("allow_list.customer_id")
    assert (allow.hits, allow.allowlisted, allow.action) == (1, 1, "allowlisted")
    # and the blocked and reviewed claims are reported apart
    block = next(r for r in report.overall if r.name == "block")
    assert estimates(block)["truth_precision"] == (2, 2)


def test_numeric_labels_give_the_same_report() -> None:
    # given the same claims labelled 1 / 0 (as models.fraud.dataset does) and no truth
    claims = scored().with_columns(
        pl.col("label").replace_strict({"fraud": 1, "legit": 0}, return_dtype=pl.Int8)
    )
    rules = parse_rules(OLD, "old.yaml")
    # when both are backtested
    text_labels = backtest(rules, scored().drop("is_fraud"))
    numeric = backtest(rules, claims.drop("is_fraud"))
    # then the reports agree, and without the truth there are no truth estimates
    assert numeric == text_labels
    assert numeric.true_frauds is None
    assert numeric.flagged.truth_precision is None


def test_the_report_renders_as_text_naming_the_audit_sample() -> None:
    # given a backtest
    report = backtest(parse_rules(OLD, "old.yaml"), scored())
    # when it is rendered
    text = report.to_text(width=160)
    # then it names the period, the audit sample and each rule, with the estimates
    assert "Backtest of old.yaml on 12 claims in [2025-03-01, 2025-03-03) (2.0 days)" in text
    assert "audit sample: n=8 claims, 5 frauds; truth: 8 frauds" in text
    assert "precision (audit sample)" in text
    assert f"0.67 [{wilson(2, 3)[0]:.2f}-{wilson(2, 3)[1]:.2f}] n=3" in text
    for name in ("all flagged", "big", "receipt", "allow_list.customer_id"):
        assert name in text
    assert Estimate(2, 3, "audit").text().endswith("(audit sample, n=3)")
    assert report.to_frame().height == 3 + 3


def test_compare_lists_newly_and_no_longer_flagged_claims() -> None:
    # given the rules in place and a candidate that raises `big`, adds `cash`
    old, new = parse_rules(OLD, "old.yaml"), parse_rules(NEW, "new.yaml")
    # when the change is backtested
    change = compare(old, new, scored())
    # then the moved claims are those the hand count moves
    before = {k for k in CLAIMS if flagged_by("old", k)}
    after = {k for k in CLAIMS if flagged_by("new", k)}
    assert change.newly_flagged["claim_id"].to_list() == [f"k{k}" for k in sorted(after - before)]
    assert change.no_longer_flagged["claim_id"].to_list() == [
        f"k{k}" for k in sorted(before - after)
    ]
    assert change.newly_flagged["claim_id"].to_list() == ["k11", "k12"]
    assert change.newly_flagged["new_rule_hits"].to_list() == [["cash"], ["cash"]]
    assert change.newly_flagged["old_action"].to_list() == ["allow", "allow"]
    assert change.action_changed.height == 0
    assert (change.added, change.removed, change.changed) == (("cash",), (), ("big",))
    # and the change in precision and recall is the difference of the hand counts
    old_counts, new_counts = expected(before), expected(after)
    for metric in ("audit_precision", "audit_recall", "truth_precision", "truth_recall"):
        (a, n), (b, m) = old_counts[metric], new_counts[metric]
        assert change.delta(metric) == pytest.approx(b / m - a / n)
    assert change.delta("hits") == len(after) - len(before)
    # and the text says what the change does
    text = change.to_text(width=160)
    assert "rules added: cash; removed: none; changed: big" in text
    assert "2 claims newly flagged (audit sample: 1 fraud, 0 legit; truth: 2 fraud)" in text
    assert "newly flagged" in text
    assert "k11" in text


def test_claims_without_labels_columns_are_refused() -> None:
    # given claims without label_source
    # when backtested
    # then the error names the missing column
    with pytest.raises(RulesError, match="lack label_source"):
        backtest(parse_rules(OLD, "old.yaml"), scored().drop("label_source"))
