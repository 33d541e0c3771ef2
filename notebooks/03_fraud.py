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
# # 03 · Can we trust the claim risk model?
#
# You are the risk analyst. Every cashback claim gets a **risk score** from the fraud model
# and is checked against the **rules** of `config/fraud_rules.yaml`; together they decide
# whether the claim is paid (allow), goes to your team (review) or is stopped (block).
# Before you rely on it, you want answers to a few questions: how good is the model, and
# compared with what? How sure can you be of the figures? How many claims will land in the
# review queue, and is that the right amount for your team? Why was a given claim flagged?
# And when you want to change a rule, what would the change have done?
#
# This notebook trains the model the way `cashback train fraud` does (without registering
# it in MLflow) on a small simulated world, and answers them one by one. The simulator
# knows which claims really were fraud (its **truth**): a luxury you never have on real
# data, used here to check what the real-data figures (the audit sample) can tell you.
#
# Size: `CASHBACK_NOTEBOOK_CUSTOMERS` (default 5,000) customers over
# `CASHBACK_NOTEBOOK_DAYS` (default 365) days, simulated into a temporary directory.

# %%
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import yaml
from sklearn.metrics import average_precision_score, precision_recall_curve

from cashback.settings import Settings
from models.fraud.backtest import backtest, compare
from models.fraud.rules import load_rules, parse_rules
from models.fraud.scorer import flagged
from pipelines.fraud_backtest import scored_claims
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config
from pipelines.train_fraud import run as train_fraud

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash: a DEMO value unless CASHBACK_IP_PEPPER is set.
PEPPER = os.environ.get("CASHBACK_IP_PEPPER", "notebook-demo-pepper")

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
world = Path(workdir.name) / "world"
settings = Settings(ip_pepper=PEPPER, data_dir=world)
pl.Config.set_tbl_rows(20)
pl.Config.set_fmt_str_lengths(90)
pl.Config.set_tbl_width_chars(160)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
SCORES = {"model": "probability", "rules alone": "rule_score", "anomaly alone": "anomaly_score"}
SCORE_COLORS = {"model": "firebrick", "rules alone": "steelblue", "anomaly alone": "darkorange"}
CURRENCY = settings.currency

# %%
config = world_config(settings, customers=CUSTOMERS, days=DAYS)
started = time.perf_counter()
simulate(config, world, settings)
simulated = time.perf_counter() - started
result = train_fraud(settings, register=False)
trained = time.perf_counter() - started - simulated
test = result.test.with_columns(pl.col("true_abuse_type").fill_null("honest"))
limits, fraud_config = result.scorer.limits, settings.fraud
_, calibration_start, test_start = result.periods.bounds
test_days = (result.periods.mature_until - test_start).total_seconds() / 86_400
print(f"{config.customers:,} customers, {config.days} days from {config.start}, seed {config.seed}")
print(f"simulated in {simulated:.1f} s, model trained, calibrated and tested in {trained:.1f} s")
print(
    f"test slice: {test.height:,} claims from {test_start:%Y-%m-%d} to "
    f"{result.periods.mature_until:%Y-%m-%d} ({test_days:.0f} days), the latest mature claims"
)

# %% [markdown]
# ## 1. What the model learns from, and what it is judged on
#
# A model learns from labelled claims, and labels are scarce and biased:
#
# * a **chargeback** comes only for some frauds (those the payment side notices), 30-90
#   days after the claim: it says "fraud", and it over-represents the kinds of fraud that
#   get charged back;
# * the **random audit** reviews about 1 % of all claims, 15-30 days after: it is the only
#   label that does not depend on what anyone suspected, so it is the only sample whose
#   figures describe *every* claim;
# * every other claim is **unlabelled**: that means *unknown*, not *legit*. Some of them are
#   frauds nobody noticed.
#
# Training only uses claims older than the maturity window (`maturity_days`), whose labels
# have had time to arrive, and splits them by time: train, validation (early stopping),
# calibration (the probabilities and the thresholds) and test (the latest, below). Here is
# the test slice by label source, next to what the simulator knows.

