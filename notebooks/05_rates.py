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
# # 05 · Which cashback rate for whom, and what does the budget buy?
#
# You are the pricing manager. Cashback is paid on every purchase of a customer who gets a
# rate, including the purchases they would have made anyway: a rate pays for itself only
# through the **extra** margin it brings. `cashback train rates` learns how spend responds
# to the rate, picks each customer's rate within a budget, and writes a rate card. Before
# you sign it off, you want to know:
#
# 1. how each segment responds to the rate: spend and net margin (margin minus cashback)
#    per offer window at each rate of the grid;
# 2. what each budget buys (`cashback rates simulate-budget`): expected incremental margin
#    against the cashback paid, and how many customers get more than the default rate;
# 3. the rate card (`cashback rates card`): one rate per segment and category, for engines
#    that do not call the API;
# 4. whether customers are treated unequally along attributes the policy never uses;
# 5. whether the model ranks customers by their response (Qini), and what the policy would
#    have earned on exposures it never saw (off-policy evaluation: IPS, SNIPS, DR).
#
# This notebook runs the training job on a small **simulated** world. The simulator knows
# every customer's true response to the rate (its **truth**, `pipelines.simulation.truth`),
# a luxury real data never gives: it is set beside each estimate, so you can see how far the
# figures you would get on real data can be trusted.
#
# Size: `CASHBACK_NOTEBOOK_CUSTOMERS` (default 5,000) customers over
# `CASHBACK_NOTEBOOK_DAYS` (default 365) days, simulated into a temporary directory.

# %%
import os

# The response models are LightGBM. Idle OpenMP threads spin by default, and on a busy
# machine a spinning thread waits for one that is not running: set before LightGBM loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from IPython.display import display

from cashback.settings import RateSettings, Settings
from models.rates.dataset import matrix
from models.rates.policy import frontier
from pipelines import rates_card, rates_frontier, train_rates
from pipelines.rates_truth import against_truth
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config
from pipelines.simulation.truth import (
    expected_margin_rate,
    expected_paid_spend,
    expected_spend,
    load_truth,
    rate_value,
)

# Some model modules switch matplotlib to a file-only backend when imported (training runs
# have no display); this gives the notebook its inline plots back.
# %matplotlib inline

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash: a fixed DEMO value, fine for a throw-away world only.
PEPPER = "notebook-pepper-not-a-secret"
BUDGET_SHARE = 1.0  # spend what the default rate card would cost, no more
FRONTIER_STEPS = 12

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
world = Path(workdir.name) / "world"
# explicit, not read from CASHBACK_* variables: the same figures on every machine
settings = Settings(data_dir=world, ip_pepper=PEPPER, rates=RateSettings(budget_share=BUDGET_SHARE))
CURRENCY = settings.currency
GRID = np.asarray(settings.rates.grid)
DEFAULT_RATE = settings.default_rate
pl.Config.set_tbl_rows(30)
pl.Config.set_fmt_str_lengths(60)
pl.Config.set_tbl_width_chars(180)
pl.Config.set_float_precision(3)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
COLORS = {"model": "firebrick", "truth": "black", "observed": "steelblue", "oracle": "seagreen"}

# %% [markdown]
# ## The settings that matter
#
# | setting | here | what it does |
# | --- | --- | --- |
# | `rates.grid` | 0, 1, 2, 3, 5, 8 % | the rates the policy may give |
# | `default_rate` | 1 % | the default rate card: values are measured against it |
# | `rates.budget_share` | 1.0 | budget per window, in multiples of the default card's cost |
# | `rates.min_rate`, `max_rate`, `segment_caps` | 0 %, 8 %, none | what may be given, per segment |
# | `rates.excluded_attributes` | region, age_band | never used; the card reports them |
# | `rates.test_share` | 0.25 | the latest exposures held out for evaluation |
# | `exposure_days` | 7 | one offer window: every figure below is per customer and window |
#
# The job learns only from **randomized** exposures (the logging policy's exploration, with
# their logged propensities), weighted by 1 / propensity: what the logging policy chose is
# confounded with who it chose it for.

# %%
started = time.perf_counter()
config = world_config(settings, customers=CUSTOMERS, days=DAYS)
simulate(config, world, settings)
print(f"simulated: {config.customers:,} customers, {config.days} days from {config.start}")
print(f"seed {config.seed}, in {time.perf_counter() - started:.1f} s")

