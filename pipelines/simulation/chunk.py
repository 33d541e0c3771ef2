"""One chunk of customers, simulated end to end and shaped into contract and truth tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cashback.privacy import hash_ips
from pipelines.simulation.behaviour import (
    POLICY_EXPERIMENT,
    POLICY_HOLDOUT,
    Behaviour,
    effective_rate,
    simulate_behaviour,
)
from pipelines.simulation.fraud import (
    DuplicateClaims,
    FraudMaker,
    make_fraud,
    reserved_accounts,
)
from pipelines.simulation.population import ROLES, Population, draw_population
from pipelines.simulation.purchases import Purchases, honest_purchases, splitmix64
from pipelines.simulation.world import (
    ABUSE_TYPES,
    ACQUISITION,
    AGE_BANDS,
    CATEGORIES,
    CHANNELS,
    DEFAULT_OFFER,
    EXPERIMENT_BOOST_STEPS,
    EXPERIMENT_ID,
    EXPLORE_POLICY,
    HOLDOUT_POLICY,
    OFFERS,
    PAYOUT_METHODS,
    REGIONS,
    BoolArray,
    FloatArray,
    IntArray,
    SegmentArrays,
    WorldConfig,
)

US_PER_DAY = 86_400_000_000
ALIVE_FRACTION_ESTIMATE = 0.6  # share of the period an average customer is active


@dataclass(frozen=True)
class WorldContext:
    """What every chunk shares: the world, its calendar and its merchants."""

    config: WorldConfig
    segments: SegmentArrays
    season: FloatArray
    seasonal_offer_days: FloatArray
    merchant_cdf: list[FloatArray]
    merchant_ids: list[str]
    pepper: bytes


def chunk_rng(config: WorldConfig, chunk: int) -> np.random.Generator:
    """The chunk's own random stream (independent of other chunks)."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(chunk,)))


def expected_claims_per_customer(ctx: WorldContext) -> float:
    """A rough expectation used only to reserve enough fraud accounts."""
    s, c = ctx.segments, ctx.config
    mix = c.existing_share * s.share_existing + (1 - c.existing_share) * s.share_new
    per_day = float(np.sum(mix * s.daily_rate * s.claim_prob))
    return per_day * c.days * ALIVE_FRACTION_ESTIMATE


def simulate_chunk(ctx: WorldContext, chunk: int, offset: int, n: int) -> dict[str, pl.DataFrame]:
    """Simulate customers offset..offset+n-1 and return their rows of every table.

    Returns:
        Table name to frame; truth tables are named `truth/<name>`.
    """
    config = ctx.config
    rng = chunk_rng(config, chunk)
    reserve = reserved_accounts(config, expected_claims_per_customer(ctx) * n)
    pop = draw_population(config, ctx.segments, offset, n, reserve, rng)
    beh = simulate_behaviour(pop, config, ctx.segments, ctx.season, ctx.seasonal_offer_days, rng)
    honest = honest_purchases(beh, pop, config, ctx.segments, ctx.merchant_cdf, rng)
    honest_claims = int(np.sum(honest.claimed & (honest.t + honest.claim_delay < config.days)))
    maker = FraudMaker(config, pop, beh, ctx.merchant_cdf, chunk, rng)
    fraud, duplicates = make_fraud(maker, honest, honest_claims)
    orders = Purchases.concat([honest, fraud])
    return _Assembler(ctx, chunk, pop, beh, rng).tables(orders, duplicates)


def ids(prefix: str, chunk: int, numbers: IntArray) -> pl.Series:
    """Identifiers like T0003_00001234: chunk and position, readable and unique."""
    return f"{prefix}{chunk:04d}_" + pl.Series(numbers, dtype=pl.Int64).cast(pl.String).str.zfill(8)


def lookup(
    name: str, vocabulary: tuple[str, ...] | list[str] | pl.Series, index: IntArray
) -> pl.Series:
    """Strings by index into a small vocabulary (fast: no per-row Python strings)."""
    values = (
        vocabulary
        if isinstance(vocabulary, pl.Series)
        else pl.Series(list(vocabulary), dtype=pl.String)
    )
    return values.gather(pl.Series(np.asarray(index, dtype=np.int64))).alias(name)


