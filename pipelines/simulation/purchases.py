"""Orders as arrays: honest purchases expanded from daily counts, plus what follows them.

A `Purchases` bundle carries, per order, everything needed to write the transaction, its
claim and its return: who, when (days since the start), how much, what, where, and how the
claim is made (delay, device, IP).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipelines.simulation.behaviour import Behaviour
from pipelines.simulation.population import Population, choice_rows
from pipelines.simulation.world import (
    HOURLY_WEIGHTS,
    BoolArray,
    FloatArray,
    IntArray,
    SegmentArrays,
    WorldConfig,
    response,
)

NO_ABUSE = -1
CARRIER_IPS = 4000  # shared mobile-carrier addresses: many honest customers behind each
SECONDARY_DEVICE_SHARE = 0.15
HOME_IP_SHARE, CARRIER_IP_SHARE = 0.6, 0.3
FULL_RETURN_SHARE = 0.7
PARTIAL_RETURN_SHARE = (0.2, 0.9)  # a partial return gives back a uniform share in this range
RETURN_DELAY_DAYS = (1.0, 30.0)  # a return comes uniformly this many days after its order
CLAIM_DELAY_MEDIAN_DAYS = 2 / 24  # an honest claim's delay is log-normal around this median
CLAIM_DELAY_SIGMA = 1.2
CLAIM_DELAY_CAP_DAYS = 30.0
MIN_AMOUNT = 1.0


@dataclass
class Purchases:
    """Per-order arrays (all the same length)."""

    customer: IntArray  # index within the chunk
    t: FloatArray  # days since the simulation start
    amount: FloatArray
    category: IntArray
    channel: IntArray
    merchant: IntArray
    abuse: IntArray  # index into ABUSE_TYPES, NO_ABUSE for honest orders
    claimed: BoolArray
    claim_delay: FloatArray  # days
    claim_amount: FloatArray  # the purchase amount stated on the claim
    device: IntArray  # numeric device code
    ip: IntArray  # IPv4 as an integer
    return_delay: FloatArray  # days after the purchase, nan if kept
    return_share: FloatArray
    receipt_source: IntArray  # order whose receipt the claim shows, -1 for its own

    @property
    def size(self) -> int:
        """Number of orders."""
        return int(self.customer.size)

    @classmethod
    def concat(cls, parts: list[Purchases]) -> Purchases:
        """Stack bundles."""
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def take(self, index: IntArray) -> Purchases:
        """The orders at `index`, in that order."""
        return Purchases(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def splitmix64(x: IntArray | np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash of integers (vectorized; deterministic everywhere)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def home_ip(global_customer: IntArray, seed: int) -> IntArray:
    """Each customer's home address, a fixed function of the customer and the seed."""
    h = splitmix64(
        np.asarray(global_customer, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed)
    )
    return np.asarray(_public_ipv4(h), dtype=np.int64)


def carrier_ip(index: IntArray, seed: int) -> IntArray:
    """The shared carrier addresses (CARRIER_IPS of them for the whole world)."""
    h = splitmix64(
        np.asarray(index, dtype=np.uint64) + np.uint64(seed) * np.uint64(1_000_003) + np.uint64(7)
    )
    return np.asarray(_public_ipv4(h), dtype=np.int64)


def _public_ipv4(h: np.ndarray) -> np.ndarray:
    """Map hashes onto 11.0.0.0-222.255.255.255 (clear of 0/8, 10/8 and multicast)."""
    span = np.uint64(212 * 2**24)
    return (h % span) + np.uint64(11 * 2**24)


def time_of_day(rng: np.random.Generator, floor: FloatArray, ceil: FloatArray) -> FloatArray:
    """Draw times of day in [floor, ceil) from the hourly purchase profile."""
    weights = np.asarray(HOURLY_WEIGHTS)
    knots = np.linspace(0.0, 1.0, weights.size + 1)
    cdf = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    lo = np.interp(floor, knots, cdf)
    hi = np.interp(ceil, knots, cdf)
    u = lo + rng.random(floor.size) * (hi - lo)
    t = np.interp(u, cdf, knots)
    return np.asarray(np.clip(t, floor, np.nextafter(ceil, 0)), dtype=np.float64)