started = time.perf_counter()
result = train_rates.run(settings)
metrics, choice, data = result.metrics, result.choice, result.data
print(
    f"learnt from {data.train.height:,} randomized exposures before {data.split:%Y-%m-%d}, "
    f"{data.test.height:,} held out; {result.customers.height:,} customers priced as of the "
    f"close {result.close:%Y-%m-%d} ({time.perf_counter() - started:.1f} s)"
)
print(
    f"budget {choice.budget:,.2f} {CURRENCY} per window ({BUDGET_SHARE:g} x the default card's "
    f"{metrics['default_card_cost']:,.2f}): expected incremental margin {choice.value:,.2f} for "
    f"{choice.cost:,.2f} of cashback, multiplier {choice.multiplier:.3f}"
)

# %% [markdown]
# ## 1. How does each segment respond to the rate?
#
# Two views, per **latent segment** (the simulator's hidden customer types; on real data you
# would group by the segments of `cashback train segments`):
#
# * **spend per offer window** at each rate: what the fitted model predicts for the held-out
#   exposures, what the truth says for the same exposures, and what was observed on them
#   (the mean of the exposures logged at that rate, weighted by 1 / propensity: noisy, since
#   each exposure saw a single rate);
# * **net margin per offer window**: margin on the spend minus the cashback paid on the spend
#   that is claimed and not returned. Its peak is the rate worth giving, before any budget.
#
# Honest customers only (the truth has no fraud loss), alive during the window.

# %%
truth = load_truth(world)
window = float(settings.exposure_days)
held_out = data.test.join(
    truth.customers.select("customer_id", pl.col("segment").alias("latent"), "role", "churned_ts"),
    on="customer_id",
    how="left",
    maintain_order="left",
).filter(
    pl.col("role") == "legit",
    pl.col("churned_ts").is_null() | (pl.col("churned_ts") > pl.col("ts")),
)
params = held_out.select("customer_id").join(
    truth.customers, on="customer_id", how="left", maintain_order="left"
)
x = matrix(held_out, result.response.features)
fitted_spend = result.response.predict("spend", x)
fitted_net = result.response.predict("margin", x) - GRID * result.response.predict("paid_spend", x)
margin_rate = expected_margin_rate(params, truth.config)


def true_curves(rate: float) -> tuple[np.ndarray, np.ndarray]:
    """True expected spend and net margin of each held-out exposure at one rate."""
    spend = expected_spend(params, truth.config, rate, held_out["ts"], window)
    paid = expected_paid_spend(params, truth.config, rate, held_out["ts"], window)
    return spend, margin_rate * spend - rate * paid


true_spend, true_net = (np.column_stack(c) for c in zip(*map(true_curves, GRID), strict=True))
curves = pl.concat(
    pl.DataFrame(
        {
            "latent": held_out["latent"],
            "rate": np.full(held_out.height, r),
            "model_spend": fitted_spend[:, k],
            "true_spend": true_spend[:, k],
            "model_net": fitted_net[:, k],
            "true_net": true_net[:, k],
        }
    )
    for k, r in enumerate(GRID)
)
curves = curves.group_by("latent", "rate").mean().sort("latent", "rate")
observed = (
    held_out.with_columns((1 / pl.col("propensity")).alias("w"))
    .group_by("latent", "rate")
    .agg(
        ((pl.col("spend") * pl.col("w")).sum() / pl.col("w").sum()).alias("observed_spend"),
        ((pl.col("net_margin") * pl.col("w")).sum() / pl.col("w").sum()).alias("observed_net"),
        pl.len().alias("exposures"),
    )
)
curves = curves.join(observed, on=["latent", "rate"], how="left").sort("latent", "rate")
LATENT = curves["latent"].unique().sort().to_list()

