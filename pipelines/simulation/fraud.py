"""Fraud and abuse of one chunk, sized to a share of its claims.

Patterns: rings of accounts sharing devices and IPs (multi_account), receipts claimed twice
or bought from others (receipt_reuse), big purchases claimed then returned
(claim_then_return), scripted bursts of small claims (velocity), and fresh accounts that
claim big at once and vanish (new_account). In the hard preset the patterns drift: rings
spread over more devices, bursts slow down, amounts and delays look more honest as time
goes on, and each pattern has its own season.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulation.behaviour import Behaviour
from pipelines.simulation.population import ROLE_LEGIT, ROLE_NEW_ACCOUNT, ROLE_RING, Population
from pipelines.simulation.purchases import (
    CARRIER_IPS,
    MIN_AMOUNT,
    Purchases,
    _public_ipv4,
    carrier_ip,
    home_ip,
    pick_merchants,
    round_cents,
    splitmix64,
)
from pipelines.simulation.world import ABUSE_TYPES, CATEGORIES, FloatArray, IntArray, WorldConfig

PATTERN_WEIGHTS: dict[str, float] = {
    "multi_account": 0.28,
    "receipt_reuse": 0.14,
    "claim_then_return": 0.18,
    "velocity": 0.22,
    "new_account": 0.18,
}
RING_CLAIMS_PER_ACCOUNT = 5.0
NEW_ACCOUNT_CLAIMS_PER_ACCOUNT = 2.0
RING_DEVICE_BASE = 10**12
NEW_DEVICE_BASE = 2 * 10**12
MINUTE = 1 / 1440


@dataclass
class DuplicateClaims:
    """Second claims of the same order by the same customer (receipt reuse)."""

    source: IntArray  # index of the honest order claimed again
    delay: FloatArray  # days after the order


def reserved_accounts(config: WorldConfig, expected_claims: float) -> tuple[int, int]:
    """How many ring members and new-account abusers a chunk needs for its fraud share."""
    fraud = expected_claims * config.fraud_share / (1 - config.fraud_share)
    rings = int(np.ceil(fraud * PATTERN_WEIGHTS["multi_account"] / RING_CLAIMS_PER_ACCOUNT))
    new = int(np.ceil(fraud * PATTERN_WEIGHTS["new_account"] / NEW_ACCOUNT_CLAIMS_PER_ACCOUNT))
    return rings, new


def pattern_counts(config: WorldConfig, honest_claims: int) -> dict[str, int]:
    """Fraudulent claims per pattern so that fraud is `fraud_share` of all claims."""
    total = round(honest_claims * config.fraud_share / (1 - config.fraud_share))
    counts = {k: int(total * w) for k, w in PATTERN_WEIGHTS.items()}
    counts["velocity"] += total - sum(counts.values())
    return counts


class FraudMaker:
    """Builds the fraudulent orders of one chunk."""

    def __init__(
        self,
        config: WorldConfig,
        pop: Population,
        beh: Behaviour,
        merchant_cdf: list[FloatArray],
        chunk: int,
        rng: np.random.Generator,
    ) -> None:
        self.config = config
        self.pop = pop
        self.beh = beh
        self.merchant_cdf = merchant_cdf
        self.chunk = chunk
        self.rng = rng

    # ---------------------------------------------------------------- helpers

    def _drift(self, t: FloatArray) -> FloatArray:
        """0 at the start, 1 at the end in the hard preset; always 0 otherwise."""
        if not self.config.hard:
            return np.zeros_like(t)
        return np.asarray(t / self.config.days, dtype=np.float64)

    def _when(self, pattern: str, n: int) -> FloatArray:
        """Times of fraud events; in the hard preset each pattern has its own season."""
        u = self.rng.random(n)
        if self.config.hard:
            shape = {"multi_account": 2.0, "velocity": 0.5, "new_account": 1.0}.get(pattern, 1.0)
            u = u**shape
        return np.asarray(u * (self.config.days - 1), dtype=np.float64)

    def _amount(self, median: FloatArray | float, sigma: float, n: int) -> FloatArray:
        raw = np.exp(np.log(median) + sigma * self.rng.standard_normal(n))
        return round_cents(np.maximum(raw, MIN_AMOUNT))

    def _categories(self, names: tuple[str, ...], n: int) -> IntArray:
        idx = np.array([CATEGORIES.index(c) for c in names])
        return np.asarray(idx[self.rng.integers(0, idx.size, n)], dtype=np.int64)

    def _orders(
        self,
        customer: IntArray,
        t: FloatArray,
        amount: FloatArray,
        category: IntArray,
        abuse: str,
        device: IntArray,
        ip: IntArray,
        claim_delay: FloatArray,
        channel: IntArray | None = None,
    ) -> Purchases:
        n = customer.size
        return Purchases(
            customer=customer.astype(np.int64),
            t=t,
            amount=amount,
            category=category,
            channel=self.rng.choice([0, 2], n) if channel is None else channel,
            merchant=pick_merchants(self.rng, category, self.merchant_cdf),
            abuse=np.full(n, ABUSE_TYPES.index(abuse)),
            claimed=np.ones(n, dtype=np.bool_),
            claim_delay=claim_delay,
            claim_amount=amount,
            device=device.astype(np.int64),
            ip=ip.astype(np.int64),
            return_delay=np.full(n, np.nan),
            return_share=np.ones(n),
            receipt_source=np.full(n, -1),
        )

    def _spread(self, accounts: IntArray, claims: int) -> IntArray:
        """Claims per account: at least one each while claims last, the rest at random."""
        if accounts.size == 0 or claims <= 0:
            return np.zeros(0, dtype=np.int64)
        base = np.zeros(accounts.size, dtype=np.int64)
        first = min(claims, accounts.size)
        base[:first] = 1
        extra = claims - first
        if extra:
            base += self.rng.multinomial(extra, np.full(accounts.size, 1 / accounts.size))
        return np.repeat(accounts, base)

    def _honest_alive_at(self, n: int, pattern: str) -> tuple[IntArray, FloatArray]:
        """N (customer, time) pairs of honest customers who exist and are active then."""
        pop, days = self.pop, self.config.days
        honest = np.flatnonzero(pop.role == ROLE_LEGIT)
        if honest.size == 0 or n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        picked: list[IntArray] = []
        times: list[FloatArray] = []
        need = n
        for _ in range(20):  # rejection sampling in vectorized rounds
            cand = honest[self.rng.integers(0, honest.size, 3 * need)]
            t = self._when(pattern, cand.size)
            lo = np.maximum(pop.signup_day[cand], 0)
            hi = np.minimum(self.beh.churn_day[cand], days - 1)
            ok = (t > lo) & (t < hi)
            picked.append(cand[ok][:need])
            times.append(t[ok][:need])
            need -= int(min(ok.sum(), need))
            if need == 0:
                break
        return np.concatenate(picked), np.concatenate(times)

    # ---------------------------------------------------------------- patterns

    def rings(self, claims: int) -> Purchases:
        """Ring members buy modestly and claim fast from a few shared devices and IPs."""
        pop = self.pop
        accounts = np.flatnonzero(pop.role == ROLE_RING)
        cust = self._spread(accounts, claims)
        n = cust.size
        window = np.minimum(pop.active_until[cust], self.config.days - 0.01) - pop.signup_day[cust]
        t = pop.signup_day[cust] + np.minimum(self.rng.exponential(10, n), window * 0.999)
        drift = self._drift(t)
        ring = pop.ring[cust]
        n_dev = 1 + np.round(3 * drift).astype(np.int64)
        k = self.rng.integers(0, 1 << 30, n) % n_dev
        device = RING_DEVICE_BASE + (self.chunk * 100_000 + ring) * 10 + k
        ring_ip = _public_ipv4(
            splitmix64((self.chunk * 100_000 + ring) * 16 + k + self.config.seed)
        )
        use_carrier = self.rng.random(n) < 0.2 + 0.3 * drift
        ip = np.where(
            use_carrier,
            carrier_ip(self.rng.integers(0, CARRIER_IPS, n), self.config.seed),
            ring_ip.astype(np.int64),
        )
        median = 60 - 15 * drift
        amount = self._amount(median, 0.5 + 0.2 * float(self.config.hard), n)
        delay = self.rng.uniform(2, 30, n) * MINUTE * (1 + 12 * drift)
        category = self._categories(("fashion", "electronics", "beauty"), n)
        return self._orders(cust, t, amount, category, "multi_account", device, ip, delay)

    def new_accounts(self, claims: int) -> Purchases:
        """Fresh accounts claim big within days of signing up, then vanish."""
        pop = self.pop
        accounts = np.flatnonzero(pop.role == ROLE_NEW_ACCOUNT)
        cust = self._spread(accounts, claims)
        n = cust.size
        room = np.minimum(pop.active_until[cust], self.config.days - 0.01) - pop.signup_day[cust]
        t = pop.signup_day[cust] + self.rng.random(n) * np.minimum(3.0, room * 0.999)
        drift = self._drift(t)
        device = NEW_DEVICE_BASE + pop.offset + cust
        farm = _public_ipv4(splitmix64(self.rng.integers(0, 20, n) + 10**9 + self.config.seed))
        own = _public_ipv4(splitmix64(self.rng.integers(0, 2**62, n)))
        ip = np.where(self.rng.random(n) < 0.4 * (1 - 0.5 * drift), farm, own).astype(np.int64)
        amount = self._amount(180 - 100 * drift, 0.4 + 0.2 * float(self.config.hard), n)
        delay = self.rng.uniform(1, 20, n) * MINUTE * (1 + 20 * drift)
        category = self._categories(("electronics", "travel"), n)
        return self._orders(cust, t, amount, category, "new_account", device, ip, delay)

    def velocity(self, claims: int) -> Purchases:
        """Scripted bursts of small orders, each claimed within minutes."""
        hard = self.config.hard
        low, high = (3, 9) if hard else (6, 21)
        sizes = self.rng.integers(low, high, max(1, claims // ((low + high) // 2) + 1))
        sizes = sizes[np.cumsum(sizes) <= claims] if claims else sizes[:0]
        if sizes.sum() < claims:
            sizes = np.append(sizes, claims - sizes.sum())
        owners, t0 = self._honest_alive_at(sizes.size, "velocity")
        sizes = sizes[: owners.size]
        cust = np.repeat(owners, sizes)
        start = np.repeat(t0, sizes)
        duration = 60 * MINUTE * (1 + 5 * self._drift(start))
        t = np.minimum(start + self.rng.random(cust.size) * duration, self.config.days - 1e-4)
        n = cust.size
        globals_ = self.pop.offset + cust
        ip = np.where(
            self.rng.random(n) < 0.5,
            home_ip(globals_, self.config.seed),
            carrier_ip(self.rng.integers(0, CARRIER_IPS, n), self.config.seed),
        )
        amount = self._amount(15.0, 0.4, n)
        delay = self.rng.uniform(1, 5, n) * MINUTE
        category = self._categories(("groceries", "entertainment", "beauty"), n)
        return self._orders(cust, t, amount, category, "velocity", 2 * globals_, ip, delay)

    def claim_then_return(self, claims: int) -> Purchases:
        """A big order claimed at once and returned within days."""
        cust, t = self._honest_alive_at(claims, "claim_then_return")
        n = cust.size
        drift = self._drift(t)
        globals_ = self.pop.offset + cust
        amount = self._amount(250 - 130 * drift, 0.5 + 0.1 * float(self.config.hard), n)
        category = self._categories(("electronics", "fashion"), n)
        delay = self.rng.uniform(2, 30, n) * MINUTE * (1 + 20 * drift)
        orders = self._orders(
            cust, t, amount, category, "claim_then_return", 2 * globals_,
            home_ip(globals_, self.config.seed), delay,
        )  # fmt: skip
        orders.return_delay = self.rng.uniform(2, 10, n) * (1 + 2 * drift)
        return orders

    def receipt_reuse(self, claims: int, honest: Purchases) -> tuple[Purchases, DuplicateClaims]:
        """Receipts claimed twice by their owner, or shown by another customer."""
        days = self.config.days
        eligible = np.flatnonzero(honest.claimed & (honest.t + honest.claim_delay < days - 21))
        if eligible.size == 0 or claims == 0:
            return self._orders(*_empty_order_args()), DuplicateClaims(
                np.zeros(0, np.int64), np.zeros(0)
            )
        src = eligible[self.rng.integers(0, eligible.size, claims)]
        same = self.rng.random(claims) < 0.6
        dup_src = src[same]
        dup = DuplicateClaims(
            source=dup_src,
            delay=honest.claim_delay[dup_src] + self.rng.uniform(1, 20, dup_src.size),
        )
        cross_src = src[~same]
        owners, _ = self._honest_alive_at(cross_src.size, "receipt_reuse")
        cross_src = cross_src[: owners.size]
        t = np.minimum(honest.t[cross_src] + self.rng.uniform(1, 20, cross_src.size), days - 1e-3)
        t = np.maximum(t, np.maximum(self.pop.signup_day[owners], 0) + 1e-3)
        n = owners.size
        globals_ = self.pop.offset + owners
        orders = self._orders(
            owners, t, self._amount(12.0, 0.4, n), honest.category[cross_src], "receipt_reuse",
            2 * globals_, home_ip(globals_, self.config.seed),
            self.rng.uniform(5, 120, n) * MINUTE,
        )  # fmt: skip
        orders.claim_amount = honest.amount[cross_src]
        orders.receipt_source = cross_src
        keep = orders.t < days - orders.claim_delay
        return orders.take(np.flatnonzero(keep)), dup


def _empty_order_args() -> tuple[
    IntArray, FloatArray, FloatArray, IntArray, str, IntArray, IntArray, FloatArray
]:
    z_i = np.zeros(0, dtype=np.int64)
    z_f = np.zeros(0, dtype=np.float64)
    return z_i, z_f, z_f, z_i, "receipt_reuse", z_i, z_i, z_f


def make_fraud(
    maker: FraudMaker, honest: Purchases, honest_claims: int
) -> tuple[Purchases, DuplicateClaims]:
    """All fraudulent orders of a chunk and the duplicate claims, sized to the fraud share."""
    counts = pattern_counts(maker.config, honest_claims)
    reuse, duplicates = maker.receipt_reuse(counts["receipt_reuse"], honest)
    parts = [
        maker.rings(counts["multi_account"]),
        maker.new_accounts(counts["new_account"]),
        maker.velocity(counts["velocity"]),
        maker.claim_then_return(counts["claim_then_return"]),
        reuse,
    ]
    return Purchases.concat(parts), duplicates
