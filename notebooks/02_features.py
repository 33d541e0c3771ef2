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
# # 02 · Features you can train on
#
# The models never read the raw tables: they read **features**, computed by the feature
# platform (`features/`) and registered in Feast. This notebook walks through what features
# exist (views per entity, one service per model version), what they look like at a daily
# close, and why they can be trusted for training: a training row at time t gets exactly
# what serving saw at t (batch features of the last close before t, fresh claim features
# exact at t) and nothing from later.
#
# Size: `CASHBACK_NOTEBOOK_CUSTOMERS` (default 5,000) customers over
# `CASHBACK_NOTEBOOK_DAYS` (default 365) days, simulated into a temporary directory.

# %%
import os
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from cashback.settings import Settings
from cashback.tables import read_table
from features.catalog import FRESH, ON_DEMAND, SERVICES, service_features, views
from features.customer_frame import FeatureSources, features_at
from features.store import apply, feature_store
from features.training import training_frame
from pipelines import build_features
from pipelines.simulate import run, world_config
from pipelines.simulation.truth import load_truth

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash: a DEMO value unless CASHBACK_IP_PEPPER is set.
PEPPER = os.environ.get("CASHBACK_IP_PEPPER", "notebook-demo-pepper")

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
world = Path(workdir.name) / "world"
settings = Settings(ip_pepper=PEPPER, data_dir=world)  # feature tables go to world/features
pl.Config.set_tbl_rows(15)
pl.Config.set_fmt_str_lengths(90)
pl.Config.set_tbl_width_chars(160)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})

# %%
config = world_config(settings, customers=CUSTOMERS, days=DAYS)
summary = run(config, world, settings)
truth = load_truth(world)
sources = FeatureSources.from_directory(world)
feature_config = settings.features
print(f"{config.customers:,} customers, {config.days} days from {config.start}, seed {config.seed}")
pl.DataFrame({"table": list(summary.rows), "rows": list(summary.rows.values())})

# %% [markdown]
# ## 1. The catalog
#
# Batch **views** hold features of one entity (customer, device, IP) as of a daily close.
# A **feature service** is the exact list of features one model version reads: the fraud
# model also gets fresh claim features (counts in the last hour, exact at the claim) and
# on-demand ones (computed from the request). The schemas are read off the computations
# themselves, so the catalog, the batch tables and the training frame cannot drift apart.

# %%
catalog = views(feature_config)
pl.DataFrame(
    {
        "view": list(catalog),
        "entity": [v.entity for v in catalog.values()],
        "key": [v.key for v in catalog.values()],
        "features": [len(v.features) for v in catalog.values()],
        "examples": [", ".join(v.features[:3]) + ", …" for v in catalog.values()],
    }
)

# %%
pl.DataFrame(
    {
        "service": list(SERVICES),
        "views": [", ".join(groups) for groups in SERVICES.values()],
        "features": [len(service_features(s, feature_config)) for s in SERVICES],
    }
).with_columns(pl.col("views").str.replace_all(f"{FRESH}|{ON_DEMAND}", "+$0"))

# %% [markdown]
# ## 2. The batch tables at a close
#
# `cashback features build` (`pipelines.build_features.run`) writes every view as of a
# daily close (00:00 UTC), counting only events before it; that table is what the online
# store serves until the next close. We build as of the close after the last fraud-ring
# claim: in a small world no ring may be active in the last month, and then every device
# of the final close has exactly one account (`device_customers_30d` is constant).

# %%
ring_claims = (
    read_table(world, "claims")
    .join(truth.claims.filter(pl.col("abuse_type") == "multi_account"), on="claim_id")
    .select(pl.col("ts").max())
    .collect()
    .item()
)
close = (
    ring_claims.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if ring_claims is not None
    else None  # no ring in this world: the latest close
)
built = build_features.run(settings, close)
close = built.close
tables = {name: pl.scan_parquet(path) for name, path in built.paths.items()}
print(f"as of {close:%Y-%m-%d %H:%M} UTC, rows per view: {built.rows}")
(
    tables["customer_behaviour"]
    .select("customer_id", "purchases_90d", "spend_90d", "days_since_last_purchase", "tenure_days")
    .join(tables["customer_cashback"].select("customer_id", "avg_rate_365d"), on="customer_id")
    .join(tables["customer_lifecycle"].drop("event_timestamp"), on="customer_id")
    .head(6)
    .collect()
)

