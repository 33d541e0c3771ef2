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
# # 07 · Calling the API as a cashback engine would
#
# You are the engineer who connects the **cashback engine** (the checkout and app backend
# that shows offers and pays cashback) to cashback-ml. The engine needs two answers, fast,
# every time:
#
# 1. **which offer and rate** to show a customer now (`POST /v1/offers/recommend`, or
#    `:batch` for up to 1,000 customers, e.g. for an e-mail send);
# 2. **whether to pay a claim** (`POST /v1/claims/score`): allow, review or block.
#
# Before you ship the integration, you want to see, against a real server:
#
# * what an answer holds and what to keep of it (`decision_id`, `valid_until`,
#   `propensity`, `source`, `fallback`);
# * what happens when you ask twice: an offer is stable for its window, a claim retried with
#   the same `claim_id` gets the stored answer;
# * how rates spread by source (holdout, policy, exploration, experiment, cold start);
# * what a claim's risk score looks like, and what trips the rules;
# * how to audit a decision later (`GET /v1/decisions/{id}`, `cashback decisions replay`);
# * how long a call takes as the engine sees it, and what `/metrics` counts.
#
# The notebook builds a small **simulated** world with `cashback demo`'s job (features,
# online store, fraud model, customer models, rate policy), starts `cashback serve` on it
# in a subprocess, and talks HTTP to it, as the engine would.
#
# Size: `CASHBACK_NOTEBOOK_CUSTOMERS` (default 5,000) customers over
# `CASHBACK_NOTEBOOK_DAYS` (default 365) days, in a temporary directory.

# %%
import os

# The models are LightGBM. Idle OpenMP threads spin by default, and on a busy machine a
# spinning thread waits for one that is not running: set before LightGBM loads. The server
# inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# %%
import atexit
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from cashback.settings import FraudSettings, RateSettings, Settings, SimulationSettings
from models.experiments.assignment import Reason, assign
from models.experiments.store import ExperimentStore
from pipelines import demo

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
# 365 days: the churn and value models need a year (shorter worlds skip them)
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash: a DEMO value unless CASHBACK_IP_PEPPER is set.
PEPPER = os.environ.get("CASHBACK_IP_PEPPER", "notebook-demo-pepper")
PROJECT = Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent
RULES = PROJECT / "config" / "fraud_rules.yaml"
CASHBACK = Path(sys.executable).parent / "cashback"  # the virtualenv's command
SEED = 7

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
world = Path(workdir.name) / "world"
# explicit, not read from CASHBACK_* variables; smaller models than the defaults, so that
# the world is built in a minute or two
settings = Settings(
    data_dir=world,
    ip_pepper=PEPPER,
    simulation=SimulationSettings(customers=CUSTOMERS, days=DAYS),
    fraud=FraudSettings(maturity_days=30, max_rounds=80, anomaly_trees=20, rules_file=RULES),
    rates=RateSettings(
        n_estimators=100, effect_n_estimators=200, resamples=1, bootstrap_replicates=20
    ),
)
rng = np.random.default_rng(SEED)
pl.Config.set_tbl_rows(20)
pl.Config.set_fmt_str_lengths(80)
pl.Config.set_tbl_width_chars(160)
pl.Config.set_float_precision(3)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
SOURCES = ["holdout", "policy", "exploration", "experiment", "cold_start", "fallback"]
COLORS = dict(zip(SOURCES, plt.get_cmap("tab10").colors, strict=False))


def show(document: dict) -> None:
    """An answer of the API, as indented JSON."""
    print(json.dumps(document, indent=2, default=str))


# %% [markdown]
# ## 1. A world to serve
#
# `pipelines.demo.run` is what `cashback demo` (and `make run`) calls: it simulates the
# world, builds the feature tables, fills the online store, trains the fraud model and makes
# it the champion, trains the customer models (churn, value, segments) and scores every
# customer online, and trains the rate policy with its rate card. The server reads all of
# it from the data directory.

# %%
started = time.perf_counter()
for line in demo.run(settings):
    print(line)
print(f"built in {time.perf_counter() - started:.0f} s")

