"""What a rule set would have done on past claims, and what a change of rules would change.

`backtest(rules, scored)` evaluates the rules on claims with their features and labels and
reports, overall (every flagged claim, and the blocked and reviewed ones apart) and per rule
(and per list):

- volume: claims hit, their final action (review / block / allowlisted), claims hit by that
  rule alone, share of claims, claims per day, cashback amount at stake;
- quality on the audit sample: precision (frauds among the audited claims hit) and recall
  (audited frauds hit), with a 95 % Wilson interval and the sample size. Audits are a random
  sample of claims, so these describe every claim; chargebacks and reviews do not (they are
  labels of claims already suspected), and unlabelled claims are unknown, never legit. Rule
  hits are never labels;
- with the simulator's truth (`is_fraud`), precision and recall over every claim.

A rule's row describes the claims it fired on; for an allow list, "precision" is the fraud
share of the claims it lets through. The overall rows describe the final `rule_action`.

`compare(old, new, scored)` backtests two rule sets on the same claims and lists the claims
newly flagged and no longer flagged, the rules added, removed or changed, and the change in
precision and recall: what deploying the new rules would have done.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from models.fraud.rules import ALLOWLISTED, BLOCK, FLAGGING, REVIEW, RulesError, RuleSet

Z95 = 1.959963984540054
ALL = "all flagged"
LABEL = "label"
SOURCE = "label_source"
TRUTH = "is_fraud"
AUDIT = "audit"
DETAIL_COLUMNS = ("claim_id", "ts", "customer_id", "cashback_amount")


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits / n (nan, nan without any trial)."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Estimate:
    """A proportion `hits / n` on a named sample, with its 95 % Wilson interval.

    Attributes:
        hits: successes (e.g. frauds among the audited claims hit).
        n: trials (e.g. audited claims hit).
        sample: `audit` (the random audit sample) or `truth` (every claim, simulator only).
    """

    hits: int
    n: int
    sample: str

    @property
    def value(self) -> float:
        """The proportion hits / n (nan when n is 0)."""
        return self.hits / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The 95 % Wilson interval."""
        return wilson(self.hits, self.n)

    def text(self) -> str:
        """E.g. `0.74 [0.61-0.84] (audit sample, n=35)`; `-` when n is 0."""
        if not self.n:
            return f"- ({self.sample}{' sample' if self.sample == AUDIT else ''}, n=0)"
        if self.sample == AUDIT:
            low, high = self.interval
            return f"{self.value:.2f} [{low:.2f}-{high:.2f}] (audit sample, n={self.n:,})"
        return f"{self.value:.3f} (truth, n={self.n:,})"

    def short(self) -> str:
        """E.g. `0.74 [0.61-0.84] n=35` (the interval for the audit sample only)."""
        if not self.n:
            return "- n=0"
        if self.sample == AUDIT:
            low, high = self.interval
            return f"{self.value:.2f} [{low:.2f}-{high:.2f}] n={self.n:,}"
        return f"{self.value:.3f} n={self.n:,}"


@dataclass(frozen=True)
class RuleStats:
    """What one rule (or list, or the rule set as a whole) did over the period.

    Attributes:
        name: the rule or list (`block_list.device_id`), or `all flagged`, `block`, `review`.
        action: what it asks for (review, block, allowlisted), or the overall row's action.
        hits: claims it fired on (overall rows: claims with that final action).
        review: of them, claims whose final action is review.
        block: of them, claims blocked.
        allowlisted: of them, claims the allow list let through.
        only: of them, claims no other rule or list hit (None for the overall rows).
        share: hits / claims.
        per_day: hits per day.
        cashback: cashback amount of the hits.
        audit_precision: frauds among the audited hits.
        audit_recall: hits among the audited frauds.
        truth_precision: frauds among the hits, by the simulator's truth (None without it).
        truth_recall: hits among every true fraud (None without the truth).
    """

    name: str
    action: str
    hits: int
    review: int
    block: int
    allowlisted: int
    only: int | None
    share: float
    per_day: float
    cashback: float
    audit_precision: Estimate
    audit_recall: Estimate
    truth_precision: Estimate | None
    truth_recall: Estimate | None