# %% [markdown]
# A handful of distributions. Customers who never bought have no `days_since_last_purchase`
# and no `avg_rate_365d` (null, not zero). Lifecycle stages follow documented rules
# (`features/lifecycle.py`): *new* below 30 days of tenure, *inactive* after 180 silent days,
# *at risk* when silent for 2.5 typical gaps (and 45 days), else *regular*. RFM scores are
# quintiles 1-5 among customers who bought in the last year (0 for the others), with the
# boundaries of the close.

# %%
customers_at_close = (
    tables["customer_behaviour"]
    .select("customer_id", "purchases_90d", "days_since_last_purchase")
    .join(tables["customer_cashback"].select("customer_id", "avg_rate_365d"), on="customer_id")
    .join(tables["customer_lifecycle"], on="customer_id")
)
customers_df, devices_df = pl.collect_all(
    [customers_at_close, tables["device_network"].select("device_customers_30d")]
)
rfm = customers_df.group_by("rfm_r", "rfm_f").len()
rfm_matrix = np.zeros((6, 6), dtype=int)
rfm_matrix[rfm["rfm_r"].to_numpy(), rfm["rfm_f"].to_numpy()] = rfm["len"].to_numpy()
stages = customers_df["lifecycle"].value_counts().sort("count")

fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
ax = axes[0, 0]
ax.hist(customers_df["purchases_90d"], bins=np.arange(0, 42, 1), color="steelblue")
ax.set(title="purchases_90d", xlabel="purchases in the 90 days before the close")
ax.set(ylabel="customers")
ax = axes[0, 1]
never = customers_df["days_since_last_purchase"].null_count()
ax.hist(customers_df["days_since_last_purchase"].drop_nulls(), bins=50, color="steelblue")
ax.set(title=f"days_since_last_purchase ({never:,} never bought: null)", xlabel="days")
ax.set(ylabel="customers")
ax = axes[0, 2]
no_claim = customers_df["avg_rate_365d"].null_count()
ax.hist(customers_df["avg_rate_365d"].drop_nulls() * 100, bins=50, color="seagreen")
ax.set(title=f"avg_rate_365d ({no_claim:,} without claims: null)")
ax.set(xlabel="cashback / claimed amount over 365 days (%)", ylabel="customers")
ax = axes[1, 0]
shared = devices_df["device_customers_30d"].value_counts().sort("device_customers_30d")
bars = ax.bar(shared["device_customers_30d"], shared["count"], color="firebrick")
ax.bar_label(bars, fontsize=8)
ax.set(title="device_customers_30d (device view)", xlabel="accounts claiming from the device")
ax.set(ylabel="devices (log)", yscale="log", ylim=(0.5, shared["count"].max() * 4))
ax = axes[1, 1]
ax.barh(stages["lifecycle"], stages["count"], color="slategrey")
ax.set(title="Lifecycle stage at the close", xlabel="customers", ylabel="stage")
ax = axes[1, 2]
scored_max = rfm_matrix[1:, 1:].max()  # colours for the scored cells; (0, 0) = no purchase
image = ax.imshow(rfm_matrix, cmap="Blues", origin="lower", vmax=scored_max)
for (r, f), count in np.ndenumerate(rfm_matrix):
    color = "white" if count > scored_max / 2 else "black"
    ax.text(f, r, f"{count}", ha="center", va="center", fontsize=7, color=color)
