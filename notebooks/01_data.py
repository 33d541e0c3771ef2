# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Meeting the data
#
# You are the data scientist who will train the rate, churn and fraud models of the
# cashback program. Before trusting any model, you want to know the world it learns from.
# This notebook simulates a small world (`cashback data simulate`), looks at it the way a
# model would (the contract tables), and checks what it sees against the simulator's
# **ground truth** (`truth/`: each customer's hidden segment, the true response to cashback
# rates, the true fraud). Then it imports a real purchase log (UCI Online Retail) to see
# what real data looks like on the same contract.
#
# Size: `CASHBACK_NOTEBOOK_CUSTOMERS` (default 5,000) customers over
# `CASHBACK_NOTEBOOK_DAYS` (default 365) days, written to a temporary directory.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from cashback.attribution import attribute_to_exposures
from cashback.settings import Settings
from cashback.tables import read_table
from pipelines import data_import
from pipelines.simulate import run, world_config
from pipelines.simulation.truth import expected_spend, load_truth
from pipelines.simulation.world import CATEGORIES, SEGMENTS, calendar_days, season_components

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash. Without CASHBACK_IP_PEPPER a DEMO value is used: fine for a
# throw-away world, never for real data.
PEPPER = os.environ.get("CASHBACK_IP_PEPPER", "notebook-demo-pepper")

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
settings = Settings(ip_pepper=PEPPER, data_dir=Path(workdir.name))
pl.Config.set_tbl_rows(15)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
SEGMENT_NAMES = [s.name for s in SEGMENTS]
COLORS = dict(zip(SEGMENT_NAMES, plt.get_cmap("tab10").colors, strict=False))

# %%
config = world_config(settings, customers=CUSTOMERS, days=DAYS)
world = Path(workdir.name) / "world"
summary = run(config, world, settings)
truth = load_truth(world)
print(f"{config.customers:,} customers, {config.days} days from {config.start}, seed {config.seed}")
pl.DataFrame({"table": list(summary.rows), "rows": list(summary.rows.values())})

# %% [markdown]
# ## 1. Who is in the world
#
# Every customer has a latent **segment** (a behaviour type a model never sees directly)
# and a **role**: honest, a member of a multi-account fraud ring, or a new-account abuser.
# The mix differs between customers who joined before the window and those who sign up
# during it: new sign-ups are mostly `new_explorer`s.

