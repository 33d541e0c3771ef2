"""The baseline of the simulation benchmark: a plain pandas generator of the transactions table.

It is what a data scientist would write with pandas and numpy to get the same table from the
same world: customers drawn into the simulator's segments (their parameters are read from
`pipelines.simulation.world`, the world's definition, so both generators model the same
people), a daily purchase intensity with weekend, December and sales seasonality, a weekly
cashback rate per customer (the segment's policy rate, sometimes explored, the default rate
card for a holdout) that raises purchase frequency and basket size, churn, baskets,
categories, merchants by popularity, channels, and returns linked to their purchases. It
simplifies exposures, claims and fraud away. Customers are processed in blocks of a
customer x day matrix; the table is assembled in one DataFrame with string ids (pandas'
default object strings) and written to one parquet file with `DataFrame.to_parquet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.simulation.world import CATEGORIES, CHANNELS, HOURLY_WEIGHTS, SEGMENTS

RATE_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
DEFAULT_RATE = 0.01
EXPLORATION = 0.2
HOLDOUT_SHARE = 0.05
EXISTING_SHARE = 0.7
ALIVE_AT_START = 0.88
CHURN_MULTIPLIER = 1.5  # the average effect of inactivity on the daily churn hazard
MERCHANTS_PER_CUSTOMERS = 200
RETURN_DELAY_DAYS = (1.0, 30.0)
FULL_RETURN_SHARE = 0.7
COLUMNS = [
    "txn_id",
    "customer_id",
    "merchant_id",
    "ts",
    "amount",
    "category",
    "channel",
    "original_txn_id",
]


@dataclass(frozen=True)
class BaselineConfig:
    """What to generate.

    Attributes:
        customers: number of customers.
        days: number of simulated days.
        seed: random seed.
        start: first simulated day (UTC).
        block_customers: customers per block of the customer x day matrix.
    """

    customers: int
    days: int
    seed: int = 7
    start: str = "2025-01-01"
    block_customers: int = 100_000


def segment_table() -> pd.DataFrame:
    """The segments' parameters, one row per segment."""
    return pd.DataFrame([asdict(s) for s in SEGMENTS])


def calendar(config: BaselineConfig) -> pd.DataFrame:
    """One row per day with the seasonal signals: weekend, December ramp and sales periods."""
    cal = pd.DataFrame({"date": pd.date_range(config.start, periods=config.days, freq="D")})
    month, day = cal["date"].dt.month, cal["date"].dt.day
    cal["weekend"] = (cal["date"].dt.dayofweek >= 5).astype(float)
    cal["december"] = 0.0
    cal.loc[(month == 11) & (day >= 25), "december"] = (day - 25) / 28
    cal.loc[(month == 12) & (day <= 23), "december"] = (day + 5) / 28
    cal.loc[(month == 12) & day.isin([25, 26]), "december"] = -0.6
    thanksgiving_week = (month == 11) & (cal["date"].dt.dayofweek == 4) & day.between(22, 28)
    black_friday = cal.loc[thanksgiving_week, "date"]
    sales = (month == 1) & day.between(2, 15)
    sales |= ((month == 6) & (day >= 25)) | ((month == 7) & (day <= 10))
    for friday in black_friday:
        sales |= cal["date"].between(friday, friday + pd.Timedelta(days=3))
    cal["sales"] = sales.astype(float)
    return cal


def season_by_segment(segments: pd.DataFrame, cal: pd.DataFrame) -> np.ndarray:
    """Purchase multiplier per (segment, day)."""
    weekend = 1 + np.outer(segments["weekend_lift"] - 1, cal["weekend"])
    december = 1 + np.outer(segments["december_lift"], cal["december"])
    sales = 1 + np.outer(segments["sales_lift"], cal["sales"])
    return np.asarray(weekend * december * sales)