ax.grid(visible=False)
ax.set(title="RFM: customers by R and F score", xlabel="rfm_f (5 = most frequent)")
ax.set(ylabel="rfm_r (5 = most recent)", xticks=range(6), yticks=range(6))
fig.colorbar(image, ax=ax, shrink=0.8)
fig.suptitle(f"Batch features as of the close {close:%Y-%m-%d}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Point-in-time correctness, in a picture
#
# Take one active customer over the 60 days before the close and ask, at every hour,
# "what is your `spend_30d`?" the way serving answers (`features_at`: the value of the last
# daily close at or before t). Next to it, the naive answer a training query would give
# if it summed the purchases of the 30 days up to t, the current day included. The served
# value only moves at closes and never contains a purchase of the same day; the naive one
# jumps at every purchase. Training on the naive value teaches the model from information
# that serving will not have at scoring time: that is leakage.

# %%
period_start = close - timedelta(days=60)
purchases = read_table(world, "transactions").filter(pl.col("amount") > 0)
honest = truth.customers.lazy().filter(pl.col("role") == "legit").select("customer_id")
customer = (
    purchases.filter(pl.col("ts") >= period_start, pl.col("ts") < close)
    .join(honest, on="customer_id")
    .group_by("customer_id")
    .len()
    .sort("len", "customer_id", descending=[True, False])
    .select(pl.first("customer_id"))
    .collect()
    .item()
)
events = (
    purchases.filter(pl.col("customer_id") == customer)
    .select("ts", "amount")
    .sort("ts")
    .with_columns(pl.col("amount").cum_sum().alias("cumulative"))
)


def spend_30_days(frame: pl.LazyFrame, end: str, *, inclusive: bool) -> pl.LazyFrame:
    """Add the customer's spend in the 30 days up to `end`: (end - 30d, end] if inclusive,
    else [end - 30d, end) (the batch definition, at a close)."""
    right = events.select(pl.col("ts").alias("at"), "cumulative")
    for bound, name in [(pl.col(end), "to"), (pl.col(end) - timedelta(days=30), "from")]:
        frame = (
            frame.with_columns(bound.alias("at"))
            .sort("at")
            .join_asof(right, on="at", allow_exact_matches=inclusive)
            .with_columns(pl.col("cumulative").fill_null(0.0).alias(name))
            .drop("at", "cumulative")
        )
    return frame.with_columns((pl.col("to") - pl.col("from")).alias("window")).drop("to", "from")


hours = pl.LazyFrame(
    {"ts": pl.datetime_range(period_start, close, "1h", closed="left", eager=True)}
).with_columns(pl.lit(customer).alias("customer_id"))
served = (
    features_at(sources, hours, feature_config)
    .select("ts", "close_ts", "spend_30d")
    .pipe(spend_30_days, "close_ts", inclusive=False)  # recomputed from events at the close
    .rename({"window": "recomputed"})
    .sort("ts")
)
# the naive value changes at each purchase and 30 days later: evaluate it there too
instants = pl.concat(
    [hours.select("ts"), events.select("ts"), events.select(pl.col("ts") + timedelta(days=30))]
).filter(pl.col("ts").is_between(period_start, close, closed="left"))
naive = instants.unique().pipe(spend_30_days, "ts", inclusive=True).sort("ts")
served, naive, customer_events = pl.collect_all(
    [served, naive, events.filter(pl.col("ts").is_between(period_start, close, closed="left"))]
)
at_hours = served.join(naive, on="ts")
exact = np.allclose(served["spend_30d"], served["recomputed"])
leaky = (~np.isclose(at_hours["spend_30d"], at_hours["window"])).mean()
print(f"customer {customer}: {customer_events.height} purchases in the 60 days")
print(f"served == spend of purchases in [close - 30d, close) at all {served.height} hours: {exact}")
print(f"hours where the naive value differs from what serving would see: {leaky:.0%}")

# %%
fig, axes = plt.subplots(
    3, 1, figsize=(13, 9.5), height_ratios=[1, 2.3, 2.3], gridspec_kw={"hspace": 0.55}
)
stem = axes[0].stem(customer_events["ts"], customer_events["amount"], basefmt=" ")
stem.markerline.set_color("black")
stem.stemlines.set_color("black")
axes[0].set(title=f"Purchases of customer {customer}", ylabel="EUR")
for ax in axes[1:]:
    ax.step(naive["ts"], naive["window"], where="post", color="red", lw=1.2)
    ax.lines[-1].set_label("naive: purchases of the 30 days up to t")
    ax.step(served["ts"], served["spend_30d"], where="post", color="blue", lw=2)
    ax.lines[-1].set_label("served: spend_30d = features_at(t), last close")
    ax.set(ylabel="spend_30d (EUR)")
for ax in axes[:2]:
    ax.set_xlim(period_start, close)
axes[1].set(title="spend_30d at every hour of 60 days", xlabel="time (UTC)")
axes[1].legend(fontsize=8, loc="upper left")
# zoom on 4 days around a daytime purchase near the middle of the period
middle = period_start + timedelta(days=30)
daytime = pl.col("ts").dt.hour().is_between(6, 18)
focus = customer_events.sort(~daytime, (pl.col("ts") - middle).abs()).row(0, named=True)
day = focus["ts"].replace(hour=0, minute=0, second=0, microsecond=0)
zoom_start, zoom_end = day - timedelta(days=1), day + timedelta(days=3)
in_zoom = pl.col("ts").is_between(zoom_start, zoom_end)
values = pl.concat([naive.filter(in_zoom)["window"], served.filter(in_zoom)["spend_30d"]])
low, high = values.min(), values.max() + 1
axes[2].set(xlim=(zoom_start, zoom_end), ylim=(low - 0.1 * (high - low), high + 0.6 * (high - low)))
for k in range(4):
    daily_close = zoom_start + timedelta(days=k)
    axes[2].axvline(daily_close, color="grey", ls="--", lw=1)
    axes[2].annotate(
        f"close {daily_close:%d %b}", (daily_close, 1), xycoords=("data", "axes fraction"),
        xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey",
    )  # fmt: skip
for i, ts in enumerate(customer_events.filter(in_zoom)["ts"]):
    axes[2].axvline(ts, color="black", lw=0.8, alpha=0.6, label="purchase" if i == 0 else None)
after = naive.filter(pl.col("ts") >= focus["ts"])["window"][0]
axes[2].annotate(
    f"purchase of {focus['amount']:.0f} EUR at {focus['ts']:%H:%M}: the naive value\n"
    "jumps at once, the served one waits for the next close",
    (focus["ts"], after), xytext=(0.03, 0.72), textcoords="axes fraction", fontsize=8,
    arrowprops={"arrowstyle": "->", "color": "black"},
)  # fmt: skip
axes[2].set(title="Zoom: 4 days around one purchase (dashed: daily closes)", xlabel="time (UTC)")
axes[2].legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## 4. Fresh features: exact at the claim
#
# Some fraud is only visible inside the hour: a **velocity** abuser files a burst of claims
# within minutes. Batch features of the last close cannot see a burst that started this
# morning; fresh features can. `customer_claims_1h` counts the customer's claims in the hour
# before each claim (this one included), as the service counts them when it scores the claim;
# `training_frame(..., "fraud_v1")` computes the same for historical claims (the claims table
# works as entity rows). Network features are batch: `device_customers_30d` counts accounts
# claiming from the device in the 30 days before the close.

# %%
claims = read_table(world, "claims").join(truth.claims, on="claim_id")
started = time.perf_counter()
fraud_frame = training_frame(sources, claims, "fraud_v1", feature_config).collect()
print(f"fraud_v1 training frame {fraud_frame.shape} in {time.perf_counter() - started:.1f} s")
velocity = (
    fraud_frame.filter(pl.col("abuse_type") == "velocity")
    .group_by("customer_id")
    .agg(pl.len(), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
    .sort("len", "customer_id", descending=[True, False])
    .row(0, named=True)
)
burst = fraud_frame.filter(
    pl.col("customer_id") == velocity["customer_id"],
    pl.col("ts").is_between(velocity["first"] - timedelta(hours=1), velocity["last"]),
).sort("ts")
kinds = pl.col("abuse_type").fill_null("honest")
fraud_frame.group_by(kinds).agg(
    pl.len().alias("claims"),
    (pl.col("customer_claims_1h") >= 3).mean().alias("share_claims_1h>=3"),
    (pl.col("device_customers_30d") >= 2).mean().alias("share_device_customers>=2"),
    (pl.col("ip_customers_30d") >= 2).mean().alias("share_ip_customers>=2"),
).sort("claims", descending=True)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), width_ratios=[1.2, 1, 1])
colors = np.where(burst["is_fraud"], "firebrick", "grey")
axes[0].step(burst["ts"], burst["customer_claims_1h"], where="post", color="black", lw=0.8)
axes[0].scatter(burst["ts"], burst["customer_claims_1h"], c=colors, zorder=3)
axes[0].set(
    title=f"Velocity burst of {velocity['customer_id']} on {velocity['first']:%d %b}",
    xlabel="claim time (UTC)", ylabel="customer_claims_1h at the claim",
)  # fmt: skip
axes[0].xaxis.set_major_formatter(plt.matplotlib.dates.DateFormatter("%H:%M"))
order = ["honest", *sorted(set(fraud_frame["abuse_type"].drop_nulls()))]
for ax, feature in zip(axes[1:], ["customer_claims_1h", "device_customers_30d"], strict=True):
    groups = fraud_frame.group_by(kinds).agg(pl.col(feature))
    values = dict(zip(groups["abuse_type"], groups[feature].to_list(), strict=True))
    ax.boxplot([values[k] for k in order], orientation="horizontal", tick_labels=order)
    ax.set(title=f"{feature} by truth", xlabel=feature)