# The training jobs switch matplotlib to a file-only backend when their modules load (they
# have no display); this gives the notebook its inline plots back.
# %matplotlib inline

# %% [markdown]
# ## 2. Start the server and get keys
#
# `cashback serve` in a subprocess, configured the way an operator would, with `CASHBACK_*`
# variables: the data directory, the pepper (it hashes the raw IPs of claims), a free port,
# the fraud rules, and an audit share (the share of allowed claims that open a review case
# anyway). The server migrates its app database and builds the claim log (the recent claims
# that fresh fraud features are counted from) before it answers; `/readyz` says when it can
# serve.
#
# Keys come from `cashback keys create`. Each is printed **once** and only its hash is
# stored: keep it in your secret store, send it in the `X-API-Key` header. The engine gets
# an `engine` key; the risk team reads decisions with a `risk` key, and the marketing team
# starts experiments with a `marketer` key. This notebook never shows a whole key.

# %%
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    PORT = sock.getsockname()[1]
BASE = f"http://127.0.0.1:{PORT}"
server_env = {k: v for k, v in os.environ.items() if not k.startswith("CASHBACK_")} | {
    "CASHBACK_DATA_DIR": str(world),
    "CASHBACK_IP_PEPPER": PEPPER,
    "CASHBACK_SERVING__PORT": str(PORT),
    "CASHBACK_SERVING__AUDIT_SHARE": "0.01",
    "CASHBACK_SERVING__EXPERIMENTS_REFRESH_SECONDS": "1",
    "CASHBACK_FRAUD__RULES_FILE": str(RULES),
}
server_dir = Path(workdir.name) / "server"
server_dir.mkdir()
server_log = server_dir / "server.log"


def cashback(*args: str) -> str:
    """Run a `cashback` command with the server's settings; what it printed."""
    done = subprocess.run(  # noqa: S603 - the virtualenv's own command
        [str(CASHBACK), *args],
        check=True,
        env=server_env,
        cwd=server_dir,
        capture_output=True,
        text=True,
    )
    return done.stdout