def make_customers(
    config: BaselineConfig, segments: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """Customers with their segment, sign-up, churn day and personal parameters."""
    n = config.customers
    k = len(segments)
    share_existing = segments["share_existing"] / segments["share_existing"].sum()
    share_new = segments["share_new"] / segments["share_new"].sum()
    existing = rng.random(n) < EXISTING_SHARE
    segment = np.where(existing, rng.choice(k, n, p=share_existing), rng.choice(k, n, p=share_new))
    seg = segments.iloc[segment].reset_index(drop=True)
    customers = pd.DataFrame(
        {
            "customer_id": "C" + pd.Series(np.arange(n)).astype(str).str.zfill(8),
            "segment": segment,
            "signup_day": np.where(
                existing, -rng.uniform(0, 3 * 365, n), rng.uniform(0, config.days, n)
            ),
            "daily_rate": seg["daily_rate"] * rng.gamma(2.0, 0.5, n),
            "basket_mu": np.log(seg["basket_median"]) + rng.normal(0, 0.25, n),
            "basket_sigma": seg["basket_sigma"],
            "sensitivity": (rng.random(n) < seg["responder_share"]) * rng.lognormal(0, 0.3, n),
            "freq_gain": seg["freq_gain"],
            "basket_gain": seg["basket_gain"],
            "half_rate": seg["half_rate"],
            "return_prob": seg["return_prob"],
            "policy_rate": seg["policy_rate"],
            "holdout": rng.random(n) < HOLDOUT_SHARE,
        }
    )
    hazard = seg["churn_base"] * rng.lognormal(0, 0.3, n) * CHURN_MULTIPLIER
    lifetime = rng.exponential(1 / hazard)
    dead_at_start = existing & (rng.random(n) > ALIVE_AT_START)
    customers["churn_day"] = np.where(
        dead_at_start, -1.0, customers["signup_day"].clip(lower=0) + lifetime
    )
    return customers


def weekly_rates(block: pd.DataFrame, weeks: int, rng: np.random.Generator) -> np.ndarray:
    """The cashback rate each customer gets each week (customers x weeks)."""
    n = len(block)
    grid = np.asarray(RATE_GRID)
    rates = np.repeat(block["policy_rate"].to_numpy()[:, None], weeks, axis=1)
    explored = rng.random((n, weeks)) < EXPLORATION
    rates[explored] = rng.choice(grid, int(explored.sum()))
    rates[block["holdout"].to_numpy()] = DEFAULT_RATE
    return rates


def daily_orders(
    block: pd.DataFrame, season: np.ndarray, days: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Orders per (customer, day) of one block of customers, one row per order."""
    weeks = -(-days // 7)
    rates = weekly_rates(block, weeks, rng)
    freq = 1 + (block["freq_gain"] * block["sensitivity"]).to_numpy()[:, None] * (
        1 - np.exp(-rates / block["half_rate"].to_numpy()[:, None])
    )
    week_of_day = np.arange(days) // 7
    d = np.arange(days)
    active = (block["signup_day"].to_numpy()[:, None] < d + 1) & (
        block["churn_day"].to_numpy()[:, None] > d
    )
    lam = (
        block["daily_rate"].to_numpy()[:, None]
        * season[block["segment"].to_numpy()]
        * freq[:, week_of_day]
        * active
    )
    counts = rng.poisson(lam)
    row, day = np.nonzero(counts)
    n_orders = counts[row, day]
    return pd.DataFrame(
        {
            "customer": np.repeat(block.index.to_numpy()[row], n_orders),
            "day": np.repeat(day, n_orders),
            "rate": np.repeat(rates[row, week_of_day[day]], n_orders),
        }
    )


def merchants_table(config: BaselineConfig, segments: pd.DataFrame) -> pd.DataFrame:
    """Merchants per category (more where people buy more), with a Zipf-like popularity."""
    total = int(np.clip(config.customers // MERCHANTS_PER_CUSTOMERS, 40, 5000))
    demand = pd.DataFrame(segments["categories"].tolist(), columns=list(CATEGORIES)).mean()
    per_category = np.maximum(2, (demand / demand.sum() * total).round()).astype(int)
    merchants = pd.DataFrame({"category": np.repeat(list(CATEGORIES), per_category.to_numpy())})
    merchants["merchant_id"] = "m" + pd.Series(np.arange(len(merchants))).astype(str).str.zfill(5)
    rank = merchants.groupby("category").cumcount() + 1
    merchants["popularity"] = 1 / rank**0.8
    merchants["popularity"] /= merchants.groupby("category")["popularity"].transform("sum")
    return merchants


def _choose_by_group(
    groups: dict[int, np.ndarray], probs: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """For each group of rows, draw an index with that group's probabilities."""
    out = np.empty(size, dtype=np.int64)
    for key, rows in groups.items():
        out[rows] = rng.choice(probs.shape[1], size=rows.size, p=probs[key])
    return out


def describe_orders(
    orders: pd.DataFrame,
    customers: pd.DataFrame,
    segments: pd.DataFrame,
    merchants: pd.DataFrame,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Time of day, amount, category, channel and merchant of every order."""
    n = len(orders)
    cust = customers.iloc[orders["customer"].to_numpy()].reset_index(drop=True)
    hourly = np.asarray(HOURLY_WEIGHTS) / sum(HOURLY_WEIGHTS)
    hours = rng.choice(24, size=n, p=hourly) + rng.random(n)
    t = orders["day"] + hours / 24
    orders["t"] = np.maximum(t, cust["signup_day"])
    basket = 1 + cust["basket_gain"] * cust["sensitivity"] * (
        1 - np.exp(-orders["rate"] / cust["half_rate"])
    )
    amount = np.exp(cust["basket_mu"] + cust["basket_sigma"] * rng.standard_normal(n)) * basket
    orders["amount"] = amount.clip(lower=1.0).round(2)
    orders["customer_id"] = cust["customer_id"]
    orders["return_prob"] = cust["return_prob"]
    by_segment = cust.groupby("segment").indices
    category = _choose_by_group(by_segment, np.array(segments["categories"].tolist()), n, rng)
    channel = _choose_by_group(by_segment, np.array(segments["channels"].tolist()), n, rng)
    orders["category"] = np.asarray(CATEGORIES, dtype=object)[category]
    orders["channel"] = np.asarray(CHANNELS, dtype=object)[channel]
    orders["merchant_id"] = None
    for name, rows in orders.groupby("category").indices.items():
        shop = merchants[merchants["category"] == name]
        orders.iloc[rows, orders.columns.get_loc("merchant_id")] = rng.choice(
            shop["merchant_id"].to_numpy(), size=rows.size, p=shop["popularity"].to_numpy()
        )
    return orders


def returns_of(purchases: pd.DataFrame, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Returns of some purchases: later, by the same customer, never more than the purchase."""
    n = len(purchases)
    returned = rng.random(n) < purchases["return_prob"].to_numpy()
    share = np.where(rng.random(n) < FULL_RETURN_SHARE, 1.0, rng.uniform(0.2, 0.9, n))
    delay = rng.uniform(*RETURN_DELAY_DAYS, n)
    back = purchases.loc[returned].copy()
    back["t"] += delay[returned]
    amount = (back["amount"] * share[returned]).round(2).clip(lower=0.01)
    back["amount"] = -np.minimum(amount, back["amount"])
    back["original_txn_id"] = back["txn_id"]
    back = back[back["t"] < days].sort_values("t", kind="stable").reset_index(drop=True)
    back["txn_id"] = "R" + back.index.astype(str).str.zfill(9)
    return back


def generate(config: BaselineConfig) -> pd.DataFrame:
    """The transactions table of the world, in time order (purchases, then returns).

    Args:
        config: size and seed.

    Returns:
        A frame with the contract's transactions columns.
    """
    rng = np.random.default_rng(config.seed)
    segments = segment_table()
    customers = make_customers(config, segments, rng)
    season = season_by_segment(segments, calendar(config))
    blocks = [
        daily_orders(customers.iloc[i : i + config.block_customers], season, config.days, rng)
        for i in range(0, len(customers), config.block_customers)
    ]
    orders = pd.concat(blocks, ignore_index=True)
    merchants = merchants_table(config, segments)
    orders = describe_orders(orders, customers, segments, merchants, rng)
    purchases = orders.sort_values("t", kind="stable").reset_index(drop=True)
    purchases["txn_id"] = "T" + purchases.index.astype(str).str.zfill(9)
    returns = returns_of(purchases, config.days, rng)
    txns = pd.concat([purchases, returns], ignore_index=True)
    micros = (txns["t"] * 86_400_000_000).round().astype("int64")
    txns["ts"] = pd.Timestamp(config.start, tz="UTC") + pd.to_timedelta(micros, unit="us")
    txns["ts"] = txns["ts"].astype("datetime64[us, UTC]")
    return txns[COLUMNS]


def write(config: BaselineConfig, out: Path) -> Path:
    """Generate the table and write it to one parquet file `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    generate(config).to_parquet(out, index=False)
    return out


def simulate_pandas(customers: int, days: int, out: str, seed: int = 7) -> dict[str, object]:
    """Benchmark entry point: generate and write; what was written.

    Args:
        customers: number of customers.
        days: number of days.
        out: the parquet file to write.
        seed: random seed.

    Returns:
        Rows written (`transactions`) and the output path.
    """
    import pyarrow.parquet as pq

    path = write(BaselineConfig(customers=customers, days=days, seed=seed), Path(out))
    return {"transactions": int(pq.ParquetFile(path).metadata.num_rows), "out": str(path)}