axes[1].set(ylabel="truth (abuse type)")
axes[2].set(yticklabels=[])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. A training frame for churn at monthly snapshots
#
# Entity rows are (customer, snapshot time): here every customer who had signed up, on the
# first of each month. `training_frame` computes the service's features for those rows
# only, each as of its own close; it never builds a table of every customer for every day.
# Below, the rows of the customer of section 3.

# %%
snapshots = pl.datetime_range(config.start_dt, config.end_dt, "1mo", eager=True).slice(1)
entity_rows = (
    read_table(world, "customers")
    .select("customer_id", "signup_ts")
    .join(pl.LazyFrame({"ts": snapshots}), how="cross")
    .filter(pl.col("signup_ts") < pl.col("ts"))
    .drop("signup_ts")
)
started = time.perf_counter()
churn_frame = training_frame(sources, entity_rows, "churn_v1", feature_config).collect()
seconds = time.perf_counter() - started
every_day = config.customers * config.days
print(f"churn_v1: {churn_frame.height:,} rows x {churn_frame.width} columns in {seconds:.1f} s")
print(f"({churn_frame.height / every_day:.1%} of the {every_day:,} customer-days of a daily table)")
churn_frame.filter(pl.col("customer_id") == customer).select(
    "customer_id", "ts", "close_ts", "purchases_90d", "spend_30d", "lifecycle", "rfm_total"
)