# %%
joined_before = pl.col("signup_ts") < config.start_dt
mix = (
    read_table(world, "customers")
    .select("customer_id", joined_before.alias("joined_before"))
    .join(truth.customers.lazy().select("customer_id", "segment", "role"), on="customer_id")
    .group_by("segment", "role", "joined_before")
    .len()
    .collect()
)
mix.pivot("role", index="segment", values="len", aggregate_function="sum").fill_null(0).sort(
    "segment"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
by_segment = mix.group_by("segment").agg(pl.col("len").sum()).sort("len")
axes[0].barh(
    by_segment["segment"], by_segment["len"], color=[COLORS[s] for s in by_segment["segment"]]
)
axes[0].set(title="Customers per segment (truth)", xlabel="customers", ylabel="segment")
shares = (
    mix.group_by("joined_before", "segment")
    .agg(pl.col("len").sum())
    .with_columns((pl.col("len") / pl.col("len").sum().over("joined_before")).alias("share"))
    .pivot("segment", index="joined_before", values="share")
    .fill_null(0)
    .sort("joined_before")
)
left = np.zeros(shares.height)
groups = ["joined before" if b else "joined during" for b in shares["joined_before"]]
for name in SEGMENT_NAMES:
    share = shares[name].to_numpy() if name in shares.columns else np.zeros(shares.height)
    axes[1].barh(groups, share, left=left, color=COLORS[name])
    left += share
axes[1].legend(SEGMENT_NAMES, fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
axes[1].set(title="Segment mix by sign-up time", xlabel="share of customers", ylabel="")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. How segments differ
#
# What a model can see: orders and their amounts, categories and channels. Frequency is
# orders per 30 days of membership inside the window (churned customers keep counting, so
# segments that churn look less frequent); the cross is the truth's base rate (before
# seasons, cashback and churn). Baskets are shown as boxes of the 5-25-50-75-95 %
# quantiles of order amounts (log scale).

# %%
purchases = (
    read_table(world, "transactions")
    .filter(pl.col("amount") > 0)
    .join(truth.customers.lazy().select("customer_id", "segment", "role"), on="customer_id")
)
member_days = (
    pl.lit(config.end_dt) - pl.max_horizontal("signup_ts", pl.lit(config.start_dt))
).dt.total_seconds() / 86_400
frequency = (
    read_table(world, "customers")
    .join(truth.customers.lazy().filter(pl.col("role") == "legit"), on="customer_id")
    .join(purchases.group_by("customer_id").len("orders"), on="customer_id", how="left")
    .group_by("segment")
    .agg(
        (pl.col("orders").fill_null(0).sum() / member_days.sum() * 30).alias("measured"),
        (pl.col("daily_rate").mean() * 30).alias("truth_base"),
    )
)
quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
basket = (
    purchases.filter(pl.col("role") == "legit")
    .group_by("segment")
    .agg(pl.col("amount").quantile(q).alias(f"q{q}") for q in quantiles)
)
frequency, basket = (f.sort("segment") for f in pl.collect_all([frequency, basket]))
frequency.join(basket, on="segment")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
names = frequency["segment"].to_list()
axes[0].barh(names, frequency["measured"], color=[COLORS[s] for s in names], label="measured")
axes[0].scatter(frequency["truth_base"], names, marker="x", color="black", label="truth base")
axes[0].set(title="Purchase frequency", xlabel="orders per 30 days of membership")
axes[0].legend(fontsize=8)
stats = [
    {"label": s, "whislo": r["q0.05"], "q1": r["q0.25"], "med": r["q0.5"], "q3": r["q0.75"]}
    | {"whishi": r["q0.95"]}
    for s, r in zip(names, basket.iter_rows(named=True), strict=True)
]
axes[1].bxp(stats, showfliers=False, orientation="horizontal")
axes[1].set(title="Basket size (order amount)", xlabel="EUR per order (log)", xscale="log")
fig.tight_layout()
plt.show()

# %% [markdown]
# Categories and channels: shares of each segment's orders. Loyal regulars are grocery
# shoppers in stores, high-value infrequent customers buy electronics and travel online,
# new explorers live in the app.

# %%
legit = purchases.filter(pl.col("role") == "legit")
category_mix = (
    legit.group_by("segment", "category")
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum().over("segment")).alias("share"))
)
channel_mix = (
    legit.group_by("segment", "channel")
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum().over("segment")).alias("share"))
)
category_mix, channel_mix = pl.collect_all([category_mix, channel_mix])
category_table = category_mix.pivot("category", index="segment", values="share").fill_null(0)
category_table = category_table.sort("segment")
channel_table = channel_mix.pivot("channel", index="segment", values="share").fill_null(0)
channel_table = channel_table.sort("segment")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), width_ratios=[2.2, 1])
categories = [c for c in CATEGORIES if c in category_table.columns]
image = axes[0].imshow(category_table.select(categories).to_numpy(), cmap="Blues", vmin=0)
axes[0].set_xticks(range(len(categories)), categories, rotation=30, ha="right")
axes[0].set_yticks(range(category_table.height), category_table["segment"])
axes[0].grid(visible=False)
axes[0].set(title="Category mix (share of orders)", xlabel="category", ylabel="segment")
fig.colorbar(image, ax=axes[0], shrink=0.8)
left = np.zeros(channel_table.height)
for channel in ["online", "store", "app"]:
    axes[1].barh(channel_table["segment"], channel_table[channel], left=left, label=channel)
    left += channel_table[channel].to_numpy()
axes[1].invert_yaxis()  # same row order as the heat map
axes[1].set(title="Channel mix", xlabel="share of orders", yticklabels=[])
axes[1].legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Spend over time
#
# Purchases follow the calendar: a weekly cycle (weekends are busier for most segments), a
# ramp up to Christmas with quiet 25-26 December, and sales periods (shaded: early-January
# sales, summer sales, Black Friday to Cyber Monday). The middle panel indexes each
# segment's weekly spend to its own mean, so segments of different sizes compare; it also
# shows churn (lapsing customers fade out) and sign-ups (new explorers grow in).