@dataclass(frozen=True)
class BacktestReport:
    """A rule set's backtest.

    Attributes:
        source: the rules file.
        start: first instant of the period (UTC).
        end: end of the period, excluded.
        claims: claims in the period.
        audited: of them, in the audit sample.
        audited_frauds: audited claims labelled fraud.
        true_frauds: frauds by the simulator's truth (None without it).
        overall: `all flagged`, `block` and `review` rows.
        rules: one row per enabled rule (file order), then per non-empty list.
        comparison: against a baseline rule set, when one was given.
    """

    source: str
    start: datetime
    end: datetime
    claims: int
    audited: int
    audited_frauds: int
    true_frauds: int | None
    overall: tuple[RuleStats, ...]
    rules: tuple[RuleStats, ...]
    comparison: RulesComparison | None = None

    @property
    def days(self) -> float:
        """Length of the period in days."""
        return (self.end - self.start) / timedelta(days=1)

    @property
    def flagged(self) -> RuleStats:
        """The `all flagged` row (review or block)."""
        return self.overall[0]

    def rule(self, name: str) -> RuleStats:
        """The row of one rule or list.

        Raises:
            KeyError: for a name without a row.
        """
        for row in self.rules:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_frame(self) -> pl.DataFrame:
        """Every row as a table (estimates as value, low, high, n)."""
        return pl.DataFrame([_flat(row) for row in (*self.overall, *self.rules)])

    def renderables(self) -> list[RenderableType]:
        """The report as rich renderables (a header, a volume table and a quality table)."""
        out: list[RenderableType] = [Text(self.header())]
        rows = (*self.overall, *self.rules)
        out.append(_volume_table(rows, f"{self.source}: claims flagged"))
        out.append(_quality_table(rows, self.true_frauds is not None, f"{self.source}: quality"))
        if self.comparison is not None:
            out += self.comparison.renderables(headers=False)
        return out

    def header(self) -> str:
        """One paragraph: the rules, the period, the claims and the samples."""
        truth = "" if self.true_frauds is None else f"; truth: {self.true_frauds:,} frauds"
        return (
            f"Backtest of {self.source} on {self.claims:,} claims in [{_day(self.start)}, "
            f"{_day(self.end)}) ({self.days:,.1f} days); audit sample: n={self.audited:,} "
            f"claims, {self.audited_frauds:,} frauds{truth}"
        )

    def to_text(self, width: int = 140) -> str:
        """The report as plain text (the tables drawn with rich, no colour)."""
        return render(self.renderables(), width)


@dataclass(frozen=True)
class RulesComparison:
    """Two rule sets backtested on the same claims.

    Attributes:
        old: the baseline's backtest.
        new: the candidate's backtest.
        newly_flagged: claims the new rules flag and the old did not (claim_id, ts,
            customer_id, cashback_amount, old and new action and hits, labels, truth).
        no_longer_flagged: claims the old rules flagged and the new do not (same columns).
        action_changed: claims flagged by both with a different action (review <-> block).
        added: rule names only in the new set.
        removed: rule names only in the old set.
        changed: rule names in both whose definition changed.
    """

    old: BacktestReport
    new: BacktestReport
    newly_flagged: pl.DataFrame
    no_longer_flagged: pl.DataFrame
    action_changed: pl.DataFrame
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def delta(self, metric: str) -> float:
        """The change (new - old) of an overall (`all flagged`) metric.

        Args:
            metric: hits, cashback, audit_precision, audit_recall, truth_precision or
                truth_recall (nan when either side has no estimate).
        """
        return _metric(self.new.flagged, metric) - _metric(self.old.flagged, metric)

    def renderables(self, *, headers: bool = True) -> list[RenderableType]:
        """The comparison as rich renderables (with each side's report when `headers`)."""
        out: list[RenderableType] = []
        if headers:
            out += self.new.renderables()
        out.append(Text(self.summary()))
        table = Table("", self.old.source, self.new.source, "change", title="rules change")
        old, new = self.old.flagged, self.new.flagged
        table.add_row("flagged", f"{old.hits:,}", f"{new.hits:,}", f"{new.hits - old.hits:+,}")
        table.add_row("blocked", f"{old.block:,}", f"{new.block:,}", f"{new.block - old.block:+,}")
        table.add_row(
            "cashback flagged",
            f"{old.cashback:,.2f}",
            f"{new.cashback:,.2f}",
            f"{new.cashback - old.cashback:+,.2f}",
        )
        metrics = [("audit_precision", "precision"), ("audit_recall", "recall")]
        if new.truth_precision is not None and old.truth_precision is not None:
            metrics += [("truth_precision", "precision"), ("truth_recall", "recall")]
        for metric, words in metrics:
            before, after = getattr(old, metric), getattr(new, metric)
            table.add_row(
                f"{words} ({'audit sample' if before.sample == AUDIT else 'truth'})",
                escape(before.short()),
                escape(after.short()),
                _signed(self.delta(metric)),
            )
        out.append(table)
        for title, frame in (
            ("newly flagged", self.newly_flagged),
            ("no longer flagged", self.no_longer_flagged),
        ):
            if frame.height:
                out.append(_claims_table(frame, title))
        return out

    def summary(self) -> str:
        """Rules added / removed / changed, and what the moved claims were."""
        rules = (
            f"Against {self.old.source}: rules added: {', '.join(self.added) or 'none'}; "
            f"removed: {', '.join(self.removed) or 'none'}; "
            f"changed: {', '.join(self.changed) or 'none'}."
        )
        parts = [rules]
        for words, frame in (
            ("newly flagged", self.newly_flagged),
            ("no longer flagged", self.no_longer_flagged),
        ):
            parts.append(f"{_claims(frame.height)} {words}{_moved(frame)}.")
        if self.action_changed.height:
            parts.append(f"{_claims(self.action_changed.height)} change action.")
        return " ".join(parts)

    def to_text(self, width: int = 140) -> str:
        """Both backtests and the differences as plain text."""
        return render(self.renderables(), width)