# %% [markdown]
# The frame over time: the lifecycle mix at each snapshot. Early snapshots see little
# history (the data start on the first day of the window): a customer who joined before it
# and has not bought since counts as *inactive*, and with fewer than 365 days of purchases
# the typical gap is overestimated, so *at risk* is rare. Keep the first months out of
# training, or read them with that in mind.

# %%
mix = (
    churn_frame.group_by("ts", "lifecycle")
    .len()
    .with_columns((pl.col("len") / pl.col("len").sum().over("ts")).alias("share"))
    .pivot("lifecycle", index="ts", values="share")
    .fill_null(0)
    .sort("ts")
)
stage_names = [c for c in ["new", "regular", "at_risk", "inactive"] if c in mix.columns]
fig, ax = plt.subplots(figsize=(10, 3.6))
ax.stackplot(mix["ts"], *(mix[s] for s in stage_names), labels=stage_names, alpha=0.85)
ax.set(title="Lifecycle mix over the monthly snapshots (churn_v1 frame)", xlabel="snapshot")
ax.set(ylabel="share of customers", ylim=(0, 1))
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Registering with Feast
#
# Feast is the source of definitions: `features.store.apply` registers the entities, one
# batch feature view per group over the tables built above, the on-demand view and one
# FeatureService per model version, here in the temporary directory (SQLite online store).
# The Feast SDK then lists them like any Feast repo.

# %%
store = feature_store(settings)  # imports Feast first: it installs warning filters on import
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # "on-demand views are experimental"
    applied = apply(settings)
services = store.list_feature_services()
print(f"applied {len(applied)} objects: {', '.join(applied)}")
pl.DataFrame(
    {
        "service": [s.name for s in services],
        "feature_views": [", ".join(p.name for p in s.feature_view_projections) for s in services],
        "features": [sum(len(p.features) for p in s.feature_view_projections) for s in services],
        "description": [s.description for s in services],
    }
).sort("service")

# %% [markdown]
# ## What to remember
#
# * Each model version reads one feature service; its features come from views whose
#   schemas are derived from the computation, so Feast, the tables and training agree.
# * Batch features at time t are those of the last daily close: same-day events are never
#   in them, for serving or for training. A naive rolling window leaks.
# * Fresh claim features (last hour) are exact at the claim and catch bursts that batch
#   features cannot; shared-device features catch rings.
# * Training frames compute only the requested rows, each at its own close.

# %%
workdir.cleanup()