# %%
sources = (
    test.group_by(pl.col("label_source").fill_null("unlabelled"))
    .agg(
        pl.len().alias("claims"),
        (pl.col("label") == 1).sum().alias("labelled_fraud"),
        pl.col("is_fraud").sum().alias("true_frauds"),
    )
    .sort("claims", descending=True)
)
audit = test.filter(pl.col("label_source").str.contains("audit").fill_null(value=False))
audit_frauds = int((audit["label"] == 1).sum())
true_frauds = int(test["is_fraud"].sum())
unseen = int(test.filter(pl.col("label").is_null())["is_fraud"].sum())
print(f"true frauds in the test slice: {true_frauds:,}, of them never labelled: {unseen:,}")
print(f"audit sample: {audit.height:,} claims, of them {audit_frauds} labelled fraud")
sources

# %%
by_type = (
    test.filter("is_fraud")
    .group_by("true_abuse_type", pl.col("label_source").fill_null("unlabelled"))
    .len()
    .pivot("label_source", index="true_abuse_type", values="len")
    .fill_null(0)
    .sort("true_abuse_type")
)
fig, ax = plt.subplots(figsize=(10, 3.6))
left = np.zeros(by_type.height)
palette = {"chargeback": "firebrick", "audit": "seagreen", "unlabelled": "lightgrey"}
for source in [c for c in by_type.columns if c != "true_abuse_type"]:
    color = palette.get(source, "darkorange")
    ax.barh(by_type["true_abuse_type"], by_type[source], left=left, label=source, color=color)
    left += by_type[source].to_numpy()
ax.set(title="True frauds of the test slice by the label they got", xlabel="claims")
ax.set(ylabel="true abuse type")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# So the figures come in three flavours, and only two of them are honest:
#
# * **audit**: the audit sample, a random sample of all claims. Unbiased, but tiny: a
#   handful of frauds, so every figure has a wide confidence interval;
# * **labelled**: every labelled claim. Mostly chargebacks, i.e. frauds that were already
#   caught: they make any score look better than it is. Never quote these;
# * **truth**: every claim against the simulator's truth. Only in the simulator; here it
#   tells you how far the audit figures can be trusted.
#
# The model is compared with two baselines that need no labels at all: the **rules alone**
# (`rule_score`: a block rule, then the number of review rules hit) and the **anomaly
# score alone** (an isolation forest: how unusual a claim looks).

# %%
prefixes = {"model": "", "rules alone": "rules_", "anomaly alone": "anomaly_"}
rows = [
    {
        "score": name,
        "sample": sample,
        "claims": int(result.metrics[f"{prefix}{sample}_claims"]),
        "frauds": int(result.metrics[f"{prefix}{sample}_frauds"]),
        "pr_auc": result.metrics[f"{prefix}{sample}_pr_auc"],
        "roc_auc": result.metrics[f"{prefix}{sample}_roc_auc"],
    }
    for name, prefix in prefixes.items()
    for sample in ["audit", "labelled", "truth"]
]
quality = pl.DataFrame(rows)
quality.pivot("score", index=["sample", "claims", "frauds"], values="pr_auc")

