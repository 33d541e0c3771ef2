"""Customers of one chunk: who they are, their latent segment and personal parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulation.world import (
    BoolArray,
    FloatArray,
    IntArray,
    SegmentArrays,
    WorldConfig,
    response,
)

ROLE_LEGIT, ROLE_RING, ROLE_NEW_ACCOUNT = 0, 1, 2
ROLES: tuple[str, ...] = ("legit", "multi_account_ring", "new_account_abuser")
DAYS_BEFORE_START = 3 * 365  # existing customers signed up in the three years before


@dataclass
class Population:
    """Per-customer arrays of one chunk (index i is customer `offset + i`)."""

    offset: int
    segment: IntArray
    role: IntArray
    signup_day: FloatArray  # days since the simulation start (negative: before it)
    daily_rate: FloatArray
    basket_mu: FloatArray
    basket_sigma: FloatArray
    freq_gain: FloatArray
    basket_gain: FloatArray
    half_rate: FloatArray
    threshold: FloatArray
    return_prob: FloatArray
    claim_prob: FloatArray
    churn_base: FloatArray
    visit_prob: FloatArray
    holdout: BoolArray
    experiment_eligible: BoolArray
    variant: IntArray  # 0 control, 1 treatment (used only if eligible)
    payout_method: IntArray
    region: IntArray  # -1 unknown
    age_band: IntArray  # -1 unknown
    acquisition: IntArray
    ring: IntArray  # ring number within the chunk, -1 if none
    active_until: FloatArray  # fraud accounts stop after their abuse; others: inf

    @property
    def n(self) -> int:
        """Number of customers in the chunk."""
        return int(self.segment.size)

    def basket_mean(self, rate: FloatArray | float, config: WorldConfig) -> FloatArray:
        """Expected order amount under a rate (log-normal mean times the basket response)."""
        gain = response(
            rate,
            self.basket_gain,
            self.half_rate,
            self.threshold,
            hard=config.hard,
            max_rate=max(config.rate_grid),
        )
        return np.asarray(
            np.exp(self.basket_mu + self.basket_sigma**2 / 2) * gain, dtype=np.float64
        )


def draw_population(
    config: WorldConfig,
    segments: SegmentArrays,
    offset: int,
    n: int,
    fraud_accounts: tuple[int, int],
    rng: np.random.Generator,
) -> Population:
    """Draw the customers of one chunk.

    Args:
        config: the world.
        segments: segment parameters of the preset.
        offset: global index of the chunk's first customer.
        n: customers in the chunk.
        fraud_accounts: how many ring members and new-account abusers to reserve.
        rng: the chunk's random generator.

    Returns:
        The chunk's population, fraud accounts included.
    """
    existing = rng.random(n) < config.existing_share
    seg_existing = _choice(rng, segments.share_existing, n)
    seg_new = _choice(rng, segments.share_new, n)
    segment = np.where(existing, seg_existing, seg_new)
    # new sign-ups grow slightly over time (u ** 0.8 leans late)
    signup = np.where(
        existing,
        -rng.random(n) * DAYS_BEFORE_START,
        rng.random(n) ** 0.8 * config.days,
    )
    hetero = 1.0 if config.hard else 2.0  # gamma shape: lower is noisier
    daily_rate = segments.daily_rate[segment] * rng.gamma(hetero, 1 / hetero, n)
    mu_noise = 0.4 if config.hard else 0.25
    basket_mu = segments.basket_mu[segment] + rng.normal(0, mu_noise, n)
    responder = rng.random(n) < segments.responder_share[segment]
    sensitivity = responder * rng.lognormal(0, 0.3, n)
    threshold = rng.uniform(0.015, 0.045, n)
    region = np.where(rng.random(n) < 0.08, -1, rng.integers(0, 5, n))
    age_band = np.where(rng.random(n) < 0.15, -1, rng.integers(0, 6, n))
    pop = Population(
        offset=offset,
        segment=segment.astype(np.int64),
        role=np.zeros(n, dtype=np.int64),
        signup_day=signup,
        daily_rate=daily_rate,
        basket_mu=basket_mu,
        basket_sigma=segments.basket_sigma[segment],
        freq_gain=segments.freq_gain[segment] * sensitivity,
        basket_gain=segments.basket_gain[segment] * sensitivity,
        half_rate=segments.half_rate[segment],
        threshold=threshold,
        return_prob=segments.return_prob[segment],
        claim_prob=np.clip(segments.claim_prob[segment] + rng.normal(0, 0.05, n), 0.2, 1.0),
        churn_base=segments.churn_base[segment] * rng.lognormal(0, 0.3, n),
        visit_prob=segments.visit_prob[segment],
        holdout=rng.random(n) < config.holdout_share,
        experiment_eligible=rng.random(n) < config.experiment_share,
        variant=(rng.random(n) < 0.5).astype(np.int64),
        payout_method=_choice(rng, np.array([0.35, 0.2, 0.25, 0.1, 0.1]), n),
        region=region.astype(np.int64),
        age_band=age_band.astype(np.int64),
        acquisition=_choice(rng, np.array([0.4, 0.2, 0.15, 0.15, 0.1]), n),
        ring=np.full(n, -1, dtype=np.int64),
        active_until=np.full(n, np.inf),
    )
    _reserve_fraud_accounts(pop, config, fraud_accounts, rng)
    return pop


def _reserve_fraud_accounts(
    pop: Population, config: WorldConfig, counts: tuple[int, int], rng: np.random.Generator
) -> None:
    """Turn some customers into ring members and new-account abusers (no honest buying)."""
    n_ring, n_new = counts
    chosen = rng.choice(pop.n, size=min(pop.n // 4, n_ring + n_new), replace=False)
    ring_idx, new_idx = np.sort(chosen[:n_ring]), np.sort(chosen[n_ring:])
    last_start = max(config.days - 60, 1)
    if ring_idx.size:
        sizes = rng.integers(3, 9, ring_idx.size)  # ring sizes 3..8, cut to the members
        ring_of = np.repeat(np.arange(sizes.size), sizes)[: ring_idx.size]
        ring_start = rng.random(int(ring_of.max()) + 1) * last_start
        pop.ring[ring_idx] = ring_of
        pop.role[ring_idx] = ROLE_RING
        pop.signup_day[ring_idx] = ring_start[ring_of] + rng.random(ring_idx.size) * 3
        pop.active_until[ring_idx] = pop.signup_day[ring_idx] + 60
    if new_idx.size:
        pop.role[new_idx] = ROLE_NEW_ACCOUNT
        pop.signup_day[new_idx] = rng.random(new_idx.size) * max(config.days - 10, 1)
        pop.active_until[new_idx] = pop.signup_day[new_idx] + 5
    fraud = pop.role != ROLE_LEGIT
    pop.daily_rate[fraud] = 0.0
    pop.churn_base[fraud] = 0.0
    pop.visit_prob[fraud] = 0.6
    pop.holdout[fraud] = False
    pop.experiment_eligible[fraud] = False


def _choice(rng: np.random.Generator, probs: FloatArray, n: int) -> IntArray:
    """N draws of an index with the given probabilities (vectorized inverse CDF)."""
    cdf = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), probs.size - 1).astype(
        np.int64
    )


def choice_rows(rng: np.random.Generator, probs: FloatArray, rows: IntArray) -> IntArray:
    """One draw per row, each row using its own probability vector `probs[rows[i]]`."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(rows.size)
    picked = np.asarray((u[:, None] >= cdf[rows]).sum(axis=1), dtype=np.int64)
    return np.asarray(np.minimum(picked, probs.shape[1] - 1), dtype=np.int64)