def stop_server() -> None:
    """SIGINT (uvicorn's graceful stop) to the server's process group, SIGKILL if it lingers."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


started = time.perf_counter()
with server_log.open("wb") as sink:
    server = subprocess.Popen(  # noqa: S603 - the virtualenv's own command
        [str(CASHBACK), "serve", "--host", "127.0.0.1", "--port", str(PORT)],
        env=server_env,
        cwd=server_dir,
        stdout=sink,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
atexit.register(stop_server)  # also when a later cell fails
ready = None
while time.perf_counter() - started < 180 and server.poll() is None:
    try:
        ready = httpx.get(f"{BASE}/readyz", timeout=2)
        if ready.status_code == 200:
            break
    except httpx.TransportError:
        pass
    time.sleep(0.25)
if ready is None or ready.status_code != 200:
    raise RuntimeError(f"the server is not ready: {server_log.read_text()[-3000:]}")
print(f"cashback serve on {BASE}: ready in {time.perf_counter() - started:.1f} s")

KEY = re.compile(r"(cbk_\S+)")
keys = {}
for role, name in [("engine", "checkout"), ("risk", "risk-team"), ("marketer", "crm")]:
    printed = cashback("keys", "create", "--role", role, "--name", name)
    keys[role] = KEY.search(printed)[1]
    print(f"{role:<8} key {name!r}: {keys[role][:8]}... ({len(keys[role])} characters)")

engine = httpx.Client(base_url=BASE, headers={"X-API-Key": keys["engine"]}, timeout=30)
risk = httpx.Client(base_url=BASE, headers={"X-API-Key": keys["risk"]}, timeout=30)
marketer = httpx.Client(base_url=BASE, headers={"X-API-Key": keys["marketer"]}, timeout=30)

# %% [markdown]
# ### What is loaded
#
# `GET /readyz` needs no key: your load balancer polls it. 200 means the fraud champion,
# the online store, the claim log and the database are there; 503 lists what is missing
# and why (the API still answers then, with fallbacks). `GET /healthz` only says the process
# is alive.

# %%
show(engine.get("/readyz").json())
print("no key:", httpx.post(f"{BASE}/v1/offers/recommend", json={}).status_code)
print("a risk key asking for an offer:", risk.post("/v1/offers/recommend", json={}).status_code)

# %% [markdown]
# ### An experiment running
#
# The marketing team tests a fixed 3 % rate against the rate card on a fifth of the
# customers, from now for 30 days (`POST /v1/experiments`, then `/start`, with its
# `marketer` key; `cashback experiments create` and `start` do the same). The engine needs
# no change for it: the API assigns the customers and says so in the offer.

# %%
now = datetime.now(UTC)
experiment = {
    "key": "checkout-boost",
    "hypothesis": "A fixed 3% rate lifts spend by more than the extra cashback costs.",
    "layer": "rates",
    "variants": [
        {"name": "control", "weight": 0.5, "policy": "rate_card"},
        {"name": "boost", "weight": 0.5, "policy": "rate:0.03"},
    ],
    "targeting": {"segments": [], "lifecycle": []},
    "unit": "customer",
    "start": now.isoformat(),
    "stop": (now + timedelta(days=30)).isoformat(),
    "primary_metric": "net_incremental_margin",
    "guardrail_metrics": ["fraud_loss", "cashback_paid"],
    "traffic": 0.2,
}
created = marketer.post("/v1/experiments", json=experiment)
began = marketer.post("/v1/experiments/checkout-boost/start")
print(f"experiment created ({created.status_code}), started ({began.status_code}):")
print({k: began.json()[k] for k in ["key", "layer", "status", "start", "stop", "traffic"]})

# %% [markdown]
# ## 3. An offer for one customer
#
# The engine sends the customer and where the offer will be shown: the category being
# browsed, the channel and the time (`ts`, with its time zone; default now). The answer:
#
# | field | what the engine does with it |
# | --- | --- |
# | `rate`, `offer` | what to show and pay: the rate, through which catalog offer |
# | `valid_from`, `valid_until` | the **exposure**: the offer holds for this window (7 days) |
# | `reasons` | why this rate, in words (for support, not for the customer) |
# | `source` | which rule gave it: holdout, experiment, policy, exploration, cold_start, fallback |
# | `propensity` | the probability this rate was given here: log it with the exposure |
# | `policy_version` | the policy (or rate card) that decided |
# | `decision_id` | keep it: it leads back to the inputs and versions (section 6) |
# | `fallback` | true when a model or the store was unavailable: still a valid offer |
#
# The world's customers are real to the server: its online store holds their features as of
# the last simulated day, and the engine asks *now*.

# %%
world_customers = pl.read_parquet(world / "customers.parquet")["customer_id"]
transactions = pl.read_parquet(world / "transactions.parquet")
close = transactions["ts"].max()
recent = (
    transactions.filter(pl.col("ts") > close - timedelta(days=90))
    .group_by("customer_id")
    .agg(pl.col("amount").sum().alias("spend_90d"), pl.len().alias("purchases_90d"))
)
someone = recent.sort("spend_90d", descending=True)["customer_id"][len(recent) // 4]
context = {"category": "electronics", "channel": "app"}
first = engine.post("/v1/offers/recommend", json={"customer_id": someone, "context": context})
offer = first.json()
show(offer)

# %% [markdown]
# ### Asking again within the window
#
# The engine may ask as often as it likes (every page view): until `valid_until` the same
# exposure comes back, with the same `decision_id`, whatever the context. A customer never
# holds two valid offers, so the rate does not change under them between the product page
# and the payment, and every exposure is logged once with its propensity: that log is what
# the next policy learns from. Asking after `valid_until` (here with a `ts` eight days on)
# makes the next exposure.

# %%
again = engine.post(
    "/v1/offers/recommend",
    json={"customer_id": someone, "context": {"category": "groceries", "channel": "online"}},
).json()
later = (datetime.now(UTC) + timedelta(days=8)).isoformat()
next_week = engine.post(
    "/v1/offers/recommend",
    json={"customer_id": someone, "context": context | {"ts": later}},
).json()
for label, answer in [("first", offer), ("again", again), ("8 days on", next_week)]:
    print(
        f"{label:<10} decision {answer['decision_id'][:8]}...  rate {answer['rate']:.0%}  "
        f"{answer['source']:<11} valid {answer['valid_from'][:16]} .. {answer['valid_until'][:16]}"
    )
print("same decision when asked again:", again["decision_id"] == offer["decision_id"])

# %% [markdown]
# ### What the customer models say
#
# `GET /v1/customers/{id}/insights` (engine or marketer) gives the champions' view of a
# customer: segment, lifecycle stage, churn probability, expected value, and the rate the
# policy would give now, **without** making an exposure (nothing is logged; use it for
# display, never to pay).

# %%
show(engine.get(f"/v1/customers/{someone}/insights").json())

# %% [markdown]
# ## 4. Offers for many customers
#
# `POST /v1/offers/recommend:batch` takes up to 1,000 requests (an e-mail send, a nightly
# refresh) and answers in order; a customer repeated gets one offer. Each answer says which
# rule gave it, in this order:
#
# 1. **holdout**: 5 % of customers, always on the default rate card (it measures what
#    personalisation adds);
# 2. **experiment**: the customers the running experiment takes get their variant's rate,
#    with propensity 1 (no exploration inside an experiment);
# 3. **policy**: the personalized rate, except a 5 % share of exposures whose rate is drawn
#    at random among the allowed rates (**exploration**, with its propensity: the policy
#    keeps learning from randomized rates);
# 4. **cold_start** and **fallback**: below, and in section 8.

# %%
shuffled = world_customers.shuffle(seed=SEED)
pool = shuffled.filter(shuffled != someone)  # customers without an offer yet
batch_ids = pool[:400].to_list()
started = time.perf_counter()
answer = engine.post(
    "/v1/offers/recommend:batch",
    json={"requests": [{"customer_id": c, "context": context} for c in batch_ids]},
)
print(f"{len(batch_ids)} offers in one call: {time.perf_counter() - started:.2f} s")
offers = pl.DataFrame(answer.json()["results"]).select(
    "customer_id", "rate", "source", "propensity", "variant", "policy_version", "fallback"
)
offers = offers.join(recent, on="customer_id", how="left").with_columns(
    pl.col("spend_90d", "purchases_90d").fill_null(0)
)
by_source = (
    offers.group_by("source")
    .agg(
        pl.len().alias("offers"),
        pl.col("rate").mean().alias("mean_rate"),
        pl.col("rate").min().alias("min_rate"),
        pl.col("rate").max().alias("max_rate"),
        pl.col("propensity").mean().alias("mean_propensity"),
        pl.col("spend_90d").mean().alias("mean_spend_90d"),
        pl.col("fallback").sum().alias("fallbacks"),
    )
    .sort(pl.col("source").replace_strict(SOURCES, range(len(SOURCES)), default=99))
)
print(by_source)

# %% [markdown]
# Left: how many offers of each rate each source gave. The holdout always gets the default
# 1 %; the experiment gives the rate card (control) or 3 % (boost: where the card already
# gives a segment 3 %, the two arms look alike); the policy spreads its
# rates where it expects the extra margin to pay for them; exploration spreads uniformly
# over the allowed rates. Right: the rate against the customer's spend over the last 90
# simulated days (rates jittered a little so that the points do not sit on each other).

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
rates = sorted(offers["rate"].unique().to_list())
present = [s for s in SOURCES if s in set(offers["source"])]
width = 0.8 / len(present)
for k, source in enumerate(present):
    counts = offers.filter(pl.col("source") == source)["rate"].value_counts()
    n = dict(zip(counts["rate"], counts["count"], strict=True))
    left.bar(
        np.arange(len(rates)) + (k - (len(present) - 1) / 2) * width,
        [n.get(r, 0) for r in rates],
        width,
        label=source,
        color=COLORS[source],
    )
left.set_xticks(np.arange(len(rates)), [f"{r:.0%}" for r in rates])
left.set_xlabel("rate offered")
left.set_ylabel("offers")
left.set_title(f"{offers.height} offers of one batch call, by source")
left.legend()
for source in present:
    part = offers.filter(pl.col("source") == source)
    jitter = rng.uniform(-0.002, 0.002, part.height)
    right.scatter(
        part["spend_90d"] + 1, part["rate"] + jitter, s=12, alpha=0.7, label=source,
        color=COLORS[source],
    )  # fmt: skip
right.set_xscale("log")
right.set_yticks(rates, [f"{r:.0%}" for r in rates])
right.set_xlabel("spend over the last 90 simulated days + 1 (log)")
right.set_ylabel("rate offered")
right.set_title("the rate against the customer's recent spend")
right.legend(loc="upper right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### A customer the store does not know
#
# A customer who signed up after the last feature close has no features yet. The API does
# not fail: it answers with the new customers' row of the rate card, `source: cold_start`
# and `cold_start: true`. The exposure is logged like any other. (The global holdout and
# the experiments are drawn first, from the id alone: a new customer may come back as
# `holdout` or `experiment` instead.)

# %%
# a new id outside the holdout and the experiment (they come first, known customer or not)
running = ExperimentStore.from_settings(settings).running()
newcomer = next(
    c
    for c in (f"C-NEW-{k:04d}" for k in range(100))
    if assign(c, running, settings).reason == Reason.NO_EXPERIMENT
)
stranger = engine.post(
    "/v1/offers/recommend", json={"customer_id": newcomer, "context": context}
).json()
show({k: stranger[k] for k in ["rate", "source", "cold_start", "fallback", "reasons"]})

# %% [markdown]
# ## 5. Scoring claims
#
# When a customer claims cashback, the engine sends the claim: its own `claim_id`, the
# transaction, the amounts, the payout method, the device, the customer's **raw IP** and
# the receipt's hash. The raw IP is hashed on arrival (HMAC with the pepper) and goes no
# further: it is never stored or logged. The answer: a risk score (0-100), the decision
# (`allow`, `review`: hold the payout for a person, `block`), the rules the claim hit, the
# model version and the `decision_id`.
#
# **Idempotency**: the `claim_id` is the key. A retry (a timeout, a redelivered message)
# gets the stored answer, never a second decision; the same `claim_id` with different
# inputs gets 409. So retry freely, and never reuse a claim id.
#
# First a normal claim: a customer's purchase, paid to the wallet, from the device they
# usually claim from.

# %%
claims = pl.read_parquet(world / "claims.parquet")
usual = (
    claims.filter(pl.col("customer_id") == someone)
    .group_by("device_id")
    .len()
    .sort("len", descending=True)
)
device = usual["device_id"][0] if usual.height else "D-notebook"
receipt = f"r-{uuid.uuid4().hex[:12]}"
claim = {
    "claim_id": f"CL-{uuid.uuid4().hex[:12]}",
    "customer_id": someone,
    "txn_id": f"T-{uuid.uuid4().hex[:12]}",
    "amount": 84.50,
    "cashback_amount": round(84.50 * offer["rate"], 2),
    "payout_method": "wallet",
    "device_id": device,
    "ip": "203.0.113.7",
    "receipt_hash": receipt,
    "ts": datetime.now(UTC).isoformat(),
}
scored = engine.post("/v1/claims/score", json=claim).json()
show(scored)

# %% [markdown]
# The same receipt again, on a new claim a few minutes later: the rule `receipt_reused`
# blocks it, whatever the model thinks. Then a retry of that claim (same `claim_id`, same
# body): the same decision comes back. The same `claim_id` with another amount is refused.

# %%
reused = claim | {
    "claim_id": f"CL-{uuid.uuid4().hex[:12]}",
    "txn_id": f"T-{uuid.uuid4().hex[:12]}",
    "ts": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
}
blocked = engine.post("/v1/claims/score", json=reused).json()
retry = engine.post("/v1/claims/score", json=reused).json()
changed = engine.post("/v1/claims/score", json=reused | {"amount": 99.90})
print(
    f"reused receipt: {blocked['decision']} (risk {blocked['risk_score']:.1f}), rules hit "
    f"{blocked['rule_hits']}"
)
print(
    f"retry of {reused['claim_id']}: {retry['decision']}, same decision_id: "
    f"{retry['decision_id'] == blocked['decision_id']}"
)
print(f"same claim_id, another amount: {changed.status_code} {changed.json()['detail']}")

# %% [markdown]
# ### Claims replayed from the world
#
# 200 of the world's claims sent again with fresh claim ids, at their own time, with their
# device and receipt: 170 drawn at random and 30 that the world later knew to be fraud
# (charged back or caught by an audit), so that a few bad ones are in the sample. The world
# keeps only the IP's hash (the contract never stores a raw IP), so they are sent without
# an IP: the IP features are then unknown, as for a claim from an app that does not send
# one. Most claims are clean and score low; the claims that hit a rule or score high go to
# review or are blocked. The model's threshold weighs the probability by what is at stake
# (the expected loss, probability x cashback), so a high score on a small claim may still
# be allowed, and a rule may block a claim the model scores low.

# %%
labels = pl.read_parquet(world / "claim_labels.parquet")
fraud_ids = labels.filter(pl.col("label") == "fraud")["claim_id"]
known_fraud = claims.filter(pl.col("claim_id").is_in(fraud_ids.implode()))
replayed = pl.concat(
    [
        claims.filter(~pl.col("claim_id").is_in(fraud_ids.implode())).sample(170, seed=SEED),
        known_fraud.sample(min(30, known_fraud.height), seed=SEED),
    ]
)


def claim_body(row: dict) -> dict:
    """A world's claim as the engine sends it: a fresh claim id, no IP."""
    return {
        "claim_id": f"CL-{uuid.uuid4().hex[:12]}",
        "customer_id": row["customer_id"],
        "txn_id": row["txn_id"],
        "amount": round(row["amount"], 2),
        "cashback_amount": round(row["cashback_amount"], 2),
        "payout_method": row["payout_method"],
        "device_id": row["device_id"],
        "receipt_hash": row["receipt_hash"],
        "ts": row["ts"].isoformat(),
    }


