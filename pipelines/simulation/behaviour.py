"""Day-by-day behaviour of a chunk: visits, exposures, purchase counts and churn.

The loop runs over days, never over customers: each step is a handful of numpy operations
on the whole chunk. A purchase on a day is always placed after the day's "floor": the
moment the customer signed up, an exposure started, or an exposure expired that day, so
that every purchase falls inside the exposure whose rate drove it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulation.population import Population
from pipelines.simulation.world import (
    CATEGORIES,
    EXPERIMENT_BOOST_STEPS,
    OFFERS,
    BoolArray,
    FloatArray,
    IntArray,
    SegmentArrays,
    WorldConfig,
    response,
)

POLICY_LOGGING, POLICY_HOLDOUT, POLICY_EXPERIMENT = 0, 1, 2
EXPERIMENT_WINDOW = (0.40, 0.65)  # share of the simulated period
CASHBACK_HALF_LIFE_DAYS = 60.0
CASHBACK_CHURN_SCALE = 10.0  # euros of recent cashback that cut the churn hazard by 1/e
INACTIVITY_WEIGHT = 0.6
INACTIVITY_CAP = 5.0
EXISTING_ALIVE_SHARE = 0.88
TIERED_BONUS, CUMULATIVE_BONUS = 0.004, 0.003  # expected bonus rate of those offers


@dataclass
class Behaviour:
    """What the daily loop produced for one chunk."""

    exp_customer: IntArray
    exp_start: FloatArray  # days since the simulation start
    exp_rate: FloatArray
    exp_offer: IntArray  # index into OFFERS, -1 for the default rate card
    exp_policy: IntArray
    exp_variant: IntArray  # -1 outside the experiment
    exp_propensity: FloatArray
    exp_explored: BoolArray
    exp_policy_rate: FloatArray
    buy_customer: IntArray
    buy_day: IntArray
    buy_count: IntArray
    buy_floor: FloatArray  # earliest time of day (fraction) for the day's purchases
    buy_ceil: FloatArray  # latest time of day (fraction), exclusive
    buy_rate: FloatArray  # effective rate that drove the purchases
    churn_day: FloatArray  # inf while alive at the end
    assigned_at: FloatArray  # first experiment assignment, inf if none


@dataclass
class _Log:
    exposures: list[tuple[np.ndarray, ...]]
    purchases: list[tuple[np.ndarray, ...]]


def effective_rate(
    rate: FloatArray, offer: IntArray, category_share: FloatArray, default_rate: float
) -> FloatArray:
    """The rate that drives behaviour under an offer: bonuses included, categories diluted.

    Args:
        rate: the exposure's base rate.
        offer: index into OFFERS (-1: the default card).
        category_share: per exposure, the customer's share of spend in the offer's category.
        default_rate: the default rate card (paid outside an offer's category).
    """
    kinds = np.array([o.kind for o in OFFERS] + ["flat"])
    kind = kinds[offer]  # -1 picks the trailing "flat"
    eff = rate.copy()
    eff = np.where(kind == "tiered", rate + TIERED_BONUS, eff)
    eff = np.where(kind == "cumulative", rate + CUMULATIVE_BONUS, eff)
    diluted = category_share * rate + (1 - category_share) * default_rate
    return np.asarray(np.where(kind == "category", diluted, eff), dtype=np.float64)


class _DayLoop:
    """State of a chunk while its days run: exposures in force, recency, cashback, churn."""

    def __init__(
        self,
        pop: Population,
        config: WorldConfig,
        segments: SegmentArrays,
        season: FloatArray,
        seasonal_offer_days: FloatArray,
        rng: np.random.Generator,
    ) -> None:
        n = pop.n
        self.pop, self.config, self.segments, self.rng = pop, config, segments, rng
        self.season, self.seasonal_offer_days = season, seasonal_offer_days
        self.grid = np.asarray(config.rate_grid)
        self.offer_cdf = np.cumsum([o.share for o in OFFERS])
        self.seasonal_idx = next(i for i, o in enumerate(OFFERS) if o.kind == "seasonal")
        self.cat_share = np.zeros((len(OFFERS), n))
        for i, offer in enumerate(OFFERS):  # one row per catalog entry
            if offer.kind == "category" and offer.category:
                column = CATEGORIES.index(offer.category)
                self.cat_share[i] = segments.categories[pop.segment, column]
        self.experiment_days = (
            int(config.days * EXPERIMENT_WINDOW[0]),
            int(config.days * EXPERIMENT_WINDOW[1]),
        )
        policy_pos = np.searchsorted(self.grid, segments.policy_rate[pop.segment] - 1e-12)
        self.boost_idx = np.minimum(policy_pos + EXPERIMENT_BOOST_STEPS, self.grid.size - 1)
        existing = pop.signup_day < 0
        self.alive = np.where(existing, rng.random(n) < EXISTING_ALIVE_SHARE, True)
        self.last_buy = np.where(
            existing, -rng.exponential(1 / np.maximum(pop.daily_rate, 1e-3)), pop.signup_day
        )
        self.exp_until = np.full(n, -np.inf)
        self.exp_eff = np.zeros(n)
        self.cashback = np.zeros(n)
        self.churn_day = np.where(self.alive, np.inf, -1.0)
        self.assigned_at = np.full(n, np.inf)
        self.decay = 0.5 ** (1 / CASHBACK_HALF_LIFE_DAYS)
        self.basket_now = pop.basket_mean(config.default_rate, config)
        self.log = _Log([], [])

    def orders(
        self, rows: IntArray, day: int, lo: FloatArray, hi: FloatArray, rate: FloatArray
    ) -> IntArray:
        """Draw and log orders of `rows` in [lo, hi) of `day` at `rate`; counts per row."""
        pop = self.pop
        freq = response(
            rate,
            pop.freq_gain[rows],
            pop.half_rate[rows],
            pop.threshold[rows],
            hard=self.config.hard,
            max_rate=float(self.grid.max()),
        )
        lam = pop.daily_rate[rows] * self.season[pop.segment[rows], day] * freq
        counts = self.rng.poisson(lam * np.clip(hi - lo, 0, None))
        hit = counts > 0
        if hit.any():
            k = int(hit.sum())
            self.log.purchases.append(
                (rows[hit], np.full(k, day), counts[hit], lo[hit], hi[hit], rate[hit])
            )
            self.last_buy[rows[hit]] = day + 1
        return np.asarray(counts, dtype=np.int64)

    def start_exposures(self, new: IntArray, day: int, floor: FloatArray, u: FloatArray) -> None:
        """Open an exposure for each visiting customer, after the day's floor."""
        start = day + floor[new] + (1 - floor[new]) * u
        rate, offer, policy, variant, prop, explored, p_rate = _choose_offers(
            self.pop, new, day, self.config, self.segments, self.grid, self.boost_idx,
            self.experiment_days, self.offer_cdf, self.seasonal_idx,
            self.seasonal_offer_days[day], self.rng,
        )  # fmt: skip
        share = self.cat_share[np.maximum(offer, 0), new]
        self.exp_until[new] = start + self.config.exposure_days
        self.exp_eff[new] = effective_rate(rate, offer, share, self.config.default_rate)
        default = np.full(new.size, self.config.default_rate)
        self.orders(new, day, floor[new], start - day, default)  # before the visit
        floor[new] = start - day
        first = (policy == POLICY_EXPERIMENT) & np.isinf(self.assigned_at[new])
        self.assigned_at[new[first]] = start[first]
        self.log.exposures.append(
            (new, start, rate, offer, policy, variant, prop, explored, p_rate)
        )

    def churn(
        self, day: int, active: BoolArray, counts: IntArray, rate: FloatArray, u: FloatArray
    ) -> None:
        """Churn hazard rises with inactivity and falls with recent cashback."""
        pop = self.pop
        gained = counts * rate * self.basket_now * pop.claim_prob
        self.cashback = self.cashback * self.decay + gained
        inactivity = np.clip((day - self.last_buy) * pop.daily_rate, 0, INACTIVITY_CAP)
        hazard = (
            pop.churn_base
            * (1 + INACTIVITY_WEIGHT * inactivity)
            * np.exp(-self.cashback / CASHBACK_CHURN_SCALE)
        )
        churned = active & (u[0] < hazard)
        self.alive &= ~churned
        self.churn_day[churned] = day + u[1, churned]

    def step(self, day: int) -> None:
        """One day: the expiring exposures' last hours, new exposures, orders, churn."""
        pop, n = self.pop, self.pop.n
        u = self.rng.random((4, n))
        active = self.alive & (pop.signup_day < day + 1) & (pop.active_until > day)
        signup_floor = np.clip(pop.signup_day - day, 0, 1)
        valid = self.exp_until >= day + 1
        expired_today = (self.exp_until > day) & ~valid
        floor = np.maximum(signup_floor, np.where(expired_today, self.exp_until - day, 0.0))
        # the expiring exposure still covers the start of its last day (read it before a
        # new exposure of the same customer overwrites its state)
        tail = np.flatnonzero(expired_today & active)
        self.orders(tail, day, signup_floor[tail], self.exp_until[tail] - day, self.exp_eff[tail])
        new = np.flatnonzero(active & ~valid & (u[0] < pop.visit_prob))
        if new.size:
            self.start_exposures(new, day, floor, u[1, new])
        rate_today = np.where(self.exp_until >= day + 1, self.exp_eff, self.config.default_rate)
        everyone = np.flatnonzero(active)
        counts = np.zeros(n, dtype=np.int64)
        counts[everyone] = self.orders(
            everyone, day, floor[everyone], np.ones(everyone.size), rate_today[everyone]
        )
        self.churn(day, active, counts, rate_today, u[2:])


def simulate_behaviour(
    pop: Population,
    config: WorldConfig,
    segments: SegmentArrays,
    season: FloatArray,
    seasonal_offer_days: FloatArray,
    rng: np.random.Generator,
) -> Behaviour:
    """Run the chunk through every simulated day.

    Args:
        pop: the chunk's customers.
        config: the world.
        segments: segment parameters.
        season: purchase multiplier per (segment, day).
        seasonal_offer_days: 1.0 on days the seasonal offer runs.
        rng: the chunk's generator.

    Returns:
        Exposures, purchase counts per customer-day, churn and assignment times.
    """
    loop = _DayLoop(pop, config, segments, season, seasonal_offer_days, rng)
    for day in range(config.days):
        loop.step(day)
    return _assemble(loop.log, loop.churn_day, loop.assigned_at)


def _choose_offers(
    pop: Population,
    new: IntArray,
    day: int,
    config: WorldConfig,
    segments: SegmentArrays,
    grid: FloatArray,
    boost_idx: IntArray,
    experiment_days: tuple[int, int],
    offer_cdf: FloatArray,
    seasonal_idx: int,
    seasonal_today: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, IntArray, IntArray, IntArray, FloatArray, BoolArray, FloatArray]:
    """Rate, offer and logging facts for new exposures, by DESIGN.md's precedence.

    Holdout customers get the default card; customers in the running experiment get their
    variant's rate (no exploration); everyone else gets the logging policy's rate for their
    segment, or with probability `exploration` a uniform draw from the grid.
    """
    k = new.size
    policy_rate = segments.policy_rate[pop.segment[new]]
    explored = rng.random(k) < config.exploration
    drawn = grid[rng.integers(0, grid.size, k)]
    rate = np.where(explored, drawn, policy_rate)
    on_policy = np.isclose(rate, policy_rate)
    propensity = (1 - config.exploration) * on_policy + config.exploration / grid.size
    policy = np.full(k, POLICY_LOGGING)
    variant = np.full(k, -1)

    lo, hi = experiment_days
    in_exp = pop.experiment_eligible[new] & ~pop.holdout[new] & (lo <= day < hi)
    treated = pop.variant[new] == 1
    exp_rate = np.where(treated, grid[boost_idx[new]], policy_rate)
    rate = np.where(in_exp, exp_rate, rate)
    explored &= ~in_exp
    propensity = np.where(in_exp, 1.0, propensity)
    policy = np.where(in_exp, POLICY_EXPERIMENT, policy)
    variant = np.where(in_exp, pop.variant[new], variant)

    offer = np.minimum(
        np.searchsorted(offer_cdf, rng.random(k) * offer_cdf[-1]), len(offer_cdf) - 1
    )
    if seasonal_today < 0.5:  # out of season the seasonal share goes to the first flat offer
        offer = np.where(offer == seasonal_idx, 0, offer)

    hold = pop.holdout[new]
    rate = np.where(hold, config.default_rate, rate)
    offer = np.where(hold, -1, offer)
    propensity = np.where(hold, 1.0, propensity)
    policy = np.where(hold, POLICY_HOLDOUT, policy)
    explored &= ~hold
    return (
        rate.astype(np.float64),
        offer.astype(np.int64),
        policy.astype(np.int64),
        variant.astype(np.int64),
        propensity.astype(np.float64),
        explored,
        policy_rate.astype(np.float64),
    )


def _assemble(log: _Log, churn_day: FloatArray, assigned_at: FloatArray) -> Behaviour:
    def cat(rows: list[tuple[np.ndarray, ...]], i: int, dtype: type) -> np.ndarray:
        if not rows:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([r[i] for r in rows]).astype(dtype)

    e, p = log.exposures, log.purchases
    return Behaviour(
        exp_customer=cat(e, 0, np.int64),
        exp_start=cat(e, 1, np.float64),
        exp_rate=cat(e, 2, np.float64),
        exp_offer=cat(e, 3, np.int64),
        exp_policy=cat(e, 4, np.int64),
        exp_variant=cat(e, 5, np.int64),
        exp_propensity=cat(e, 6, np.float64),
        exp_explored=cat(e, 7, np.bool_),
        exp_policy_rate=cat(e, 8, np.float64),
        buy_customer=cat(p, 0, np.int64),
        buy_day=cat(p, 1, np.int64),
        buy_count=cat(p, 2, np.int64),
        buy_floor=cat(p, 3, np.float64),
        buy_ceil=cat(p, 4, np.float64),
        buy_rate=cat(p, 5, np.float64),
        churn_day=churn_day,
        assigned_at=assigned_at,
    )