# %%
daily = (
    purchases.group_by(pl.col("ts").dt.date().alias("day"), "segment")
    .agg(pl.col("amount").sum().alias("spend"), pl.len().alias("orders"))
    .collect()
    .sort("day")
)
days = calendar_days(config)
sales = season_components(days)["sales"]
edges = np.flatnonzero(np.diff(np.concatenate([[0.0], sales, [0.0]])))
sale_periods = [(days[a], days[b - 1]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
print("sales periods:", ", ".join(f"{a:%d %b}-{b:%d %b}" for a, b in sale_periods))

# %%
fig, axes = plt.subplots(3, 1, figsize=(12, 10))
total = daily.group_by("day").agg(pl.col("spend").sum()).sort("day")
axes[0].plot(total["day"], total["spend"], lw=0.7, color="grey", label="daily")
rolling = total["spend"].rolling_mean(7, center=True)
axes[0].plot(total["day"], rolling, color="black", label="7-day mean")
axes[0].set(title="Daily spend, all customers", xlabel="day", ylabel="EUR per day")
weekly = (
    daily.group_by(pl.col("day").dt.truncate("1w").alias("week"), "segment")
    .agg(pl.col("spend").sum(), pl.col("day").n_unique().alias("days"))
    .filter(pl.col("days") == 7)  # whole weeks only
    .with_columns((pl.col("spend") / pl.col("spend").mean().over("segment")).alias("index"))
    .sort("week")
)
for name in SEGMENT_NAMES:
    rows = weekly.filter(pl.col("segment") == name)
    axes[1].plot(rows["week"], rows["index"], color=COLORS[name], label=name)
axes[1].set(title="Weekly spend by segment, indexed to its mean", xlabel="week", ylabel="index")
for ax in axes[:2]:
    for i, (a, b) in enumerate(sale_periods):
        ax.axvspan(a, b, color="orange", alpha=0.2, lw=0, label="sales" if i == 0 else None)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
weekday = (
    daily.group_by(pl.col("day").dt.weekday().alias("weekday"), "segment")
    .agg(pl.col("orders").mean())
    .with_columns((pl.col("orders") / pl.col("orders").mean().over("segment")).alias("index"))
    .sort("weekday")
)
for name in SEGMENT_NAMES:
    rows = weekday.filter(pl.col("segment") == name)
    axes[2].plot(rows["weekday"], rows["index"], marker="o", color=COLORS[name], label=name)
axes[2].set_xticks(range(1, 8), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
axes[2].set(title="Weekly cycle: orders by weekday", xlabel="weekday", ylabel="index (mean = 1)")
axes[2].legend(fontsize=8, ncols=3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. How segments respond to cashback rates
#
# The logging policy explores: in 20 % of exposures (an offer shown for 7 days) the rate is
# drawn uniformly from the grid, whatever the customer. Those **explored** exposures are a
# randomized experiment, so mean spend per exposure by rate is an unbiased response curve.
# We keep flat offers (the rate is the effective rate) of honest customers active through
# the window (not churned before its end), attribute each purchase to the exposure valid
# at its time, and put the truth's `expected_spend` curve over the same exposures next to
# it. Error bars are 95 % intervals. High-value infrequent customers buy rarely and big,
# so their spend per exposure is very noisy: a small world cannot pin their curve down.

# %%
exposures = read_table(world, "exposures").join(truth.exposures, on="exposure_id")
spend = (
    attribute_to_exposures(purchases.select("customer_id", "ts", "amount"), exposures)
    .group_by("exposure_id")
    .agg(pl.col("amount").sum().alias("spend"))
)
active = pl.col("alive_at_start") & (
    pl.col("churned_ts").is_null() | (pl.col("churned_ts") > pl.col("valid_until"))
)
logged = (
    exposures.filter(
        pl.col("policy_version") == "logging_v1",
        pl.col("experiment_id").is_null(),
        pl.col("offer_id").str.starts_with("flat"),
        pl.col("valid_until") <= config.end_dt,
    )
    .join(spend, on="exposure_id", how="left")
    .with_columns(pl.col("spend").fill_null(0.0))
    .join(truth.customers.lazy().filter(pl.col("role") == "legit"), on="customer_id")
    .filter(active)
    .collect()
)
explored = logged.filter("explored")
print(f"{logged.height:,} logged flat exposures, {explored.height:,} of them explored")

# %%
measured = (
    explored.group_by("segment", "rate")
    .agg(
        pl.col("spend").mean().alias("mean"),
        (1.96 * pl.col("spend").std() / pl.len().sqrt()).alias("ci95"),
        pl.len().alias("exposures"),
    )
    .sort("segment", "rate")
)
grid = np.linspace(0, max(config.rate_grid), 33)
curves = {}
for name in SEGMENT_NAMES:
    rows = explored.filter(pl.col("segment") == name)
    curves[name] = [
        expected_spend(rows, config, r, rows["ts"], config.exposure_days).mean() for r in grid
    ]
measured.pivot("rate", index="segment", values="mean")

# %%
fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharex=True)
for ax, name in zip(axes.flat, SEGMENT_NAMES, strict=False):
    rows = measured.filter(pl.col("segment") == name)
    ax.errorbar(
        rows["rate"] * 100, rows["mean"], yerr=rows["ci95"], fmt="o", capsize=3,
        color=COLORS[name], label="measured (explored)",
    )  # fmt: skip
    ax.plot(grid * 100, curves[name], color="black", lw=1, label="truth expected_spend")
    ax.set(title=name, ylabel="EUR per 7-day exposure")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower right")
lift = axes.flat[-1]
for name in SEGMENT_NAMES:
    lift.plot(grid * 100, np.array(curves[name]) / curves[name][0], color=COLORS[name], label=name)
lift.set(title="Truth: lift over no cashback", xlabel="cashback rate (%)", ylabel="spend / at 0 %")
lift.legend(fontsize=8)
for ax in axes[1]:
    ax.set_xlabel("cashback rate (%)")
fig.suptitle("Response to the cashback rate, randomized exposures")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Why the logged data cannot be compared naively
#
# Outside exploration the logging policy gives each segment its own rate: lapsing customers
# get the highest, loyal regulars the lowest. So in the logs the rate is tied to who the
# customer is. Averaging spend by rate over the policy's own choices compares segments,
# not rates: the naive curve falls with the rate, although raising a given customer's rate
# never lowers spend. Only the explored exposures (or propensity weighting) answer "what
# if we changed the rate".

# %%
rate_share = (
    logged.group_by("explored", "segment", "rate")
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum().over("explored", "segment")).alias("share"))
)
naive = (
    logged.group_by("explored", "rate")
    .agg(
        pl.col("spend").mean().alias("mean"),
        (1.96 * pl.col("spend").std() / pl.len().sqrt()).alias("ci95"),
        pl.len().alias("exposures"),
    )
    .sort("rate")
)
naive.filter(~pl.col("explored"))

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4), width_ratios=[1, 1, 1.2])
rates = sorted(config.rate_grid)
row = pl.col("segment").replace_strict(SEGMENT_NAMES, list(range(len(SEGMENT_NAMES))))
column = pl.col("rate").replace_strict(rates, list(range(len(rates))))
for ax, flag, title in [(axes[0], False, "Policy's rates"), (axes[1], True, "Explored rates")]:
    cells = rate_share.filter(pl.col("explored") == flag).select(row, column, "share")
    matrix = np.zeros((len(SEGMENT_NAMES), len(rates)))
    matrix[cells["segment"].to_numpy(), cells["rate"].to_numpy()] = cells["share"].to_numpy()
    ax.imshow(matrix, cmap="Greens", vmin=0, vmax=1)
    for (i, j), share in np.ndenumerate(matrix):
        color = "white" if share > 0.5 else "black"
        ax.text(j, i, f"{share:.0%}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(rates)), [f"{r:.0%}" for r in rates])
    ax.set_yticks(range(len(SEGMENT_NAMES)), [] if flag else SEGMENT_NAMES)
    ax.grid(visible=False)
    ax.set(title=f"{title} (share per segment)", xlabel="rate")
for flag, label, color in [(False, "naive: policy's choices", "red"), (True, "explored", "blue")]:
    rows = naive.filter(pl.col("explored") == flag)
    axes[2].errorbar(
        rows["rate"] * 100, rows["mean"], yerr=rows["ci95"], fmt="o-", capsize=3,
        color=color, label=label,
    )  # fmt: skip
axes[2].set(title="Mean spend by rate", xlabel="cashback rate (%)", ylabel="EUR per exposure")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Fraud, and labels that come late
#
# About 2 % of claims are fraudulent, of five kinds. Rings share devices (and IPs) across
# their accounts, which honest customers never do: a device seen on several accounts is a
# strong signal. Labels arrive late and rarely: a chargeback comes for part of the frauds,
# 30-90 days after the claim; the random audit reviews about 1 % of claims, 15-30 days
# after. Most claims are never labelled, so "unlabelled" must not be read as "legit".

# %%
claims = read_table(world, "claims").join(truth.claims, on="claim_id")
by_type = (
    claims.group_by(pl.col("abuse_type").fill_null("honest"))
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum()).alias("share"))
    .sort("len")
)
devices = (
    claims.group_by("device_id")
    .agg(
        pl.col("customer_id").n_unique().alias("accounts"),
        (pl.col("abuse_type") == "multi_account").any().alias("ring"),
    )
    .group_by("ring", "accounts")
    .len("devices")
    .sort("accounts")
)
by_type, devices = pl.collect_all([by_type, devices])
by_type

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
fraud_types = by_type.filter(pl.col("abuse_type") != "honest")
axes[0].barh(fraud_types["abuse_type"], fraud_types["share"] * 100, color="firebrick")
axes[0].set(title="Fraudulent claims by abuse type", xlabel="% of all claims", ylabel="abuse type")
for ring, label, color in [(False, "other devices", "grey"), (True, "ring devices", "firebrick")]:
    rows = devices.filter(pl.col("ring") == ring)
    offset = 0.2 if ring else -0.2
    axes[1].bar(rows["accounts"] + offset, rows["devices"], width=0.4, color=color, label=label)