# %% [markdown]
# ## 2. Precision and recall against the baselines
#
# The PR curve: if you flag every claim above a score, which share of the frauds do you
# catch (recall) and which share of the flagged claims are frauds (precision)? The area
# under it (PR-AUC, the average precision) sums the curve up; a random score gets the fraud
# rate. Left, on every claim of the test slice (truth); right, on the audit sample, the only
# view you would have on real data. Count its frauds before reading anything into it.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
panels = [
    (axes[0], test, "is_fraud", "every test claim (truth)"),
    (axes[1], audit, "label", "audit sample only (what real data shows)"),
]
for ax, frame, label_column, title in panels:
    label = frame[label_column].cast(pl.Int8).to_numpy()
    frauds = int(label.sum())
    ax.set(title=f"{title}: {frame.height:,} claims, {frauds:,} frauds")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05))
    if frauds == 0:
        ax.text(0.5, 0.5, "no fraud in this sample: no curve", ha="center", transform=ax.transAxes)
        continue
    for name, column in SCORES.items():
        score = frame[column].to_numpy()
        precision, recall, _ = precision_recall_curve(label, score)
        area = average_precision_score(label, score)
        ax.step(recall, precision, where="post", color=SCORE_COLORS[name])
        ax.lines[-1].set_label(f"{name} (PR-AUC {area:.2f})")
    ax.axhline(frauds / frame.height, color="grey", ls=":", label="random score (fraud rate)")
    ax.legend(fontsize=8, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. How the score separates frauds from honest claims, and what its numbers mean
#
# The risk score is the calibrated fraud probability in percent. Left: where frauds and
# honest claims fall (log scales: the classes differ by orders of magnitude in size and in
# score); wherever they overlap, every threshold trades missed frauds for honest customers
# bothered. The probabilities matter, not only the ranking: the expected loss, the review
# threshold and the block threshold all read them. They are calibrated on the audit sample
# (the only unbiased labels), so with few audited frauds they are rough. Middle: the claims
# grouped by rank (the top 0.2 %, the next 0.3 %, ... the bottom half), the mean predicted
# probability against the true fraud rate: on the diagonal, the probabilities can be taken
# at their word. Right: reviews are decided on the **expected loss** (probability x
# cashback amount), so the review threshold is a curve, not a line: a large cashback goes
# to review at a lower risk than a small one. Block needs the model to be very sure
# (`block_precision`); with few labels it may never be.

# %%
floor = 1e-3  # risk scores below are drawn at the floor (the log axis has no zero)
risk = test.select(pl.col("risk_score").clip(lower_bound=floor), "is_fraud", "cashback_amount")
frauds, honest = risk.filter("is_fraud"), risk.filter(~pl.col("is_fraud"))
probability = test["probability"].to_numpy()
top_share = np.empty(test.height)
top_share[np.argsort(-probability, kind="stable")] = np.arange(test.height) / test.height
rank_edges = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
reliability = (
    test.select("probability", pl.col("is_fraud").cast(pl.Float64))
    .with_columns(pl.Series("group", np.digitize(top_share, rank_edges)))
    .group_by("group")
    .agg(pl.col("probability").mean().alias("predicted"), pl.col("is_fraud").mean(), pl.len())
    .sort("group")
)
fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
bins = np.logspace(np.log10(floor), 2, 50)
axes[0].hist(honest["risk_score"], bins=bins, color="grey", alpha=0.7, label="honest (truth)")
axes[0].hist(frauds["risk_score"], bins=bins, color="firebrick", alpha=0.7, label="fraud (truth)")
axes[0].set(title="Risk score of the test claims", xlabel="risk score (%, log)", xscale="log")
axes[0].set(ylabel="claims (log)", yscale="log")
axes[0].legend(fontsize=8)
rate_floor = 1e-4  # groups without any fraud are drawn at the floor, hollow
observed = reliability["is_fraud"].to_numpy()
for hollow, marker_face in [(False, "firebrick"), (True, "none")]:
    chosen = (observed == 0) if hollow else (observed > 0)
    axes[1].scatter(
        reliability["predicted"].to_numpy()[chosen], np.maximum(observed[chosen], rate_floor),
        s=40, color="firebrick", facecolors=marker_face,
    )  # fmt: skip
axes[1].plot([rate_floor, 1], [rate_floor, 1], color="grey", ls=":", label="perfect calibration")
axes[1].set(title="Calibration by rank group (truth)", xscale="log", yscale="log")
axes[1].set(xlabel="mean predicted probability", ylabel="true fraud rate")
axes[1].legend(fontsize=8, loc="upper left")
for frame, color, name in [(honest, "grey", "honest"), (frauds, "firebrick", "fraud")]:
    paid = frame.filter(pl.col("cashback_amount") > 0)
    axes[2].scatter(paid["cashback_amount"], paid["risk_score"], s=4, alpha=0.4, color=color)
    axes[2].collections[-1].set_label(name)
amounts = np.logspace(-2, np.log10(test["cashback_amount"].max() + 1), 200)
boundary = 100 * limits.review_expected_loss / amounts
axes[2].plot(amounts, boundary, color="black", label="review threshold (expected loss)")
if limits.block_probability is not None:
    axes[2].axhline(100 * limits.block_probability, color="purple", ls="--", label="block")
axes[2].set(xscale="log", yscale="log", ylim=(floor * 0.8, 130))
unpaid = int((risk["cashback_amount"] <= 0).sum())  # no loss: the model never reviews them
axes[2].set(
    title=f"Risk vs cashback: review above the curve\n({unpaid:,} without cashback: not shown)"
)
axes[2].set(ylabel="risk score (%, log)", xlabel=f"cashback amount ({CURRENCY}, log)")
axes[2].legend(fontsize=8, loc="lower left", markerscale=3)
fig.tight_layout()
plt.show()
calibrator = result.scorer.model.calibrator
top_1 = top_share < 0.01
truth_1 = test["is_fraud"].to_numpy()[top_1]
block = "never" if limits.block_probability is None else f"at {limits.block_probability:.1%}"
print(f"probabilities calibrated on: {calibrator.fitted_on}")
print(
    f"the probabilities expect {probability.sum():,.0f} frauds in the test slice, "
    f"the truth has {true_frauds:,}; the top 1 % of claims averages "
    f"{probability[top_1].mean():.1%}, their true fraud rate is {truth_1.mean():.1%}"
)
print(
    f"review at expected loss >= {limits.review_expected_loss:.2f} {CURRENCY}; "
    f"the model blocks {block}"
)

# %% [markdown]
# ## 4. The threshold and your team's capacity
#
# Two things set the review threshold (`models/fraud/decisions.py`): the team can review
# `reviews_per_day` claims a day, and a review costs `review_cost` (a minute of an
# analyst), so a claim whose expected loss is below that cost is not worth reviewing. The
# threshold is the higher of the two. Below: the share of frauds (left) and of the
# fraudulent cashback (right) you catch against the share of claims you review, ranking the
# claims by risk, by expected loss, or by the rules. Ranking by risk aims at the most frauds
# per review, ranking by expected loss at the most money per review: that is what the
# review threshold does, and where the probabilities are miscalibrated, it lands in the
# wrong place. The dashed line is your team's capacity, the dotted one where the model's
# review threshold lands, the stars what the decisions (model and rules together) actually
# flagged.


# %%
def catch_curve(score: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of claims reviewed and share of `weight` caught, at each distinct threshold."""
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    caught = np.cumsum(weight[order]) / weight.sum()
    last = np.r_[ranked[1:] != ranked[:-1], True]  # the last claim of each tie
    return (np.flatnonzero(last) + 1) / len(score), caught[last]


is_fraud = test["is_fraud"].to_numpy()
fraud_cashback = np.where(is_fraud, test["cashback_amount"].to_numpy(), 0.0)
rankings = {
    "model: by risk": ("probability", "firebrick", "-"),
    "model: by expected loss": ("expected_loss", "black", "-"),
    "rules alone": ("rule_score", "steelblue", "-"),
    "anomaly alone": ("anomaly_score", "darkorange", ":"),
}
capacity_share = min(fraud_config.reviews_per_day / limits.claims_per_day, 1.0)
model_review = test["expected_loss"] >= limits.review_expected_loss
model_share = float(model_review.mean())
decided = test.select(flagged(pl.col("decision"))).to_series()
decided_share = float(decided.mean())
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
weights = [
    (axes[0], is_fraud.astype(float), "Frauds caught (truth)"),
    (axes[1], fraud_cashback, "Fraudulent cashback caught (truth)"),
]
for ax, weight, title in weights:
    for name, (column, color, style) in rankings.items():
        share, caught = catch_curve(test[column].to_numpy(), weight)
        ax.step(share, caught, where="post", color=color, ls=style, label=name)
    ax.axvline(capacity_share, color="black", ls="--", lw=1, label="team capacity")
    ax.axvline(model_share, color="firebrick", ls=":", lw=1.5, label="model review threshold")
    caught_by_decisions = weight[decided.to_numpy()].sum() / weight.sum()
    ax.scatter(decided_share, caught_by_decisions, marker="*", s=200, color="gold", zorder=5)
    ax.collections[-1].set(edgecolor="black", label="decisions (model + rules)")
    ax.set(xscale="log", xlim=(1 / test.height, 1), ylim=(0, 1.02))
    ax.set(xlabel="share of claims reviewed (log)", title=title)
axes[0].set(ylabel="share caught")
axes[0].legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()
binding = (
    "the review cost" if limits.review_expected_loss <= fraud_config.review_cost else "capacity"
)
print(
    f"capacity: {fraud_config.reviews_per_day} reviews a day for {limits.claims_per_day:,.0f} "
    f"claims a day = {capacity_share:.1%} of the claims"
)
print(
    f"the model's threshold sends {model_share:.2%} of the test claims to review "
    f"({model_share * test.height / test_days:,.1f} a day): set by {binding}"
)
print(f"with the rules, {decided_share:.2%} are flagged ({decided.sum() / test_days:,.1f} a day)")

# %% [markdown]
# The threshold report: what the current decisions flagged in the test slice. Precision
# and recall from the audit sample carry a 95 % Wilson interval: look at its width before
# the value. The truth columns, cashback caught and honest customers bothered come from
# the simulator.


# %%
def interval(bounds: tuple[float, float]) -> str:
    low, high = bounds
    return "-" if np.isnan(low) else f"{low:.2f}-{high:.2f}"


pl.DataFrame(
    [
        {
            "decision": row["decision"],
            "claims": row["claims"],
            "share": round(row["share"], 4),
            "audit_precision": round(row["audit_precision"], 2),
            "audit_precision_95": interval(row["audit_precision_ci"]),
            "audit_recall": round(row["audit_recall"], 2),
            "audit_recall_95": interval(row["audit_recall_ci"]),
            "truth_precision": round(row["truth_precision"], 3),
            "truth_recall": round(row["truth_recall"], 3),
            f"cashback_caught_{CURRENCY}": round(row["cashback_caught"], 2),
            "honest_customers_hit": row["honest_customers_hit"],
        }
        for row in result.report
    ],
    strict=False,
)

# %% [markdown]
# ## 5. Why a claim was flagged
#
# For a claim in the queue, the scorer gives reasons in words: the features that pushed its
# risk up most (tree SHAP), with the claim's value and the typical one, and the kind of
# abuse it looks like (the family of features that adds most risk). Below, the riskiest
# flagged claim of each true abuse type, and the riskiest flagged honest claim: a false
# alarm your team would clear.

# %%
queue = test.filter(flagged(pl.col("decision"))).sort("risk_score", descending=True)
examples = queue.group_by("true_abuse_type", maintain_order=True).head(1)
explanations = result.scorer.explain_frame(examples, count=3)
for row, why in zip(examples.iter_rows(named=True), explanations, strict=True):
    rules = ", ".join(row["rule_hits"]) or "none"
    print(
        f"{row['claim_id']}: truth {row['true_abuse_type']}, looks like {why.abuse_type}; "
        f"risk {row['risk_score']:.1f}, cashback {row['cashback_amount']:.2f} {CURRENCY}, "
        f"{row['decision']} (rules hit: {rules})"
    )
    for reason in why.reasons:
        print(f"    - {reason}")

# %% [markdown]
# Not every kind of abuse is caught as well. Left: the share of each kind's frauds that the
# decisions flagged, that the model alone sends to review (its threshold), and that the
# rules alone flag. Right: for the frauds flagged, the abuse type the reasons name against
# the true one.

# %%
caught_flags = test.with_columns(
    decided.alias("decisions"),
    model_review.alias("model alone"),
    flagged(pl.col("rule_action")).alias("rules alone"),
)
recall_by_type = (
    caught_flags.filter("is_fraud")
    .group_by("true_abuse_type")
    .agg(pl.len().alias("frauds"), *(pl.col(c).mean() for c in ["decisions", "model alone"]))
    .join(
        caught_flags.filter("is_fraud")
        .group_by("true_abuse_type")
        .agg(pl.col("rules alone").mean()),
        on="true_abuse_type",
    )
    .sort("true_abuse_type")
)
caught_frauds = queue.filter("is_fraud")
predicted = [e.abuse_type for e in result.scorer.explain_frame(caught_frauds)]
confusion = (
    caught_frauds.select("true_abuse_type")
    .with_columns(pl.Series("predicted", predicted))
    .group_by("true_abuse_type", "predicted")
    .len()
)
true_types = recall_by_type["true_abuse_type"].to_list()
named_types = sorted(set(predicted) | set(true_types))
matrix = np.zeros((len(true_types), len(named_types)), dtype=int)
for true_type, named, count in confusion.iter_rows():
    matrix[true_types.index(true_type), named_types.index(named)] = count

fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), width_ratios=[1, 1.1])
height = 0.27
positions = np.arange(len(true_types))
bars = [("decisions", "gold"), ("model alone", "firebrick"), ("rules alone", "steelblue")]
for i, (column, color) in enumerate(bars):
    axes[0].barh(positions + (1 - i) * height, recall_by_type[column], height, color=color)
    axes[0].containers[-1].set_label(column)
labels = [f"{t} ({n})" for t, n in recall_by_type.select("true_abuse_type", "frauds").iter_rows()]
axes[0].set_yticks(positions, labels)
axes[0].set(title="Recall by true abuse type (frauds)", xlabel="share of its frauds flagged")
axes[0].set(xlim=(0, 1))
axes[0].legend(fontsize=8, loc="lower right")
axes[1].imshow(matrix, cmap="Reds")
for (i, j), count in np.ndenumerate(matrix):
    color = "white" if count > matrix.max() / 2 else "black"
    axes[1].text(j, i, f"{count}", ha="center", va="center", fontsize=8, color=color)
axes[1].set_xticks(range(len(named_types)), named_types, rotation=30, ha="right")
axes[1].set_yticks(range(len(true_types)), true_types)
axes[1].grid(visible=False)
axes[1].set(title="Flagged frauds: abuse type named vs true", xlabel="named by the reasons")
fig.tight_layout()
plt.show()
accuracy = float(np.trace(matrix[:, [named_types.index(t) for t in true_types]]) / matrix.sum())
print(f"abuse type named correctly for {accuracy:.0%} of the flagged frauds")

# %% [markdown]
# ## 6. Before changing a rule: backtest it
#
# Rules are yours to change, but a change should be backtested on past claims first
# (`cashback fraud backtest --rules new.yaml --against config/fraud_rules.yaml` does what
# follows). The claims are every mature claim of the world, with the features serving saw
# at each claim and every label known. Two candidate tightenings: flag a device shared by
# more than 2 accounts instead of 3, and a basket more than 5 times the customer's average
# instead of 10. The backtest says what each would have flagged on top of today's rules,
# and with what precision and recall; on the audit sample with its interval, and here on
# the truth as well.

# %%
rules_text = Path(fraud_config.rules_file).read_text(encoding="utf-8")
current = load_rules(fraud_config.rules_file)


def tightened(rule: str, field: str, value: float) -> tuple[str, object]:
    """The current rules with one field of one rule changed (checked like a rules file)."""
    spec = yaml.safe_load(rules_text)
    entry = next(r for r in spec["rules"] if r["name"] == rule)
    before, entry[field] = entry[field], value
    name = f"{rule}: {field} {before} -> {value}"
    return name, parse_rules(yaml.safe_dump(spec, sort_keys=False), name)


candidates = dict(
    [tightened("shared_device", "max_customers", 2), tightened("basket_outlier", "value", 5)]
)
claims, period = scored_claims(settings, None, result.periods.mature_until)
baseline = backtest(current, claims, period=period)
print(baseline.header())
baseline.to_frame().select(
    "name", "action", "hits", "per_day", "audit_precision", "audit_precision_n",
    "truth_precision", "truth_recall",
)  # fmt: skip

# %%
comparisons = {
    name: compare(current, rules, claims, period=period) for name, rules in candidates.items()
}
summary = []
for name, comparison in comparisons.items():
    moved = comparison.newly_flagged
    print(comparison.summary())
    summary.append(
        {
            "change": name,
            "newly_flagged": moved.height,
            "per_day": moved.height / baseline.days,
            "true_frauds": int(moved["is_fraud"].sum()),
            "audited": int(moved["audited"].sum()),
            "audited_frauds": int((moved["audited"] & moved["fraud_label"]).sum()),
            "audit_precision": comparison.new.flagged.audit_precision.short(),
            "audit_recall": comparison.new.flagged.audit_recall.short(),
            "truth_precision_change": comparison.delta("truth_precision"),
            "truth_recall_change": comparison.delta("truth_recall"),
        }
    )
changes = pl.DataFrame(summary)
changes

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), width_ratios=[1, 1.2])
names = changes["change"].to_list()
honest_moved = changes["newly_flagged"] - changes["true_frauds"]
axes[0].barh(names, changes["true_frauds"], color="firebrick", label="true frauds")
axes[0].barh(names, honest_moved, left=changes["true_frauds"], color="grey", label="honest")
axes[0].set(title="Claims each change newly flags (truth)", xlabel="claims")
axes[0].legend(fontsize=8)
sides = [("today's rules", baseline, "black")] + [
    (name, c.new, color) for (name, c), color in zip(comparisons.items(), ["C0", "C2"], strict=True)
]
for name, report, color in sides:
    row = report.flagged
    recall, precision = row.audit_recall, row.audit_precision
    axes[1].scatter(row.truth_recall.value, row.truth_precision.value, color=color, s=60)
    axes[1].collections[-1].set_label(f"{name} (truth)")
    if recall.n and precision.n:
        (r_low, r_high), (p_low, p_high) = recall.interval, precision.interval
        axes[1].errorbar(
            recall.value, precision.value, fmt="s", mfc="none", color=color, alpha=0.6,
            xerr=[[recall.value - r_low], [r_high - recall.value]],
            yerr=[[precision.value - p_low], [p_high - precision.value]],
        )  # fmt: skip
axes[1].set(title="All flagged: truth (dots) vs audit sample (squares, 95 %)")
axes[1].set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05))
axes[1].legend(fontsize=8, loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Rules and the model decide together: a claim is flagged when either flags it. So a new
# rule is only worth what it adds to the model. On the test slice, how many of the claims
# each change newly flags would the model already have sent to review?

# %%
for name, rules in candidates.items():
    moved = compare(current, rules, test).newly_flagged.join(
        test.select("claim_id", "decision"), on="claim_id"
    )
    already = int(moved.select(flagged(pl.col("decision"))).to_series().sum())
    print(
        f"{name}: {moved.height} claims newly flagged in the test slice, {already} of them "
        f"already flagged by the model, {int(moved['is_fraud'].sum())} true frauds"
    )

# %% [markdown]
# ## What to take away
#
# The figures below are computed from this run. The model's edge over the rules grows with the
# labelled frauds it learns from: rerun with more customers (`CASHBACK_NOTEBOOK_CUSTOMERS`)
# to see how it changes.

# %%
model_auc = result.metrics["truth_pr_auc"]
baselines = {name: result.metrics[f"{prefixes[name]}truth_pr_auc"] for name in prefixes}
best_name = max(["rules alone", "anomaly alone"], key=baselines.__getitem__)
best_auc = baselines[best_name]
verdict = "beats" if model_auc > best_auc else "does not beat"
print(
    f"* PR-AUC on the truth: model {model_auc:.2f}, {best_name} {best_auc:.2f}: "
    f"the model {verdict} the better baseline on this world"
)
flagged_row = result.report[0]
low, high = flagged_row["audit_recall_ci"]
print(
    f"* the audit sample of the test slice holds {audit_frauds} frauds: its recall of the "
    f"decisions, {flagged_row['audit_recall']:.2f}, is only known to lie in "
    f"[{low:.2f}, {high:.2f}] (truth: {flagged_row['truth_recall']:.2f})"
)
print(
    f"* the decisions flag {decided_share:.2%} of claims, {decided.sum() / test_days:,.1f} a "
    f"day for a capacity of {fraud_config.reviews_per_day}; the threshold is set by {binding}"
)
ratio = truth_1.mean() / probability[top_1].mean()
words = "close to" if 0.5 <= ratio <= 2 else "far from"
print(
    f"* calibration: the riskiest 1 % of claims are fraud {ratio:.1f} times as often as "
    f"predicted, {words} their probabilities (calibrated on: {calibrator.fitted_on})"
)
weakest = recall_by_type.sort("decisions").row(0, named=True)
print(
    f"* weakest abuse type: {weakest['true_abuse_type']}, {weakest['decisions']:.0%} of its "
    f"frauds flagged"
)
for row in changes.iter_rows(named=True):
    print(
        f"* {row['change']}: {row['newly_flagged']} claims more ({row['true_frauds']} true "
        f"frauds), seen by the audit sample as {row['audited_frauds']} fraud(s) out of "
        f"{row['audited']}"
    )

# %% [markdown]
# * Quote only audit-sample figures on real data, with their interval; figures on every
#   labelled claim flatter any score, because chargebacks are frauds already caught. With a
#   handful of audited frauds, the interval is wide: a larger audit sample buys certainty.
# * Compare the model with the rules and the anomaly score, not with nothing: the model is
#   only worth running where it beats them, and it needs labelled frauds to do so.
# * Check the calibration, not only the ranking: the review and block thresholds read the
#   probabilities, and calibrated on a handful of audited frauds they can be far off, which
#   no PR curve shows. A larger audit sample is what fixes it.
# * The review threshold follows expected loss, so the queue favours the claims where money
#   is at stake; check the queue against your team's capacity, and whether capacity or the
#   cost of a review sets it.
# * Read the reasons before acting on a claim, and watch the abuse types the decisions
#   catch least: they are where rules, features or labels are missing.
# * Backtest every rule change: volume first (what lands in the queue), then what the
#   newly flagged claims are. The audit sample rarely sees enough of them to judge a small
#   change; review a sample of the newly flagged claims before deploying it.

# %%
workdir.cleanup()