def render(renderables: Sequence[RenderableType], width: int = 140) -> str:
    """Rich renderables drawn as plain text."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    for item in renderables:
        console.print(item, soft_wrap=isinstance(item, Text))
    return buffer.getvalue()


def _metric(row: RuleStats, metric: str) -> float:
    value = getattr(row, metric)
    if value is None:
        return math.nan
    return value.value if isinstance(value, Estimate) else float(value)


def _day(when: datetime) -> str:
    """A date, or a date and time when it is not midnight."""
    return f"{when:%Y-%m-%d}" if when.time() == datetime.min.time() else f"{when:%Y-%m-%d %H:%M}"


def _claims(n: int) -> str:
    return f"{n:,} claim" if n == 1 else f"{n:,} claims"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def _moved(frame: pl.DataFrame) -> str:
    if not frame.height:
        return ""
    audited = frame.filter(pl.col("audited"))
    frauds = int(audited["fraud_label"].sum())
    text = f" (audit sample: {frauds} fraud, {audited.height - frauds} legit"
    if TRUTH in frame.columns:
        text += f"; truth: {int(frame[TRUTH].fill_null(value=False).sum()):,} fraud"
    return text + ")"


def _flat(row: RuleStats) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: getattr(row, k)
        for k in (
            "name",
            "action",
            "hits",
            "review",
            "block",
            "allowlisted",
            "only",
            "share",
            "per_day",
            "cashback",
        )
    }
    for metric in ("audit_precision", "audit_recall", "truth_precision", "truth_recall"):
        estimate: Estimate | None = getattr(row, metric)
        low, high = estimate.interval if estimate is not None else (None, None)
        out |= {
            metric: estimate.value if estimate is not None else None,
            f"{metric}_low": low,
            f"{metric}_high": high,
            f"{metric}_n": estimate.n if estimate is not None else None,
        }
    return out


def _volume_table(rows: Sequence[RuleStats], title: str) -> Table:
    table = Table(
        "rule",
        "action",
        "hits",
        "review",
        "block",
        "allowlisted",
        "only",
        "% claims",
        "per day",
        "cashback",
        title=title,
    )
    for r in rows:
        table.add_row(
            escape(r.name),
            r.action,
            f"{r.hits:,}",
            f"{r.review:,}",
            f"{r.block:,}",
            f"{r.allowlisted:,}",
            "" if r.only is None else f"{r.only:,}",
            f"{r.share:.2%}",
            f"{r.per_day:,.2f}",
            f"{r.cashback:,.2f}",
        )
    return table


def _quality_table(rows: Sequence[RuleStats], truth: bool, title: str) -> Table:
    columns = ["rule", "precision (audit sample)", "recall (audit sample)"]
    if truth:
        columns += ["precision (truth)", "recall (truth)"]
    table = Table(*columns, title=title)
    for r in rows:
        cells = [r.name, r.audit_precision.short(), r.audit_recall.short()]
        if truth:
            cells += [
                r.truth_precision.short() if r.truth_precision else "-",
                r.truth_recall.short() if r.truth_recall else "-",
            ]
        table.add_row(*(escape(c) for c in cells))
    return table


def _claims_table(frame: pl.DataFrame, title: str, limit: int = 20) -> Table:
    shown = frame.with_columns(
        pl.when(pl.col("new_rule_hits").list.len() > 0)
        .then(pl.col("new_rule_hits"))
        .otherwise(pl.col("old_rule_hits"))
        .list.join(", ")
        .alias("hits")
    )
    wanted = (*DETAIL_COLUMNS, "old_action", "new_action", "hits", LABEL, TRUTH)
    columns = [c for c in wanted if c in shown.columns]
    more = f" (first {limit} of {frame.height:,})" if frame.height > limit else ""
    table = Table(*columns, title=f"{title}{more}")
    for row in shown.head(limit).select(columns).iter_rows():
        table.add_row(*(escape("" if v is None else _cell(v)) for v in row))
    return table


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


# --- computation ----------------------------------------------------------------------


def _fraud_label(schema: pl.Schema) -> pl.Expr:
    """True for a fraud label, whether labels are text (fraud/legit) or 1/0."""
    dtype = schema[LABEL]
    if dtype.is_numeric() or dtype == pl.Boolean:
        return pl.col(LABEL).cast(pl.Boolean)
    return pl.col(LABEL).cast(pl.String) == "fraud"


def _prepare(rules: RuleSet, scored: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in ("claim_id", "ts", "cashback_amount", LABEL, SOURCE) if c not in scored]
    if missing:
        msg = f"backtest: the scored claims lack {', '.join(missing)}"
        raise RulesError(msg)
    audited = pl.col(SOURCE).cast(pl.String).str.contains(AUDIT).fill_null(value=False)
    fraud = _fraud_label(scored.schema)
    frame = rules.evaluate(scored).with_columns(
        (audited & pl.col(LABEL).is_not_null()).alias("audited"),
        fraud.fill_null(value=False).alias("fraud_label"),
    )
    if TRUTH in frame.columns:
        frame = frame.with_columns(pl.col(TRUTH).cast(pl.Boolean).fill_null(value=False))
    return frame


def _aggregations(hit: pl.Expr, prefix: str, truth: bool) -> list[pl.Expr]:
    action = pl.col("rule_action")
    audit = pl.col("audited")
    fraud = pl.col("fraud_label")
    exprs = [
        hit.sum().alias(f"{prefix}hits"),
        (hit & (action == REVIEW)).sum().alias(f"{prefix}review"),
        (hit & (action == BLOCK)).sum().alias(f"{prefix}block"),
        (hit & (action == ALLOWLISTED)).sum().alias(f"{prefix}allowlisted"),
        (hit & (pl.col("rule_hits").list.len() == 1)).sum().alias(f"{prefix}only"),
        pl.col("cashback_amount").filter(hit).sum().alias(f"{prefix}cashback"),
        (hit & audit).sum().alias(f"{prefix}audit_hits"),
        (hit & audit & fraud).sum().alias(f"{prefix}audit_tp"),
    ]
    if truth:
        exprs.append((hit & pl.col(TRUTH)).sum().alias(f"{prefix}truth_tp"))
    return exprs


def _stats(
    values: dict[str, Any],
    prefix: str,
    name: str,
    action: str,
    totals: tuple[int, int, int | None, float],
    *,
    overall: bool,
) -> RuleStats:
    claims, audit_frauds, true_frauds, days = totals
    hits = int(values[f"{prefix}hits"])
    tp = int(values[f"{prefix}audit_tp"])
    truth = true_frauds is not None
    truth_tp = int(values[f"{prefix}truth_tp"]) if truth else 0
    return RuleStats(
        name=name,
        action=action,
        hits=hits,
        review=int(values[f"{prefix}review"]),
        block=int(values[f"{prefix}block"]),
        allowlisted=int(values[f"{prefix}allowlisted"]),
        only=None if overall else int(values[f"{prefix}only"]),
        share=hits / claims if claims else math.nan,
        per_day=hits / days if days > 0 else math.nan,
        cashback=float(values[f"{prefix}cashback"] or 0.0),
        audit_precision=Estimate(tp, int(values[f"{prefix}audit_hits"]), AUDIT),
        audit_recall=Estimate(tp, audit_frauds, AUDIT),
        truth_precision=Estimate(truth_tp, hits, "truth") if truth else None,
        truth_recall=Estimate(truth_tp, true_frauds or 0, "truth") if truth else None,
    )


def _period(
    frame: pl.DataFrame, period: tuple[datetime, datetime] | None
) -> tuple[datetime, datetime]:
    if period is not None:
        return period
    if not frame.height:
        now = datetime.now(UTC)
        return now, now
    first, last = frame.select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")).row(0)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    end = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return start, end


def _report(
    rules: RuleSet, frame: pl.DataFrame, period: tuple[datetime, datetime] | None
) -> BacktestReport:
    """The backtest of a frame the rules were already evaluated on (see `_prepare`)."""
    truth = TRUTH in frame.columns
    start, end = _period(frame, period)
    days = (end - start) / timedelta(days=1)
    action = pl.col("rule_action")
    overall = {
        ALL: (action.is_in(FLAGGING), "review+block"),
        BLOCK: (action == BLOCK, BLOCK),
        REVIEW: (action == REVIEW, REVIEW),
    }
    names = rules.hit_names
    exprs = [
        pl.len().alias("claims"),
        pl.col("audited").sum().alias("audited"),
        (pl.col("audited") & pl.col("fraud_label")).sum().alias("audited_frauds"),
    ]
    if truth:
        exprs.append(pl.col(TRUTH).sum().alias("true_frauds"))
    for i, (hit, _) in enumerate(overall.values()):
        exprs += _aggregations(hit, f"o{i}_", truth)
    for i, name in enumerate(names):
        exprs += _aggregations(pl.col("rule_hits").list.contains(name), f"r{i}_", truth)
    values = frame.select(exprs).row(0, named=True)
    claims, audit_frauds = int(values["claims"]), int(values["audited_frauds"])
    true_frauds = int(values["true_frauds"]) if truth else None
    totals = (claims, audit_frauds, true_frauds, days)
    return BacktestReport(
        source=rules.source,
        start=start,
        end=end,
        claims=claims,
        audited=int(values["audited"]),
        audited_frauds=audit_frauds,
        true_frauds=true_frauds,
        overall=tuple(
            _stats(values, f"o{i}_", name, act, totals, overall=True)
            for i, (name, (_, act)) in enumerate(overall.items())
        ),
        rules=tuple(
            _stats(values, f"r{i}_", name, rules.action_of(name), totals, overall=False)
            for i, name in enumerate(names)
        ),
    )


def backtest(
    rules: RuleSet,
    scored: pl.DataFrame,
    *,
    period: tuple[datetime, datetime] | None = None,
) -> BacktestReport:
    """What the rules would have flagged on past claims, and how well.

    Args:
        rules: the rule set.
        scored: claims with the features the rules read, `claim_id`, `ts`,
            `cashback_amount`, `label` (fraud / legit, or 1 / 0; null: unknown),
            `label_source` (sources joined by `+`; `audit` marks the random audit sample)
            and, from the simulator, `is_fraud`.
        period: [start, end) of the claims, for claims per day (default: the calendar days
            from the first claim's to the last claim's, UTC).

    Raises:
        RulesError: when the claims lack a column the rules or the report need.
    """
    return _report(rules, _prepare(rules, scored), period)


def _definitions(rules: RuleSet) -> dict[str, dict[str, Any]]:
    return {r.name: r.model_dump(exclude={"description"}) for r in rules.rules}


def _moves(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    keep = [c for c in (*DETAIL_COLUMNS, LABEL, SOURCE, TRUTH) if c in new.columns]
    return new.select(
        *keep,
        "audited",
        "fraud_label",
        old["rule_action"].alias("old_action"),
        pl.col("rule_action").alias("new_action"),
        old["rule_hits"].alias("old_rule_hits"),
        pl.col("rule_hits").alias("new_rule_hits"),
    )


def compare(
    old: RuleSet,
    new: RuleSet,
    scored: pl.DataFrame,
    *,
    period: tuple[datetime, datetime] | None = None,
) -> RulesComparison:
    """What replacing the `old` rules by the `new` would have changed on past claims.

    Args:
        old: the rules in place.
        new: the candidate rules.
        scored: claims as for `backtest`.
        period: as for `backtest`.

    Returns:
        Both backtests, the claims newly flagged and no longer flagged (sorted by time), and
        the rules added, removed and changed.
    """
    old_frame, new_frame = _prepare(old, scored), _prepare(new, scored)
    moves = _moves(old_frame, new_frame)
    was = pl.col("old_action").is_in(FLAGGING)
    now = pl.col("new_action").is_in(FLAGGING)
    before, after = _definitions(old), _definitions(new)
    old_report = _report(old, old_frame, period)
    new_report = _report(new, new_frame, period)
    return RulesComparison(
        old=old_report,
        new=new_report,
        newly_flagged=moves.filter(now & ~was).sort("ts"),
        no_longer_flagged=moves.filter(was & ~now).sort("ts"),
        action_changed=moves.filter(was & now & (pl.col("old_action") != pl.col("new_action"))),
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
    )