fig, axes = plt.subplots(2, len(LATENT), figsize=(3.4 * len(LATENT), 6.4), sharex=True)
for column, segment in enumerate(LATENT):
    part = curves.filter(pl.col("latent") == segment)
    for row, (what, label) in enumerate([("spend", "spend"), ("net", "net margin")]):
        ax = axes[row, column]
        ax.plot(part["rate"] * 100, part[f"model_{what}"], marker="o", color=COLORS["model"])
        ax.lines[-1].set_label("model")
        ax.plot(part["rate"] * 100, part[f"true_{what}"], ls="--", color=COLORS["truth"])
        ax.lines[-1].set_label("truth")
        ax.scatter(part["rate"] * 100, part[f"observed_{what}"], color=COLORS["observed"], s=14)
        ax.collections[-1].set_label("observed (IPW)")
        ax.axvline(DEFAULT_RATE * 100, color="grey", lw=0.8, ls=":")
        ax.set(title=segment.replace("_", " ") if row == 0 else "", xlabel="rate (%)")
        if column == 0:
            ax.set_ylabel(f"{label} per window ({CURRENCY})")
axes[0, 0].legend(fontsize=7)
fig.suptitle("Response to the rate, held-out exposures (dotted: the default rate)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The best rate of each segment before any budget, by the model and by the truth, and how
# much net margin per window the model's choice leaves on the table against the truth's
# best. The model only needs to get the **shape** right: the level of spend differs between
# segments by construction, and what the policy compares is one rate against another.

# %%
best = (
    curves.group_by("latent")
    .agg(
        pl.col("rate").get(pl.col("model_net").arg_max()).alias("model_best_rate"),
        pl.col("rate").get(pl.col("true_net").arg_max()).alias("true_best_rate"),
        pl.col("true_net").max().alias("true_best_net"),
        pl.col("true_net").get(pl.col("model_net").arg_max()).alias("true_net_at_model_rate"),
        pl.col("exposures").sum().alias("held_out_exposures"),
    )
    .with_columns(
        (pl.col("true_best_net") - pl.col("true_net_at_model_rate")).alias("left_on_table")
    )
    .sort("latent")
)
best

# %% [markdown]
# Who gets which rate: customers of each latent segment at each rate, as the budgeted
# policy priced them at the close. Segments whose net margin climbs with the rate in the
# truth above should get the higher rates; those that would buy anyway should stay at or
# below the default.

# %%
priced = result.customers.join(
    truth.customers.select("customer_id", pl.col("segment").alias("latent")),
    on="customer_id",
    how="left",
)
priced.with_columns((pl.col("rate") * 100).round(1).cast(pl.String).alias("rate %")).pivot(
    on="rate %", index="latent", values="customer_id", aggregate_function="len", sort_columns=True
).fill_null(0).sort("latent")

# %% [markdown]
# ## 2. What does the budget buy?
#
# `cashback rates simulate-budget` solves the policy again at other budgets on the values the
# run saved (`rate_values.parquet`): no refit, a second or so. Below, `FRONTIER_STEPS`
# budgets from what the cheapest allowed rates cost up to what the unconstrained policy
# spends (beyond it, more budget buys nothing), and the run's own spend (marked current).
#
# On the left, three curves of incremental margin against cashback paid:
#
# * **model**: what the model expects of the rates it chooses at each budget;
# * **truth**: what those same choices are truly worth and cost (honest customers still
#   active at the close, the customers `pipelines.rates_truth` scores the run on);
# * **oracle**: the best possible choice per customer knowing the truth, at the same true
#   spend: the ceiling no model can pass.
#
# Crosses: every customer at the same rate (each uniform rate of the grid), in truth. Right:
# how the average rate and the share of customers above the default rate grow with budget.

# %%
found = rates_frontier.simulate_budget(settings, steps=FRONTIER_STEPS)
table = found.table
saved = rates_frontier.load_values(result.paths["rate_values"].parent)
points = frontier(saved.value, saved.cost, saved.allowed, table["budget"].to_list())

rows = pl.DataFrame({"customer_id": saved.customer_ids}).join(
    truth.customers, on="customer_id", how="left", maintain_order="left"
)
# as `pipelines.rates_truth` scores the run: honest customers still active at the close
honest = (
    (rows["role"] == "legit")
    & rows["alive_at_start"]
    & (rows["churned_ts"].is_null() | (rows["churned_ts"] > result.close))
).to_numpy()
rows = rows.filter(honest)
true_value = np.column_stack(
    [rate_value(rows, truth.config, float(r), result.close, window) for r in GRID]
)
true_cost = np.column_stack(
    [r * expected_paid_spend(rows, truth.config, float(r), result.close, window) for r in GRID]
)
picked = np.arange(rows.height)
frontier_truth = pl.DataFrame(
    {
        "model_value": [float(saved.value[honest][picked, p.choice[honest]].sum()) for p in points],
        "model_cost": [float(saved.cost[honest][picked, p.choice[honest]].sum()) for p in points],
        "true_value": [float(true_value[picked, p.choice[honest]].sum()) for p in points],
        "true_cost": [float(true_cost[picked, p.choice[honest]].sum()) for p in points],
    }
)
oracle = frontier(
    true_value, true_cost, saved.allowed[honest], frontier_truth["true_cost"].to_list()
)
frontier_truth = frontier_truth.with_columns(
    pl.Series("oracle_value", [p.value for p in oracle]), table["current"]
)
current_multiple = float(table.filter("current")["budget_multiple"][0])
display(table)

fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
ax = axes[0]
ax.plot(frontier_truth["model_cost"], frontier_truth["model_value"], marker="o")
ax.lines[-1].set(color=COLORS["model"], label="model: expected")
ax.plot(frontier_truth["true_cost"], frontier_truth["true_value"], marker="o", ls="--")
ax.lines[-1].set(color=COLORS["truth"], label="truth of the same choices")
ax.plot(frontier_truth["true_cost"], frontier_truth["oracle_value"], ls=":", lw=2)
ax.lines[-1].set(color=COLORS["oracle"], label="oracle at the same true spend")
ax.scatter(true_cost.sum(axis=0), true_value.sum(axis=0), marker="x", color="grey")
ax.collections[-1].set_label("one rate for everyone (truth)")
for k, r in enumerate(GRID):
    ax.annotate(f"{r:.0%}", (true_cost[:, k].sum(), true_value[:, k].sum()), fontsize=7)
current = frontier_truth.filter("current")
ax.scatter(
    [current["model_cost"][0], current["true_cost"][0]],
    [current["model_value"][0], current["true_value"][0]],
    s=160,
    facecolors="none",
)
ax.collections[-1].set(edgecolors="black", label="current spend")
ax.axhline(0, color="grey", lw=0.8)
ax.set(title="Incremental margin against cashback paid, per offer window")
ax.set(xlabel=f"cashback paid ({CURRENCY})", ylabel=f"incremental margin ({CURRENCY})")
ax.legend(fontsize=7, loc="lower right")
ax = axes[1]
ax.plot(table["budget_multiple"], table["average_rate"] * 100, marker="o", color="purple")
ax.set(xlabel="budget (x the default card's cost)", ylabel="average rate (%)")
ax.set(title="Average rate and customers above the default rate")
twin = ax.twinx()
twin.plot(table["budget_multiple"], table["share_above_default"] * 100, marker="s", ls="--")
twin.set(ylabel="customers above the default rate (%)", ylim=(0, 100))
twin.grid(visible=False)
ax.axvline(current_multiple, color="grey", lw=0.8, ls=":")
fig.tight_layout()
plt.show()
print(
    f"at the current spend ({current_multiple:.2f} x the default card): the model expects "
    f"{current['model_value'][0]:,.0f}, truly {current['true_value'][0]:,.0f}, oracle "
    f"{current['oracle_value'][0]:,.0f} {CURRENCY} per window (honest active customers); "
    f"cashback expected {current['model_cost'][0]:,.0f}, truly {current['true_cost'][0]:,.0f}"
)

# %% [markdown]
# Read the curves from the left: the first euros of cashback go to the customers the model
# expects to respond most per euro, so its margin climbs fast, then flattens. Where the
# model's curve and the truth's part, the model misjudges what the rates bring or cost:
# budget decisions should rest on the truth's slope, which on real data you can only
# approach by testing the new rates in an experiment before rolling them out. The gap to
# the oracle is what a better response model could still earn at the same spend. Budgets
# below the default card's cost take customers *below* the default rate, which can lose
# margin (negative values).

# %% [markdown]
# ## 3. The rate card
#
# Engines that do not call the API use one rate per segment and category: the rate that
# maximises the segment's value at the policy's budget multiplier, each customer counted in
# a category in proportion to their share of spend there (last 90 days). This run's
# segments are the lifecycle stages: the behaviour segments of `cashback train segments`
# replace them once their scores are in the feature store. Segments without spend in the
# last 90 days (inactive customers) have no cell.

# %%
card = rates_card.load_card(result.paths["rate_card"].parent)
rates = card.card.pivot(on="category", index="segment", values="rate").sort("segment")
categories = rates.columns[1:]
fig, ax = plt.subplots(figsize=(1.1 * len(categories) + 2, 0.6 * rates.height + 1.2))
grid = rates.select(categories).to_numpy() * 100
ax.imshow(grid, cmap="Oranges", vmin=0, vmax=GRID.max() * 100, aspect="auto")
for (i, j), rate in np.ndenumerate(grid):
    ax.text(j, i, "-" if np.isnan(rate) else f"{rate:.0f}%", ha="center", va="center")
ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
ax.set_yticks(range(rates.height), rates["segment"].to_list())
ax.grid(visible=False)
ax.set(title="Rate card: segment x category")
fig.tight_layout()
plt.show()
totals = card.totals
print(
    f"card totals: {totals['customers']:,.0f} customers, expected incremental margin "
    f"{totals['expected_incremental_margin']:,.2f} for {totals['expected_cashback']:,.2f} "
    f"{CURRENCY} of cashback per window"
)
card.card

# %% [markdown]
# ## 4. Unequal treatment along attributes the policy never uses
#
# Region and age band are not inputs of the policy (`rates.excluded_attributes`), but other
# features can stand in for them: spend, category mix, channel. The card reports the
# average rate by each of them, with its difference from the average of all customers, so
# that a gap shows. In this simulated world the attributes are drawn independently of
# behaviour, so gaps are noise; on real data a lasting gap is worth a look.

# %%
fairness = card.fairness
display(fairness)
fig, axes = plt.subplots(1, fairness["attribute"].n_unique(), figsize=(12, 3.4), squeeze=False)
for ax, attribute in zip(axes[0], fairness["attribute"].unique().sort(), strict=True):
    part = fairness.filter(pl.col("attribute") == attribute)
    ax.bar(part["value"], part["average_rate"] * 100, color="slategrey")
    overall = (part["average_rate"] * part["customers"]).sum() / part["customers"].sum()
    ax.axhline(overall * 100, color="black", ls="--", lw=1, label="all customers")
    ax.set(title=f"average rate by {attribute}", ylabel="average rate (%)")
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
plt.show()
rates_card.fairness_gaps(fairness)

# %% [markdown]
# ## 5. Can the model and the policy be trusted?
#
# **Qini** per rate level against 0 %, on the held-out exposures: customers ranked by their
# predicted uplift in spend from 0 % to that rate; the area between the Qini curve and the
# random ranking's line, per exposure (0 = no better than random). The S-learner (one model,
# monotone in the rate) is the one the policy uses; the T-learner (one model per rate) is
# there for comparison.

# %%
qini = result.qini.pivot(on="learner", index="rate", values="qini").sort("rate")
fig, ax = plt.subplots(figsize=(8, 3.4))
width = 0.35
positions = np.arange(qini.height)
for offset, learner in zip([-width / 2, width / 2], ["s_learner", "t_learner"], strict=True):
    ax.bar(positions + offset, qini[learner], width, label=learner.replace("_", "-"))
ax.set_xticks(positions, [f"{r:.0%} vs 0%" for r in qini["rate"]])
ax.axhline(0, color="grey", lw=0.8)
ax.set(title="Qini above random, per held-out exposure", ylabel="Qini area / exposure")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
result.qini

# %% [markdown]
# **Off-policy evaluation**: the mean net margin per held-out exposure each policy would
# have earned, estimated from exposures logged under another policy. IPS reweights the
# exposures whose logged rate matches the policy's by 1 / propensity; SNIPS normalises the
# weights; DR (doubly robust) adds the model's prediction and corrects it with the reweighted
# residuals. Intervals (95 %) come from a bootstrap over customers. The logging policy's
# value is simply the held-out exposures' mean.

# %%
ope = result.ope.with_columns(
    pl.col("policy").replace({"personalized": "personalized (ours)"}).alias("policy")
)
order = ["personalized (ours)", "logging"] + [f"uniform {r:.0%}" for r in GRID]
estimators = {"ips": -0.2, "snips": 0.0, "dr": 0.2, "mean": 0.0}
fig, ax = plt.subplots(figsize=(9, 4.2))
for estimator, offset in estimators.items():
    part = ope.filter(pl.col("estimator") == estimator)
    y = np.array([order.index(p) for p in part["policy"]]) + offset
    value, low, high = (part[c].to_numpy() for c in ("value", "low", "high"))
    ax.errorbar(value, y, xerr=[value - low, high - value], fmt="o", capsize=3, label=estimator)
ax.set_yticks(range(len(order)), order)
ax.invert_yaxis()
ax.set(title="Net margin per held-out exposure (95 % CI)", xlabel=f"{CURRENCY} per exposure")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()
ope.pivot(on="estimator", index="policy", values="value")

# %% [markdown]
# The estimates are of the policy **without** the budget (each customer's rate at the
# budget's multiplier), and they are noisy: a few thousand held-out exposures, of which only
# the explored ones (a fifth, spread over six rates) can match a policy that differs from
# the logging policy. Against the truth, at the close (honest customers, the same spend):

# %%
compared = against_truth(settings, result)
best_uniform = compared.best_uniform
print(
    f"our policy: {compared.ours:,.0f} {CURRENCY} of true incremental margin per window for "
    f"{compared.ours_cost:,.0f} of cashback, {compared.share_of_oracle:.0%} of the oracle's "
    f"{compared.oracle:,.0f} ({compared.customers:,} customers)"
)
print(
    f"best single rate for everyone: {best_uniform:.0%}; at its spend our policy earns "
    f"{compared.gain_over_best_uniform:+.1%} more than it; the logging policy: "
    f"{compared.logging:,.0f}"
)
pl.DataFrame(
    {
        "uniform rate": list(compared.uniform),
        "true value": [v[0] for v in compared.uniform.values()],
        "true cost": [v[1] for v in compared.uniform.values()],
        "ours at that cost (true value)": [v[2] for v in compared.uniform.values()],
    }
)

# %% [markdown]
# ## What to take away
#
# The figures below are computed from this run.

# %%
at_model_rate = best["true_net_at_model_rate"].sum() / best["true_best_net"].sum()
print(
    f"* Response: on held-out exposures, the model's best rate per segment earns "
    f"{at_model_rate:.0%} of the truth's best net margin, summed over the latent segments."
)
low, high = table.row(0, named=True), table.filter(~pl.col("current")).row(-1, named=True)
print(
    f"* Frontier: from {low['expected_cashback']:,.0f} to {high['expected_cashback']:,.0f} "
    f"{CURRENCY} of cashback per window, the expected incremental margin goes from "
    f"{low['expected_incremental_margin']:,.0f} to {high['expected_incremental_margin']:,.0f}; "
    f"the current spend ({current_multiple:.2f} x the default card) puts "
    f"{table.filter('current')['share_above_default'][0]:.0%} of customers above the default."
)
gaps = rates_card.fairness_gaps(fairness)
print(
    "* Fairness: largest gap in average rate "
    + ", ".join(f"{g['attribute']} {g['gap'] * 100:.2f} points" for g in gaps.iter_rows(named=True))
)
dr = result.ope.filter(pl.col("estimator") == "dr")
ours_dr = dr.filter(pl.col("policy") == "personalized").row(0, named=True)
print(
    f"* OPE: DR value of our policy {ours_dr['value']:.2f} {CURRENCY} per exposure (95 % CI "
    f"{ours_dr['low']:.2f} to {ours_dr['high']:.2f}) against the logging policy's "
    f"{metrics['ope_logging_mean']:.2f}; truth: {compared.share_of_oracle:.0%} of the oracle."
)

# %% [markdown]
# * Judge a rate by the extra margin it brings net of the cashback paid to everyone who gets
#   it, not by the extra spend: a rate that lifts spend can still lose money.
# * The frontier tells you what the next euro of budget is worth; spend where the curve is
#   still steep, and remember that the model's curve is an estimate: test a new budget on a
#   share of customers (`cashback experiments`) before rolling it out.
# * Use the rate card where the API is not called, and the per-customer rates where it is:
#   the card averages each segment's response and leaves value on the table.
# * Watch the average rate by excluded attribute on real data: a policy that never sees an
#   attribute can still treat its groups unequally through correlated behaviour.
# * Off-policy estimates have wide intervals on a small world: read them as a check that
#   the policy is not worse than what runs today, and their intervals before their points.

# %%
workdir.cleanup()