def round_cents(x: FloatArray) -> FloatArray:
    """Money to two decimals."""
    return np.asarray(np.round(x, 2), dtype=np.float64)


def honest_purchases(
    beh: Behaviour,
    pop: Population,
    config: WorldConfig,
    segments: SegmentArrays,
    merchant_cdf: list[FloatArray],
    rng: np.random.Generator,
) -> Purchases:
    """Expand daily purchase counts into orders, with their claims and returns.

    Args:
        beh: the chunk's behaviour.
        pop: the chunk's customers.
        config: the world.
        segments: segment parameters.
        merchant_cdf: per category, cumulative popularity of its merchants (global indices
            are `merchant_offset[category] + position`, see `pick_merchants`).
        rng: the chunk's generator.

    Returns:
        Every honest order of the chunk.
    """
    cust = np.repeat(beh.buy_customer, beh.buy_count)
    day = np.repeat(beh.buy_day, beh.buy_count)
    floor = np.repeat(beh.buy_floor, beh.buy_count)
    ceil = np.repeat(beh.buy_ceil, beh.buy_count)
    rate = np.repeat(beh.buy_rate, beh.buy_count)
    n = cust.size
    t = day + time_of_day(rng, floor, ceil)
    basket = response(
        rate,
        pop.basket_gain[cust],
        pop.half_rate[cust],
        pop.threshold[cust],
        hard=config.hard,
        max_rate=max(config.rate_grid),
    )
    amount = np.exp(pop.basket_mu[cust] + pop.basket_sigma[cust] * rng.standard_normal(n)) * basket
    amount = round_cents(np.maximum(amount, MIN_AMOUNT))
    seg = pop.segment[cust]
    category = choice_rows(rng, segments.categories, seg)
    channel = choice_rows(rng, segments.channels, seg)
    merchant = pick_merchants(rng, category, merchant_cdf)
    returned = rng.random(n) < pop.return_prob[cust]
    share = np.where(rng.random(n) < FULL_RETURN_SHARE, 1.0, rng.uniform(*PARTIAL_RETURN_SHARE, n))
    globals_ = pop.offset + cust
    return Purchases(
        customer=cust,
        t=t,
        amount=amount,
        category=category,
        channel=channel,
        merchant=merchant,
        abuse=np.full(n, NO_ABUSE),
        claimed=rng.random(n) < pop.claim_prob[cust],
        claim_delay=np.minimum(
            rng.lognormal(np.log(CLAIM_DELAY_MEDIAN_DAYS), CLAIM_DELAY_SIGMA, n),
            CLAIM_DELAY_CAP_DAYS,
        ),
        claim_amount=amount,
        device=2 * globals_ + (rng.random(n) < SECONDARY_DEVICE_SHARE),
        ip=pick_ips(rng, globals_, config.seed),
        return_delay=np.where(returned, rng.uniform(*RETURN_DELAY_DAYS, n), np.nan),
        return_share=share,
        receipt_source=np.full(n, -1),
    )


def pick_merchants(
    rng: np.random.Generator, category: IntArray, merchant_cdf: list[FloatArray]
) -> IntArray:
    """A merchant of each order's category, by popularity (global merchant index)."""
    offsets = np.cumsum([0] + [c.size for c in merchant_cdf[:-1]])
    u = rng.random(category.size)
    out = np.empty(category.size, dtype=np.int64)
    for c, cdf in enumerate(merchant_cdf):  # one pass per category, not per order
        rows = np.flatnonzero(category == c)
        pos = np.minimum(np.searchsorted(cdf, u[rows], side="right"), cdf.size - 1)
        out[rows] = offsets[c] + pos
    return out


def pick_ips(rng: np.random.Generator, global_customer: IntArray, seed: int) -> IntArray:
    """Home address mostly, a shared carrier address often, a random one sometimes."""
    n = global_customer.size
    u = rng.random(n)
    carrier = carrier_ip(rng.integers(0, CARRIER_IPS, n), seed)
    other = np.asarray(_public_ipv4(splitmix64(rng.integers(0, 2**62, n))), dtype=np.int64)
    return np.where(
        u < HOME_IP_SHARE,
        home_ip(global_customer, seed),
        np.where(u < HOME_IP_SHARE + CARRIER_IP_SHARE, carrier, other),
    )
