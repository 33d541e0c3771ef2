"""`cashback labels export`: the risk team's decisions into the claim_labels table.

An analyst's final decision on a review case implies a label (DESIGN.md): approve is legit;
reject, partial and clawback are fraud; a hold gives none yet. The API stores decisions in
the app database (`review_decisions`); training (`cashback train fraud`) reads the contract
tables under the data directory. This job copies the labels across:

- one row per decided case: the claim, the label, the abuse type the analyst confirmed
  with a fraud decision (null otherwise), the decision's time as `decided_ts`, and the
  source: `audit` for a case drawn for the random audit sample, `review` for a flagged one
  (so the audit sample stays the unbiased sample its metrics need);
- only for claims the claims table holds (the contract requires it): the others wait, and
  are exported by a later run once their claims are there;
- only rows whose (claim_id, source) key the table lacks: a decided case never changes, so
  a row present is this decision exported before (or, when its label differs, a label from
  elsewhere that is kept and reported).

Idempotent (a second run adds nothing) and atomic: the rows pass the contract's checks and
are written as a new part of a table stored in parts, or through a temp file, under the
table's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import polars as pl
from sqlalchemy import Table, case, select

from cashback.contract import CLAIM_LABELS
from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import append_table, present_tables, read_table, table_lock, table_path
from cashback.vocab import LabelSource
from serving.db import open_database
from serving.tables import CaseDecision, CaseReason, ClaimDecision, ReviewCase

DECISIONS = cast(Table, CaseDecision.__table__)
CASES = cast(Table, ReviewCase.__table__)
CLAIMS = cast(Table, ClaimDecision.__table__)
KEY = list(CLAIM_LABELS.key)


@dataclass(frozen=True)
class LabelExport:
    """What an export did.

    Attributes:
        decided: labelled decisions in the app database (every final decision on a case).
        added: labels added to claim_labels, by source.
        present: labels whose (claim, source) the table held already with the same label.
        conflicting: labels the table held already with another label (kept as they are).
        pending: labels of claims the claims table lacks yet (exported by a later run).
    """

    decided: int
    added: dict[str, int] = field(default_factory=dict)
    present: int = 0
    conflicting: int = 0
    pending: int = 0

    @property
    def total_added(self) -> int:
        """Labels added, all sources."""
        return sum(self.added.values())


def decided_labels(settings: Settings) -> pl.DataFrame:
    """The label of every decided review case, in the claim_labels table's columns."""
    source = case(
        (CASES.c.reason == CaseReason.AUDIT.value, LabelSource.AUDIT.value),
        else_=LabelSource.REVIEW.value,
    )
    query = (
        select(
            CLAIMS.c.claim_id,
            DECISIONS.c.label,
            DECISIONS.c.abuse_type,
            DECISIONS.c.decided_at,
            source,
        )
        .join(CASES, CASES.c.id == DECISIONS.c.case_id)
        .join(CLAIMS, CLAIMS.c.id == CASES.c.claim_decision_id)
        .where(DECISIONS.c.label.is_not(None))
        .order_by(DECISIONS.c.id)
    )
    database = open_database(settings)
    try:
        with database.engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        database.close()
    # a case takes one final decision, and a claim has one case: the key is unique already
    return pl.DataFrame([tuple(r) for r in rows], schema=CLAIM_LABELS.schema, orient="row")


def _known_claims(settings: Settings, labels: pl.DataFrame) -> pl.DataFrame:
    """The labels whose claims the claims table holds."""
    if "claims" not in present_tables(settings.data_dir):
        msg = f"{settings.data_dir}: no claims table; labels are exported for its claims"
        raise CashbackError(msg)
    claims = read_table(settings.data_dir, "claims").select("claim_id")
    return labels.lazy().join(claims, on="claim_id", how="semi").collect()


def _existing(settings: Settings) -> pl.DataFrame:
    """The (claim_id, source) keys of claim_labels and their labels (empty when absent)."""
    if not table_path(settings.data_dir, CLAIM_LABELS.name).exists():
        return pl.DataFrame(schema={"claim_id": pl.String, "source": pl.String, "label": pl.String})
    return read_table(settings.data_dir, CLAIM_LABELS.name).select(*KEY, "label").collect()


def run(settings: Settings) -> LabelExport:
    """Copy the labels of decided review cases into claim_labels.

    Args:
        settings: the service settings (data directory, app database).

    Returns:
        How many labels were added (by source), present already, conflicting or pending.

    Raises:
        CashbackError: the data directory has no claims table.
        ContractError: a label breaks the claim_labels table's rules (nothing is written).
    """
    labels = decided_labels(settings)
    known = _known_claims(settings, labels)
    with table_lock(settings.data_dir, CLAIM_LABELS.name):  # two exports never add a row twice
        existing = _existing(settings)
        new = known.join(existing, on=KEY, how="anti")
        held = known.join(existing, on=KEY, suffix="_table")
        append_table(settings.data_dir, CLAIM_LABELS.name, new)
    conflicting = held.filter(pl.col("label") != pl.col("label_table")).height
    return LabelExport(
        decided=labels.height,
        added=dict(new.group_by("source").len().sort("source").iter_rows()),
        present=held.height - conflicting,
        conflicting=conflicting,
        pending=labels.height - known.height,
    )