axes[1].set(title="Accounts per device", xlabel="accounts claiming from the device")
axes[1].set(ylabel="devices (log)", yscale="log")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
labels = read_table(world, "claim_labels").join(
    claims.select("claim_id", pl.col("ts").alias("claim_ts"), "is_fraud"), on="claim_id"
)
delays = labels.select(
    "source", ((pl.col("decided_ts") - pl.col("claim_ts")).dt.total_hours() / 24).alias("days")
)
# Mature claims: every label delay (90 days at most) has passed by the end of the window.
mature = claims.filter(pl.col("ts") < config.end_dt - pl.duration(days=90))
labelled = (
    mature.join(labels.select("claim_id", "source"), on="claim_id", how="left")
    .group_by("is_fraud", pl.col("source").fill_null("never labelled"))
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum().over("is_fraud")).alias("share"))
    .sort("is_fraud", "source")
)
delays, labelled = pl.collect_all([delays, labelled])
labelled

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
bins = np.arange(0, 95, 3)
for source, color in [("audit", "steelblue"), ("chargeback", "firebrick")]:
    days_to_label = delays.filter(pl.col("source") == source)["days"]
    axes[0].hist(days_to_label, bins=bins, color=color, alpha=0.7, label=source)
axes[0].set(title="Label delay by source", xlabel="days from claim to label", ylabel="labels")
axes[0].legend(fontsize=8)
bottom = np.zeros(2)
for source, color in [("chargeback", "firebrick"), ("audit", "steelblue")]:
    share = [
        labelled.filter(pl.col("is_fraud") == f, pl.col("source") == source)["share"].sum()
        for f in (True, False)
    ]
    groups = ["fraud claims", "honest claims"]
    bars = axes[1].bar(groups, share, bottom=bottom, color=color, label=source)
    bottom += share