def nullable(name: str, values: pl.Series, keep: np.ndarray) -> pl.Series:
    """A column that is null where `keep` is false."""
    return pl.select(pl.when(pl.lit(pl.Series(keep))).then(values)).to_series().alias(name)


def customer_ids(global_index: IntArray) -> pl.Series:
    """C00000042 for customer 42."""
    return "C" + pl.Series(global_index, dtype=pl.Int64).cast(pl.String).str.zfill(8)


def to_ts(config: WorldConfig, days: FloatArray) -> IntArray:
    """Days since the start to UTC microseconds since the epoch."""
    start_us = int(config.start_dt.timestamp()) * 1_000_000
    return np.asarray(start_us + np.round(days * US_PER_DAY), dtype=np.int64)


def ts_series(name: str, micros: IntArray) -> pl.Series:
    """A UTC timestamp column from epoch microseconds."""
    return (
        pl.Series(name, micros, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )


@dataclass(frozen=True)
class ExposureRows:
    """A chunk's exposures in table order, as rows and as arrays for joining."""

    frame: pl.DataFrame
    truth: pl.DataFrame
    customer: IntArray
    start_us: IntArray
    until_us: IntArray
    rate: FloatArray
    offer: IntArray

    @property
    def ids(self) -> pl.Series:
        """The exposure ids, in row order."""
        return self.frame["exposure_id"]


@dataclass(frozen=True)
class ClaimSources:
    """Which order each claim is for, whether it is a second claim, and when it is made."""

    order: IntArray
    duplicate: BoolArray
    ts_us: IntArray


class _Assembler:
    """Turns the chunk's arrays into the contract's rows."""

    def __init__(
        self,
        ctx: WorldContext,
        chunk: int,
        pop: Population,
        beh: Behaviour,
        rng: np.random.Generator,
    ) -> None:
        self.ctx, self.config, self.chunk = ctx, ctx.config, chunk
        self.pop, self.beh, self.rng = pop, beh, rng

    def tables(self, orders: Purchases, duplicates: DuplicateClaims) -> dict[str, pl.DataFrame]:
        config = self.config
        orders, duplicates = self._sorted(orders, duplicates)
        exposures = self._exposures()
        order_us = to_ts(config, orders.t)
        exp_index = self._attach(orders.customer, order_us, exposures)
        txn_ids = self._txn_ids(orders.customer.size)
        tables = {
            "customers": self._customers(),
            "exposures": exposures.frame,
            "assignments": self._assignments(),
            "transactions": pl.concat(
                [
                    self._purchases(orders, order_us, txn_ids),
                    self._returns(orders, order_us, txn_ids),
                ]
            ),
        }
        claims, truth_claims = self._claims(
            orders, order_us, txn_ids, exp_index, exposures, duplicates
        )
        tables["claims"] = claims
        tables["claim_labels"] = self._labels(claims, truth_claims)
        tables["truth/claims"] = truth_claims
        tables["truth/customers"] = self._truth_customers()
        tables["truth/exposures"] = exposures.truth
        return tables

    # -------------------------------------------------------------- orders

    def _sorted(self, orders: Purchases, dup: DuplicateClaims) -> tuple[Purchases, DuplicateClaims]:
        """Orders in time order; receipt and duplicate references follow them."""
        keep = (orders.t < self.config.days) & (
            orders.t >= np.maximum(self.pop.signup_day[orders.customer], 0)
        )
        order = np.flatnonzero(keep)[np.argsort(orders.t[keep], kind="stable")]
        new_pos = np.full(orders.size, -1)
        new_pos[order] = np.arange(order.size)
        out = orders.take(order)
        src = out.receipt_source
        out.receipt_source = np.where(src >= 0, new_pos[np.maximum(src, 0)], -1)
        dup_src = new_pos[dup.source]
        ok = dup_src >= 0
        return out, DuplicateClaims(dup_src[ok], dup.delay[ok])

    def _txn_ids(self, n: int) -> pl.Series:
        return ids("T", self.chunk, np.arange(n))

    def _purchases(self, orders: Purchases, order_us: IntArray, txn_ids: pl.Series) -> pl.DataFrame:
        return pl.DataFrame(
            [
                txn_ids.alias("txn_id"),
                customer_ids(self.pop.offset + orders.customer).alias("customer_id"),
                lookup("merchant_id", self.ctx.merchant_ids, orders.merchant),
                ts_series("ts", order_us),
                pl.Series("amount", orders.amount),
                lookup("category", CATEGORIES, orders.category),
                lookup("channel", CHANNELS, orders.channel),
                pl.Series("original_txn_id", [None] * orders.size, dtype=pl.String),
            ]
        )

    def _returns(self, orders: Purchases, order_us: IntArray, txn_ids: pl.Series) -> pl.DataFrame:
        back_us = order_us + np.nan_to_num(orders.return_delay * US_PER_DAY, nan=0).astype(np.int64)
        end_us = to_ts(self.config, np.array([float(self.config.days)]))[0]
        rows = np.flatnonzero(np.isfinite(orders.return_delay) & (back_us < end_us))
        amount = np.round(orders.amount[rows] * orders.return_share[rows], 2)
        amount = np.clip(amount, 0.01, orders.amount[rows])
        ret_ids = ids("R", self.chunk, np.arange(rows.size))
        return pl.DataFrame(
            [
                ret_ids.alias("txn_id"),
                customer_ids(self.pop.offset + orders.customer[rows]).alias("customer_id"),
                lookup("merchant_id", self.ctx.merchant_ids, orders.merchant[rows]),
                ts_series("ts", back_us[rows]),
                pl.Series("amount", -amount),
                lookup("category", CATEGORIES, orders.category[rows]),
                lookup("channel", CHANNELS, orders.channel[rows]),
                txn_ids.gather(rows).alias("original_txn_id"),
            ]
        )

    # -------------------------------------------------------------- exposures

    def _exposures(self) -> ExposureRows:
        beh, config = self.beh, self.config
        order = np.lexsort((beh.exp_start, beh.exp_customer))
        cust = beh.exp_customer[order]
        start_us = to_ts(config, beh.exp_start[order])
        until_us = start_us + config.exposure_days * US_PER_DAY
        offer = beh.exp_offer[order]
        policy = beh.exp_policy[order]
        variant = beh.exp_variant[order]
        offer_ids = [o.offer_id for o in OFFERS] + [DEFAULT_OFFER.offer_id]
        policy_code = np.where(
            policy == POLICY_HOLDOUT,
            1,
            np.where((policy == POLICY_EXPERIMENT) & (variant == 1), 2, 0),
        )
        in_exp = policy == POLICY_EXPERIMENT
        exp_ids = ids("E", self.chunk, np.arange(cust.size))
        frame = pl.DataFrame(
            [
                exp_ids.alias("exposure_id"),
                customer_ids(self.pop.offset + cust).alias("customer_id"),
                ts_series("ts", start_us),
                ts_series("valid_until", until_us),
                lookup("offer_id", offer_ids, offer),
                pl.Series("rate", beh.exp_rate[order]),
                lookup(
                    "policy_version",
                    (EXPLORE_POLICY, HOLDOUT_POLICY, f"boost_{EXPERIMENT_BOOST_STEPS}_steps"),
                    policy_code,
                ),
                nullable(
                    "experiment_id",
                    lookup(
                        "experiment_id", (EXPERIMENT_ID,), np.zeros(in_exp.size, dtype=np.int64)
                    ),
                    in_exp,
                ),
                nullable(
                    "variant",
                    lookup("variant", ("control", "treatment"), np.maximum(variant, 0)),
                    in_exp,
                ),
                pl.Series("propensity", beh.exp_propensity[order]),
            ]
        )
        category_share = self._offer_category_share(offer, cust)
        truth = pl.DataFrame(
            [
                exp_ids.alias("exposure_id"),
                pl.Series("explored", beh.exp_explored[order]),
                pl.Series("policy_rate", beh.exp_policy_rate[order]),
                pl.Series(
                    "effective_rate",
                    effective_rate(beh.exp_rate[order], offer, category_share, config.default_rate),
                ),
            ]
        )
        return ExposureRows(frame, truth, cust, start_us, until_us, beh.exp_rate[order], offer)

    def _offer_category_share(self, offer: IntArray, cust: IntArray) -> FloatArray:
        share = np.zeros(offer.size)
        for i, o in enumerate(OFFERS):  # one pass per catalog entry
            if o.kind == "category" and o.category:
                rows = offer == i
                seg = self.pop.segment[cust[rows]]
                share[rows] = self.ctx.segments.categories[seg, CATEGORIES.index(o.category)]
        return share

    def _attach(self, customer: IntArray, order_us: IntArray, exposures: ExposureRows) -> IntArray:
        """Index of the exposure valid at each order (-1 if none): an as-of join in numpy."""
        e_cust, e_start, e_until = exposures.customer, exposures.start_us, exposures.until_us
        if e_cust.size == 0:
            return np.full(customer.size, -1)
        span = np.int64(self.config.days + 400) * US_PER_DAY
        base = to_ts(self.config, np.array([-200.0]))[0]
        e_key = e_cust * span + (e_start - base)
        o_key = customer * span + (order_us - base)
        pos = np.searchsorted(e_key, o_key, side="right") - 1
        safe = np.maximum(pos, 0)
        valid = (pos >= 0) & (e_cust[safe] == customer) & (order_us < e_until[safe])
        return np.where(valid, pos, -1)

    # -------------------------------------------------------------- cashback and claims

    def _claim_sources(
        self, orders: Purchases, order_us: IntArray, duplicates: DuplicateClaims
    ) -> ClaimSources:
        """Claims made before the end: first claims of orders, then second ones, by time."""
        end_us = to_ts(self.config, np.array([float(self.config.days)]))[0]
        claim_us = order_us + np.round(orders.claim_delay * US_PER_DAY).astype(np.int64)
        first = np.flatnonzero(orders.claimed & (claim_us < end_us))
        delay_us = np.round(duplicates.delay * US_PER_DAY).astype(np.int64)
        dup_us = order_us[duplicates.source] + delay_us
        second = duplicates.source[dup_us < end_us]
        source = np.concatenate([first, second])
        is_dup = np.concatenate([np.zeros(first.size, bool), np.ones(second.size, bool)])
        when = np.concatenate([claim_us[first], dup_us[dup_us < end_us]])
        order = np.argsort(when, kind="stable")
        return ClaimSources(source[order], is_dup[order], when[order])

    def _receipts(self, orders: Purchases, source: IntArray) -> pl.Series:
        """Receipt hashes: an order's own, or the one it reuses."""
        own = orders.receipt_source[source]
        receipt_of = np.where(own >= 0, own, source).astype(np.uint64)
        salt = (np.uint64(self.config.seed % 2**20) << np.uint64(44)) | (
            np.uint64(self.chunk) << np.uint64(32)
        )
        receipts = splitmix64(receipt_of | salt)
        return ("r" + pl.Series(receipts, dtype=pl.UInt64).cast(pl.String)).alias("receipt_hash")

    def _ip_hashes(self, ips: IntArray) -> pl.Series:
        """Keyed hashes of the IPs, computed once per distinct address."""
        uniq, inverse = np.unique(ips, return_inverse=True)
        hashed = hash_ips([_ipv4(int(x)) for x in uniq], self.ctx.pepper)
        return lookup("ip_hash", hashed, inverse)

    def _claims(
        self,
        orders: Purchases,
        order_us: IntArray,
        txn_ids: pl.Series,
        exp_index: IntArray,
        exposures: ExposureRows,
        duplicates: DuplicateClaims,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        config = self.config
        cashback = cashback_amounts(orders, exp_index, exposures, config)
        sources = self._claim_sources(orders, order_us, duplicates)
        source = sources.order
        second_device = sources.duplicate & (self.rng.random(source.size) < 0.5)
        device = np.where(second_device, orders.device[source] | 1, orders.device[source])
        e_idx = exp_index[source]
        has_exposure = e_idx >= 0
        abuse = np.where(
            sources.duplicate, ABUSE_TYPES.index("receipt_reuse"), orders.abuse[source]
        )
        claim_ids = ids("K", self.chunk, np.arange(source.size))
        customers = orders.customer[source]
        claims = pl.DataFrame(
            [
                claim_ids.alias("claim_id"),
                customer_ids(self.pop.offset + customers).alias("customer_id"),
                txn_ids.gather(source).alias("txn_id"),
                nullable("exposure_id", exposures.ids.gather(np.maximum(e_idx, 0)), has_exposure),
                ts_series("ts", sources.ts_us),
                pl.Series("amount", orders.claim_amount[source]),
                pl.Series("cashback_amount", cashback[source]),
                lookup("payout_method", PAYOUT_METHODS, self.pop.payout_method[customers]),
                ("d" + pl.Series(device, dtype=pl.Int64).cast(pl.String)).alias("device_id"),
                self._ip_hashes(orders.ip[source]),
                self._receipts(orders, source),
            ]
        )
        rate = np.where(has_exposure, exposures.rate[np.maximum(e_idx, 0)], config.default_rate)
        abuse_names = lookup("abuse_type", ABUSE_TYPES, np.maximum(abuse, 0))
        truth = pl.DataFrame(
            [
                claim_ids.alias("claim_id"),
                pl.Series("is_fraud", abuse >= 0),
                nullable("abuse_type", abuse_names, abuse >= 0),
                pl.Series("exposure_rate", rate),
            ]
        )
        return claims, truth

    def _labels(self, claims: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
        """Chargebacks and audits, with their delays; only labels decided in time.

        Chargebacks come for a share of frauds 30-90 days late; audits sample claims at
        random and decide 15-30 days late, with the preset's label noise.
        """
        config, rng = self.config, self.rng
        n = claims.height
        fraud = truth["is_fraud"].to_numpy()
        claim_us = claims["ts"].dt.epoch("us").to_numpy()
        end_us = to_ts(config, np.array([float(config.days)]))[0]
        cb = np.flatnonzero(fraud & (rng.random(n) < config.chargebacks))
        cb_us = claim_us[cb] + np.round(rng.uniform(30, 90, cb.size) * US_PER_DAY).astype(np.int64)
        audit = np.flatnonzero(rng.random(n) < config.audit_share)
        audit_us = claim_us[audit] + np.round(rng.uniform(15, 30, audit.size) * US_PER_DAY).astype(
            np.int64
        )
        audit_fraud = fraud[audit] ^ (rng.random(audit.size) < config.label_noise)
        true_abuse = truth["abuse_type"].gather(audit).fill_null("other")
        chargebacks = pl.DataFrame(
            [
                claims["claim_id"].gather(cb),
                pl.Series("label", ["fraud"] * cb.size, dtype=pl.String),
                pl.Series("abuse_type", [None] * cb.size, dtype=pl.String),
                ts_series("decided_ts", cb_us),
                pl.Series("source", ["chargeback"] * cb.size, dtype=pl.String),
            ]
        )
        audits = pl.DataFrame(
            [
                claims["claim_id"].gather(audit),
                lookup("label", ("legit", "fraud"), audit_fraud.astype(np.int64)),
                nullable("abuse_type", true_abuse, audit_fraud),
                ts_series("decided_ts", audit_us),
                pl.Series("source", ["audit"] * audit.size, dtype=pl.String),
            ]
        )
        return (
            pl.concat([chargebacks, audits])
            .filter(pl.col("decided_ts") < ts_series("end", np.array([end_us])).item())
            .sort("decided_ts", "claim_id")
        )

    # -------------------------------------------------------------- customers

    def _customers(self) -> pl.DataFrame:
        pop = self.pop
        g = pop.offset + np.arange(pop.n)
        region = nullable(
            "region", lookup("region", REGIONS, np.maximum(pop.region, 0)), pop.region >= 0
        )
        age = nullable(
            "age_band",
            lookup("age_band", AGE_BANDS, np.maximum(pop.age_band, 0)),
            pop.age_band >= 0,
        )
        return pl.DataFrame(
            [
                customer_ids(g).alias("customer_id"),
                ts_series("signup_ts", to_ts(self.config, pop.signup_day)),
                region,
                age,
                lookup("acquisition_channel", ACQUISITION, pop.acquisition),
            ]
        )

    def _assignments(self) -> pl.DataFrame:
        pop, at = self.pop, self.beh.assigned_at
        rows = np.flatnonzero(np.isfinite(at))
        return pl.DataFrame(
            [
                lookup("experiment_id", (EXPERIMENT_ID,), np.zeros(rows.size, dtype=np.int64)),
                customer_ids(pop.offset + rows).alias("customer_id"),
                lookup("variant", ("control", "treatment"), pop.variant[rows]),
                ts_series("ts", to_ts(self.config, at[rows])),
            ]
        )

    def _truth_customers(self) -> pl.DataFrame:
        pop, beh = self.pop, self.beh
        g = pop.offset + np.arange(pop.n)
        churned = np.isfinite(beh.churn_day) & (beh.churn_day >= 0)
        return pl.DataFrame(
            [
                customer_ids(g).alias("customer_id"),
                lookup("segment", self.ctx.segments.names, pop.segment),
                lookup("role", ROLES, pop.role),
                pl.Series("ring", np.where(pop.ring >= 0, pop.ring + self.chunk * 100_000, -1)),
                pl.Series("daily_rate", pop.daily_rate),
                pl.Series("basket_mu", pop.basket_mu),
                pl.Series("basket_sigma", pop.basket_sigma),
                pl.Series("freq_gain", pop.freq_gain),
                pl.Series("basket_gain", pop.basket_gain),
                pl.Series("half_rate", pop.half_rate),
                pl.Series("threshold", pop.threshold),
                pl.Series("return_prob", pop.return_prob),
                pl.Series("claim_prob", pop.claim_prob),
                pl.Series("churn_base", pop.churn_base),
                pl.Series("holdout", pop.holdout),
                pl.Series("alive_at_start", beh.churn_day != -1.0),
                ts_series("churned_ts", to_ts(self.config, np.where(churned, beh.churn_day, 0.0))),
                pl.Series("__churned", churned),
            ]
        ).with_columns(pl.when(pl.col("__churned")).then(pl.col("churned_ts")).alias("churned_ts")).drop(
            "__churned"
        )  # fmt: skip


def _ipv4(x: int) -> str:
    return f"{x >> 24 & 255}.{x >> 16 & 255}.{x >> 8 & 255}.{x & 255}"


def cashback_amounts(
    orders: Purchases, exp_index: IntArray, exposures: ExposureRows, config: WorldConfig
) -> FloatArray:
    """Cashback of each order under the offer valid when it was made (default card if none).

    Flat and seasonal: rate x amount; tiered: rate plus the bonus of the highest tier the
    claimed amount reaches; cumulative: rate plus the bonus of the highest tier reached by
    the number of earlier orders in the same exposure; category: the rate on the offer's
    category, the default rate elsewhere.
    """
    e_rate, e_offer = exposures.rate, exposures.offer
    has = exp_index >= 0
    safe = np.maximum(exp_index, 0)
    rate = np.where(has, e_rate[safe], config.default_rate)
    offer = np.where(has, e_offer[safe], -1)
    amount = orders.claim_amount
    ordinal = _ordinal_in_group(exp_index, orders.t)
    for i, o in enumerate(OFFERS):  # one vectorized pass per catalog entry
        rows = offer == i
        if o.kind == "tiered" and o.tiers:
            rate = np.where(rows, rate + _tier_bonus(amount, o.tiers), rate)
        elif o.kind == "cumulative" and o.tiers:
            rate = np.where(rows, rate + _tier_bonus(ordinal.astype(np.float64), o.tiers), rate)
        elif o.kind == "category" and o.category:
            other = rows & (orders.category != CATEGORIES.index(o.category))
            rate = np.where(other, config.default_rate, rate)
    return np.asarray(np.round(rate * amount, 2), dtype=np.float64)


def _tier_bonus(value: FloatArray, tiers: tuple[tuple[float, float], ...]) -> FloatArray:
    thresholds = np.array([t for t, _ in tiers])
    bonuses = np.array([b for _, b in tiers])
    pos = np.searchsorted(thresholds, value, side="right") - 1
    return np.asarray(np.where(pos >= 0, bonuses[np.maximum(pos, 0)], 0.0), dtype=np.float64)


def _ordinal_in_group(group: IntArray, t: FloatArray) -> IntArray:
    """0 for the first order of each group (by time), 1 for the second, ..."""
    order = np.lexsort((t, group))
    g = group[order]
    starts = np.r_[True, g[1:] != g[:-1]]
    idx = np.arange(g.size)
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    out = np.empty(g.size, dtype=np.int64)
    out[order] = idx - first
    return out