answers = [
    engine.post("/v1/claims/score", json=claim_body(r)).json() for r in replayed.rows(named=True)
]
scores = pl.DataFrame(
    {
        "risk_score": [a["risk_score"] for a in answers],
        "decision": [a["decision"] for a in answers],
        "rule_hits": [", ".join(a["rule_hits"]) for a in answers],
        "fallback": [a["fallback"] for a in answers],
        "known_fraud": replayed["claim_id"].is_in(fraud_ids.implode()),
    }
)
print(
    scores.group_by("decision").agg(
        pl.len().alias("claims"),
        pl.col("known_fraud").sum(),
        pl.col("risk_score").median().alias("median_risk"),
    )
)
print(scores.filter(pl.col("rule_hits") != "").group_by("rule_hits").len().sort("len"))

# %%
fig, ax = plt.subplots(figsize=(9, 4))
bins = np.linspace(0, 100, 41)
DECISION_COLORS = {"allow": "seagreen", "review": "orange", "block": "firebrick"}
for decision, color in DECISION_COLORS.items():
    part = scores.filter(pl.col("decision") == decision)["risk_score"]
    if part.len():
        ax.hist(part, bins=bins, color=color, alpha=0.75, label=f"{decision} ({part.len()})")
ax.set_yscale("log")
ax.set_xlabel("risk score (fraud probability, %)")
ax.set_ylabel("claims (log)")
ax.set_title(f"{scores.height} replayed claims: risk score by decision")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Auditing a decision
#
# Every answer carries a `decision_id`. `GET /v1/decisions/{id}` (engine or risk key) gives
# what was behind it: the inputs as stored (the IP only as its keyed hash), the features,
# the model or policy version, the answer given and whether it was a fallback. A customer
# disputes a blocked claim, or asks why their rate was 1 %: this is where support starts.
# `cashback decisions replay ID` recomputes it with the model version that made it and
# says whether it matches.

