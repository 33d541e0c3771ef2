"""What offers are priced with besides the policy: the catalog, the rate card, fraud shares.

- the offer catalog (`offers` contract table): what an offer id stands for (kind, payout,
  category, its own rate or tiers);
- the segment x category rate card of the latest `cashback train rates`
  (`<data_dir>/rates/rate_card.parquet`): the fallback when the policy cannot price a
  customer, and the `rate_card` policy of experiments. A segment without a cell for the
  category gets its cells' median rate; a segment the card does not know, the default rate;
- each customer's expected share of cashback lost to fraud (`fraud_shares.parquet`, same
  run), which the policy subtracts from a rate's value; a customer absent from it gets 0,
  as in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from cashback.settings import Settings
from cashback.tables import load_table, table_path
from cashback.vocab import OfferKind, Payout

logger = logging.getLogger(__name__)

RATE_CARD_FILE = "rate_card.parquet"
FRAUD_SHARES_FILE = "fraud_shares.parquet"


@dataclass(frozen=True)
class Offer:
    """One offer of the catalog (or the built-in flat offer when the catalog lacks it).

    Attributes:
        offer_id: its id.
        kind: flat, tiered, category, seasonal or cumulative.
        payout: immediate or deferred.
        category: the category it applies to (category offers), else None.
        rate: its own rate (None for tiered and cumulative offers).
        tiers: thresholds and rates (tiered and cumulative offers).
    """

    offer_id: str
    kind: str
    payout: str
    category: str | None = None
    rate: float | None = None
    tiers: list[dict[str, float]] | None = None


@dataclass(frozen=True)
class OfferBook:
    """The catalog, the rate card and the fraud shares, read once when the API starts.

    Attributes:
        offers: the catalog by offer id.
        card: the rate card's rate by (segment, category).
        segment_rates: each segment's median card rate (for a category without a cell).
        fraud_shares: each customer's expected fraud share of cashback.
        default_rate: the default rate card's rate.
        card_source: where the card came from, in words.
    """

    offers: dict[str, Offer]
    card: dict[tuple[str, str], float]
    segment_rates: dict[str, float]
    fraud_shares: dict[str, float] = field(repr=False)
    default_rate: float
    card_source: str

    def offer(self, offer_id: str) -> Offer | None:
        """The catalog's offer, or None."""
        return self.offers.get(offer_id)

    def flat_offer(self, offer_id: str) -> Offer:
        """The offer that carries a rate (its catalog entry, else a flat immediate offer)."""
        return self.offers.get(offer_id) or Offer(offer_id, OfferKind.FLAT, Payout.IMMEDIATE)

    def card_rate(self, segment: str | None, category: str | None) -> tuple[float, str]:
        """The rate card's rate for a segment and category, and where it came from."""
        if segment is not None and category is not None and (segment, category) in self.card:
            return self.card[segment, category], f"rate card ({segment}, {category})"
        if segment is not None and segment in self.segment_rates:
            return self.segment_rates[segment], f"rate card ({segment}, all categories)"
        return self.default_rate, "default rate"

    def fraud_share(self, customer_id: str) -> float:
        """The customer's expected fraud share of cashback (0 when unknown)."""
        return self.fraud_shares.get(customer_id, 0.0)


def _offers(settings: Settings) -> dict[str, Offer]:
    if not table_path(settings.data_dir, "offers").exists():
        return {}
    rows = load_table(settings.data_dir, "offers").iter_rows(named=True)
    return {row["offer_id"]: _offer(row) for row in rows}


def _offer(row: dict[str, Any]) -> Offer:
    tiers = row.get("tiers")
    return Offer(
        offer_id=row["offer_id"],
        kind=row["kind"],
        payout=row["payout"],
        category=row.get("category"),
        rate=row.get("rate"),
        tiers=None if tiers is None else [dict(t) for t in tiers],
    )


def _card(path: Path) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    if not path.exists():
        return {}, {}
    card = pl.read_parquet(path, columns=["segment", "category", "rate"])
    cells = {(s, c): float(r) for s, c, r in card.iter_rows()}
    medians = card.group_by("segment").agg(pl.col("rate").median())
    return cells, {s: float(r) for s, r in medians.iter_rows()}


def _shares(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    frame = pl.read_parquet(path, columns=["customer_id", "fraud_share"]).drop_nulls()
    return dict(zip(frame["customer_id"].to_list(), frame["fraud_share"].to_list(), strict=True))


def load_offer_book(settings: Settings) -> OfferBook:
    """Read the catalog, the latest rate card and fraud shares (each may be absent)."""
    directory = settings.data_dir / "rates"
    card, segment_rates = _card(directory / RATE_CARD_FILE)
    source = "the latest `cashback train rates`" if card else "none: the default rate"
    if not card:
        logger.warning("no rate card in %s: fallbacks give the default rate", directory)
    return OfferBook(
        offers=_offers(settings),
        card=card,
        segment_rates=segment_rates,
        fraud_shares=_shares(directory / FRAUD_SHARES_FILE),
        default_rate=settings.default_rate,
        card_source=source,
    )