axes[1].bar_label(bars, [f"{t:.1%} labelled" for t in bottom], padding=2, fontsize=8)
axes[1].set(title="Share of mature claims ever labelled", xlabel="truth", ylabel="share labelled")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. A real purchase log: UCI Online Retail
#
# The same contract from real invoices: one transaction per invoice, cancellations as
# returns linked to the purchase they return, lines that cannot be used left out with a
# counted reason. The file is not part of the project (`../shared/data/`, see its README);
# without it this section is skipped. `CASHBACK_NOTEBOOK_ONLINE_RETAIL` points elsewhere.

# %%
root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists())
default_file = root.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
retail_file = Path(os.environ.get("CASHBACK_NOTEBOOK_ONLINE_RETAIL", default_file))
retail = Path(workdir.name) / "online_retail"
if retail_file.exists():
    imported = data_import.run("online_retail", retail_file, retail, settings)
    print("rows written:", imported.rows)
    print("\n".join(imported.notes))
else:
    imported = None
    print(f"Online Retail file not found at {retail_file}: section 7 skipped.")

# %%
if imported is None:
    print("Online Retail not imported: left-out plot skipped.")
else:
    reasons = sorted(imported.left_out.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.barh([r for r, _ in reasons], [n for _, n in reasons], color="grey")
    for y, (_, n) in enumerate(reasons):
        ax.annotate(f"{n:,}", (n, y), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set(title="Online Retail: source lines left out, by reason", xscale="log")
    ax.set(xlabel="invoice lines (log)", ylabel="reason")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# Transactions per month, and the returns: every kept return points at an earlier purchase
# of the same customer (`original_txn_id`) and never exceeds it. December 2011 stops on the
# 9th.

# %%
if imported is not None:
    txns = read_table(retail, "transactions")
    monthly = (
        txns.group_by(pl.col("ts").dt.truncate("1mo").alias("month"))
        .agg((pl.col("amount") > 0).sum().alias("purchases"), (pl.col("amount") < 0).sum())
        .rename({"amount": "returns"})
        .sort("month")
    )
    links = (
        txns.filter(pl.col("amount") < 0)
        .join(txns, left_on="original_txn_id", right_on="txn_id", suffix="_original")
        .select(
            ((pl.col("ts") - pl.col("ts_original")).dt.total_hours() / 24).alias("days"),
            (-pl.col("amount") / pl.col("amount_original")).alias("share_returned"),
        )
    )
    monthly, links = pl.collect_all([monthly, links])
    print(f"{monthly['returns'].sum():,} returns, {links.height:,} linked to their purchase")
    print(monthly)

# %%
if imported is None:
    print("Online Retail not imported: monthly and returns plots skipped.")
else:
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    month_labels = monthly["month"].dt.strftime("%b %y")
    axes[0].bar(month_labels, monthly["purchases"], color="steelblue", label="purchases")
    axes[0].bar(month_labels, monthly["returns"], color="darkorange", label="returns")
    axes[0].tick_params(axis="x", rotation=60)
    axes[0].set(title="Transactions per month", xlabel="month", ylabel="transactions")
    axes[0].legend(fontsize=8)
    axes[1].hist(links["days"], bins=np.arange(0, 379, 7), color="darkorange")
    axes[1].set(title="Time from purchase to return", xlabel="days", ylabel="returns (log)")
    axes[1].set_yscale("log")
    axes[2].hist(links["share_returned"], bins=np.linspace(0, 1, 21), color="darkorange")
    axes[2].set(title="Share of the purchase returned", xlabel="return / purchase amount")
    axes[2].set(ylabel="returns")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## What to remember
#
# * Segments are real and visible in behaviour (frequency, basket, categories, channels),
#   but a model only sees the behaviour, never the label.
# * Rate effects must be learned from the explored exposures (or with the logged
#   propensities): the policy's own choices are confounded with the segment.
# * Fraud labels are late and sparse: train only on mature claims, treat unlabelled as
#   unknown.
# * Real logs need cleaning; the importer says what it left out and why.

# %%
workdir.cleanup()