# %%
claim_decision = risk.get(f"/v1/decisions/{blocked['decision_id']}")
record = claim_decision.json()
print(f"claim decision: {claim_decision.status_code}, kind {record['kind']}")
show({k: record[k] for k in ["inputs", "model_version", "answer", "fallback"]})
print("raw IP stored anywhere:", "203.0.113.7" in claim_decision.text)
print({k: record["features"][k] for k in list(record["features"])[:8]}, "...")

# %%
offer_decision = engine.get(f"/v1/decisions/{offer['decision_id']}")
if offer_decision.status_code == 200:
    record = offer_decision.json()
    print(f"offer decision: kind {record['kind']}, policy {record['policy_version']}")
    show({k: record[k] for k in ["inputs", "policy", "answer", "fallback"]})
else:  # offer decisions came after claims to this route
    print(f"offer decision: {offer_decision.status_code} {offer_decision.json()['detail']}")

# %%
# the two replays side by side: each loads its model version from the registry
replays = {
    decision_id: subprocess.Popen(  # noqa: S603 - the virtualenv's own command
        [str(CASHBACK), "decisions", "replay", decision_id],
        env=server_env,
        cwd=server_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for decision_id in [blocked["decision_id"], offer["decision_id"]]
}
for decision_id, replay in replays.items():
    printed, _ = replay.communicate(timeout=300)
    print(f"$ cashback decisions replay {decision_id}   (exit code {replay.returncode})")
    print(printed)

# %% [markdown]
# ## 7. Latency as the engine sees it
#
# Time from the engine's call to its answer, over HTTP on loopback with a kept-alive
# connection: 200 offers for customers without a valid exposure (each one a new decision:
# features read, priced, stored) and 200 new claims (the world's claims again, fresh ids),
# one after the other. The client runs in this notebook's kernel on the same small machine
# as the server (one worker), which other jobs may share: read the figures as an upper
# bound, not a benchmark.

# %%
fresh = pool[400:600].to_list()
offer_ms, claim_ms = [], []
for customer_id in fresh:
    t = time.perf_counter()
    engine.post("/v1/offers/recommend", json={"customer_id": customer_id, "context": context})
    offer_ms.append((time.perf_counter() - t) * 1000)
for row in claims.sample(200, seed=SEED + 1).rows(named=True):
    t = time.perf_counter()
    engine.post("/v1/claims/score", json=claim_body(row))
    claim_ms.append((time.perf_counter() - t) * 1000)
for name, ms in [("offer, new exposure", offer_ms), ("claim, new claim_id", claim_ms)]:
    p50, p99 = np.percentile(ms, [50, 99])
    print(f"{name:<20} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(ms):6.1f} ms")

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for name, ms, color in [("offers", offer_ms, "steelblue"), ("claims", claim_ms, "firebrick")]:
    x = np.sort(ms)
    ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=color, label=name)
    for q, style in [(50, ":"), (99, "--")]:
        ax.axvline(np.percentile(ms, q), color=color, linestyle=style, linewidth=1)
ax.set_xscale("log")
ax.set_xlabel("milliseconds, call to answer (dotted: p50, dashed: p99)")
ax.set_ylabel("share of calls")
ax.set_title("latency as the engine sees it: 200 sequential calls each")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 8. What `/metrics` counts
#
# Prometheus scrapes `/metrics` (no key). For the engine's dashboards: new offer decisions
# by source and offers answered from a valid exposure, claim decisions by type and retries
# answered from the store, and **fallbacks**: a missing model, store or claim log does not
# give a 500; offers get the rate card, claims go to review with the reason "model
# unavailable", both with `fallback: true`, and the fallback is counted here. Alert on it.

# %%
exposition = httpx.get(f"{BASE}/metrics").text
wanted = ("cashback_offer_", "cashback_claim_", "cashback_fallbacks")
for line in exposition.splitlines():
    if line.startswith(wanted) and "_created" not in line:
        print(line)

# %% [markdown]
# ## Stop the server
#
# The last cell stops the server (SIGINT, uvicorn's graceful stop) and removes the
# temporary directory. Run it also when an earlier cell failed.

# %%
for client in (engine, risk, marketer):
    client.close()
stop_server()
print(f"server stopped (exit code {server.returncode})")
workdir.cleanup()
