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
# # 08 · A day in the risk team, through the API
#
# You lead the **risk team** of a cashback program, or work in it. Every claim the cashback
# engine sends is scored; the ones that look wrong, and a small random sample of the rest,
# wait for a person in the **review queue**. Your team's day:
#
# 1. the weekend's claims arrive and are scored;
# 2. the queue, ordered by what is at stake;
# 3. the top case opened: why it was flagged, the claim against the customer's own habits,
#    the accounts linked to it;
# 4. taking a case, so that nobody else works on it at the same time;
# 5. deciding: approve, reject, pay part of it, hold the payout;
# 6. a ring of linked accounts decided in one go;
# 7. what the cashback engine is told to pay, hold or take back;
# 8. the day in numbers;
# 9. the decisions against the truth, which a simulated world knows.
#
# Everything goes through the API with a `risk` key, as the console or your own tools
# would. The program is **simulated**, and so are the **analysts**: nobody here can call a
# merchant or look at a receipt, so the notebook's analysts decide by a simple rule that
# peeks at the simulator's truth and is wrong on purpose now and then (section 7 says
# exactly how). Section 11 compares their decisions with the truth.
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
import zlib
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from cashback.settings import FraudSettings, Settings, SimulationSettings
from cashback.tables import read_table
from features.store import apply, materialize_tables
from models.registry import promote
from pipelines import build_features, simulate, train_fraud

CUSTOMERS = int(os.environ.get("CASHBACK_NOTEBOOK_CUSTOMERS", "5000"))
DAYS = int(os.environ.get("CASHBACK_NOTEBOOK_DAYS", "365"))
# The HMAC key for ip_hash: a DEMO value unless CASHBACK_IP_PEPPER is set.
PEPPER = os.environ.get("CASHBACK_IP_PEPPER", "notebook-demo-pepper")
PROJECT = Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent
RULES = PROJECT / "config" / "fraud_rules.yaml"
CASHBACK = Path(sys.executable).parent / "cashback"  # the virtualenv's command
SEED = 7
AUDIT_SHARE = 0.05  # the share of allowed claims reviewed anyway

workdir = tempfile.TemporaryDirectory(prefix="cashback-notebook-")
world = Path(workdir.name) / "world"
# explicit, not read from CASHBACK_* variables; a smaller fraud model than the default
settings = Settings(
    data_dir=world,
    ip_pepper=PEPPER,
    simulation=SimulationSettings(customers=CUSTOMERS, days=DAYS),
    fraud=FraudSettings(maturity_days=30, max_rounds=80, anomaly_trees=20, rules_file=RULES),
)
pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_cols(12)
pl.Config.set_fmt_str_lengths(70)
pl.Config.set_tbl_width_chars(220)
pl.Config.set_float_precision(2)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
REASON_COLORS = {"flagged": "firebrick", "audit": "steelblue"}
DECISION_COLORS = {
    "approve": "seagreen",
    "reject": "firebrick",
    "partial": "darkorange",
    "hold": "grey",
    "clawback": "purple",
}


def show(document: dict | list) -> None:
    """An answer of the API, as indented JSON."""
    print(json.dumps(document, indent=2, default=str))


def ok(response: httpx.Response) -> dict:
    """The JSON of a successful answer; anything else stops the notebook with the answer."""
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


# %% [markdown]
# ## 1. A world, and a weekend to review
#
# The simulator draws a year of a cashback program with its fraud: rings of accounts
# sharing a device, brand-new accounts claiming big, receipts used twice, claims followed
# by a return, bursts of claims. It writes down the truth apart (`truth/`), which nobody in
# the risk team would have: the notebook uses it to pick the day, to stand in for the
# analysts' investigations (section 7) and to check their decisions (section 11).
#
# The team's day is a **Monday**: the queue holds the weekend's claims. The notebook picks
# the weekend on which one of the simulated rings was busiest, so that the queue has a ring
# to find.

# %%
started = time.perf_counter()
config = simulate.world_config(settings)
simulate.run(config, world, settings)
claims = pl.read_parquet(world / "claims.parquet")
truth = pl.read_parquet(world / "truth" / "claims.parquet").select(
    "claim_id", "is_fraud", "abuse_type"
)
print(
    f"{CUSTOMERS:,} customers over {DAYS} days from {config.start}: {claims.height:,} claims, "
    f"simulated in {time.perf_counter() - started:.1f} s"
)

# Weekends (Saturday 00:00 to Monday 00:00 UTC) at least 60 days in, so that the fraud
# model has labelled history to learn from; the one whose busiest ring device saw the most
# accounts claim, then the most ring claims.
saturday = pl.col("ts").dt.truncate("1w") + pl.duration(days=5)
first_saturday = config.start_dt + timedelta(days=60)
weekend_claims = claims.with_columns(saturday.alias("saturday")).filter(
    pl.col("ts") >= pl.col("saturday"), pl.col("saturday") >= first_saturday
)
busiest = (
    weekend_claims.join(truth, on="claim_id")
    .filter(pl.col("abuse_type") == "multi_account")
    .group_by("saturday", "device_id")
    .agg(pl.col("customer_id").n_unique().alias("accounts"), pl.len().alias("claims"))
    .sort("accounts", "claims", "saturday", descending=True)
)
SATURDAY = busiest["saturday"][0] if busiest.height else weekend_claims["saturday"].max()
MONDAY = SATURDAY + timedelta(days=2)
weekend = claims.filter(pl.col("ts") >= SATURDAY, pl.col("ts") < MONDAY).sort("ts")
print(f"the weekend: {SATURDAY:%a %Y-%m-%d} to {MONDAY:%a %Y-%m-%d}, {weekend.height} claims")

# %% [markdown]
# What the API needs, built as of Friday night, the last nightly close before the weekend:
# the customers' features in the online store (the API reads them when a claim arrives;
# here Sunday's claims read Friday's close too), and the fraud model trained on the labels
# known then, made the champion. These are the
# jobs `cashback demo` runs (`features build --close`, `features apply`,
# `features materialize`, `train fraud --cutoff`, `models promote fraud`); the offer side
# (rates, customer models) is not built: this notebook does not make offers.

# %%
started = time.perf_counter()
built = build_features.run(settings, close=SATURDAY)
apply(settings)
written = sum(report.written for report in materialize_tables(settings))
print(f"features as of the close of {built.close:%Y-%m-%d %H:%M} UTC: {written:,} entities online")
trained = train_fraud.run(settings, cutoff=SATURDAY)
promoted = promote(settings, "fraud")
print(
    f"cashback-fraud v{trained.version} trained on the labels known then ({promoted.decision}); "
    f"built in {time.perf_counter() - started:.0f} s"
)

# The training job switches matplotlib to a file-only backend when its modules load (it has
# no display); this gives the notebook its inline plots back.
# %matplotlib inline

# %% [markdown]
# ## 2. Start the server and get keys
#
# `cashback serve` in a subprocess, as in `07_api.py`, with the audit share set: 5 % of the
# claims the model allows open a review case anyway (marked `audit`). That random sample is
# what tells the team how much fraud the model lets through, without the bias of looking
# only where it points.
#
# Keys come from `cashback keys create`. The cashback engine gets an `engine` key (it sends
# claims and reads the payout feed); each analyst gets a `risk` key with their name: the
# queue shows that name on the cases they hold. Ana and Ben work today.

# %%
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    PORT = sock.getsockname()[1]
BASE = f"http://127.0.0.1:{PORT}"
server_env = {k: v for k, v in os.environ.items() if not k.startswith("CASHBACK_")} | {
    "CASHBACK_DATA_DIR": str(world),
    "CASHBACK_IP_PEPPER": PEPPER,
    "CASHBACK_SERVING__PORT": str(PORT),
    "CASHBACK_SERVING__AUDIT_SHARE": str(AUDIT_SHARE),
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
# what scoring claims needs; without a rates model /readyz says 503 and names it
CLAIM_SIDE = {"fraud_model", "online_store", "claim_log", "database"}
readiness: dict = {}
while time.perf_counter() - started < 180 and server.poll() is None:
    try:
        readiness = httpx.get(f"{BASE}/readyz", timeout=2).json()
        if set(readiness["loaded"]) >= CLAIM_SIDE:
            break
    except httpx.TransportError:
        pass
    time.sleep(0.25)
if not set(readiness.get("loaded", {})) >= CLAIM_SIDE:
    raise RuntimeError(f"the server cannot score claims: {server_log.read_text()[-3000:]}")
print(f"cashback serve on {BASE}: ready to score claims in {time.perf_counter() - started:.1f} s")
show(readiness["loaded"])
print("not loaded (offers only):", list(readiness["missing"]))

KEY = re.compile(r"(cbk_\S+)")
keys = {}
for role, name in [("engine", "checkout"), ("risk", "ana"), ("risk", "ben")]:
    keys[name] = KEY.search(cashback("keys", "create", "--role", role, "--name", name))[1]
    print(f"{role:<6} key {name!r}: {keys[name][:8]}... ({len(keys[name])} characters)")

engine = httpx.Client(base_url=BASE, headers={"X-API-Key": keys["checkout"]}, timeout=30)
analysts = {
    name: httpx.Client(base_url=BASE, headers={"X-API-Key": keys[name]}, timeout=30)
    for name in ("ana", "ben")
}
ana, ben = analysts["ana"], analysts["ben"]

# %% [markdown]
# ## 3. The weekend's claims arrive
#
# Over the weekend the cashback engine sent every claim to `POST /v1/claims/score`, with
# its own claim id, the transaction, the amounts, the payout method, the device and the
# receipt's hash (the world keeps only a hash of each IP, so the claims come without one;
# links by IP do not show here). Each got a risk score and a decision at once: **allow**
# (pay), **review** (hold the payout until a person decides) or **block**. A review or a
# block opens a review case (`flagged`); so does the 5 % audit sample of allowed claims.
# Within a second of a flagged case opening, its reasons in words are added to it.

# %%
started = time.perf_counter()
answers = []
for row in weekend.rows(named=True):
    claim = {
        k: row[k]
        for k in ("claim_id", "customer_id", "txn_id", "payout_method", "device_id")
        if row[k] is not None
    } | {
        "amount": round(row["amount"], 2),
        "cashback_amount": round(row["cashback_amount"], 2),
        "receipt_hash": row["receipt_hash"],
        "ts": row["ts"].isoformat(),
    }
    answers.append(ok(engine.post("/v1/claims/score", json=claim)))
scored = pl.DataFrame(answers).select("claim_id", "risk_score", "decision", "rule_hits")
print(f"{scored.height} claims scored in {time.perf_counter() - started:.1f} s")
print(
    scored.group_by("decision")
    .agg(pl.len().alias("claims"), pl.col("risk_score").median().alias("median_score"))
    .sort("claims", descending=True)
)

# %% [markdown]
# ## 4. Monday morning: the queue
#
# `GET /v1/reviews` lists the open and held cases, **by expected loss** unless told
# otherwise: the probability that the claim is fraud times its cashback, the money at
# stake. A claim that is almost surely fraud but worth 30 cents comes after a doubtful one
# worth 20 euros. Other orders: `sort=score` (riskiest first) and `sort=age` (oldest
# first). The queue comes a page at a time; each page's `next_cursor` gives the next, and a
# case opened meanwhile never makes one repeat or vanish.

# %%
# flagged cases get their reasons within a second of opening: wait until they have them
deadline = time.perf_counter() + 30
while True:
    page = ok(ana.get("/v1/reviews", params={"reason": "flagged", "limit": 200}))
    if all(item["reasons"] is not None for item in page["items"]):
        break
    if time.perf_counter() > deadline:
        print("some flagged cases have no reasons yet")
        break
    time.sleep(0.5)

queue_items, cursor, pages = [], None, 0
while True:
    params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
    page = ok(ana.get("/v1/reviews", params=params))
    queue_items += page["items"]
    pages += 1
    cursor = page["next_cursor"]
    if cursor is None:
        break
queue = pl.DataFrame(queue_items).with_columns(
    pl.col("rule_hits").list.join(", "),
    pl.col("reasons").list.first().alias("first_reason"),
)
print(f"{queue.height} cases in {pages} pages of 10:", dict(queue["reason"].value_counts().rows()))
print(
    queue.head(10).select(
        "case_id", "reason", "risk_score", "cashback_amount", "expected_loss", "decision",
        "rule_hits", "abuse_type", "first_reason",
    )
)  # fmt: skip

# %% [markdown]
# Left: each case by its cashback and risk score. The grey lines join the points of equal
# expected loss: the queue is read from the top right corner down. The audit cases sit at
# the bottom: the model saw nothing wrong in them, and they are reviewed to measure what it
# misses.
# Right: how much of the morning's expected loss the first cases hold.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=[1.4, 1])
cashback_grid = np.geomspace(0.05, max(100.0, queue["cashback_amount"].max() * 1.5), 100)
for loss in (0.1, 1, 10):
    left.plot(cashback_grid, np.minimum(100, 100 * loss / cashback_grid), color="grey", lw=0.8)
    left.annotate(f"{loss:g}", (loss, 100), xytext=(2, 3), textcoords="offset points",
                  fontsize=8, color="grey")  # fmt: skip
left.plot([], [], color="grey", lw=0.8, label="equal expected loss")
for reason, color in REASON_COLORS.items():
    part = queue.filter(pl.col("reason") == reason)
    left.scatter(
        part["cashback_amount"].clip(0.05), part["risk_score"], s=40, alpha=0.8, color=color,
        label=f"{reason} ({part.height})", edgecolor="white",
    )  # fmt: skip
for rank, row in enumerate(queue.head(5).rows(named=True), start=1):
    left.annotate(
        f"#{rank}", (max(row["cashback_amount"], 0.05), row["risk_score"]),
        xytext=(5, -10), textcoords="offset points", fontsize=8,
    )  # fmt: skip
left.set_xscale("log")
left.set_ylim(-3, 103)
left.set_xlabel("cashback claimed (log)")
left.set_ylabel("risk score (fraud probability, %)")
left.set_title("the queue: what is at stake, and how likely it is fraud")
left.legend(loc="center right")
share = np.cumsum(queue["expected_loss"]) / max(queue["expected_loss"].sum(), 1e-9)
right.step(np.arange(1, queue.height + 1), share, where="post", color="firebrick")
right.set_xlabel("cases, in queue order")
right.set_ylabel("share of the expected loss")
right.set_ylim(0, 1.02)
right.set_title("the first cases hold most of what is at stake")
fig.tight_layout()
plt.show()

# %% [markdown]
# The filters a team lead splits the work with: the audit sample apart (it must be
# reviewed whatever it looks like), the riskiest cases, one kind of abuse, the cases opened
# in the last hour.

# %%
abuse = queue["abuse_type"].drop_nulls().mode().sort()
filters = {
    "reason=audit": {"reason": "audit"},
    "reason=flagged": {"reason": "flagged"},
    "min_score=90": {"min_score": 90},
    **({f"abuse_type={abuse[0]}": {"abuse_type": abuse[0]}} if abuse.len() else {}),
    "max_age_hours=1": {"max_age_hours": 1},
    "status=decided": {"status": "decided"},
}
for label, params in filters.items():
    items = ok(ana.get("/v1/reviews", params=params | {"limit": 200}))["items"]
    print(f"{label:<28} {len(items):>3} cases")
by_score = ok(ana.get("/v1/reviews", params={"sort": "score", "limit": 3}))["items"]
print("first three by score:        ", [item["case_id"] for item in by_score])
print("first three by expected loss:", queue["case_id"].head(3).to_list())

# %% [markdown]
# ## 5. Opening the top case
#
# `GET /v1/reviews/{id}` gives the case in full: the claim as stored, the scoring decision
# and the rules it hit, the **reasons** in words, the claim's figures beside the
# **customer's own norm**, the customer's **history** (their claims the API has seen, with
# what was decided on them, and their purchases and returns), and the **linked accounts**:
# other customers whose claims share this claim's device, IP or receipt.

# %%
top_id = queue["case_id"][0]
top = ok(ana.get(f"/v1/reviews/{top_id}"))
case, claim = top["case"], top["claim"]
print(
    f"case {top_id}: {case['reason']}, {case['status']}; claim {claim['claim_id']} of "
    f"{claim['customer_id']}, {claim['amount']:.2f} spent, {claim['cashback_amount']:.2f} "
    f"cashback to {claim['payout_method']}, at {claim['ts'][:16]}"
)
scoring = top["scoring"]
print(
    f"scored {scoring['risk_score']:.1f} -> {scoring['decision']} by model "
    f"v{scoring['model_version']}, rules hit: {scoring['rule_hits']}, "
    f"abuse type: {case['abuse_type']}"
)
print("why:")
for reason in case["reasons"] or []:
    print("  -", reason)
history = top["history"]
print(f"the customer's claims the API has seen: {len(history['claims'])}")
for past in history["claims"]:
    print(
        f"  {past['ts'][:16]}  {past['cashback_amount']:6.2f} cashback  {past['decision']:<6}"
        + (f" case {past['case_id']} ({past['case_status']})" if past["case_id"] else " no case")
    )
# the world goes on after this weekend, and the API reads its whole transactions table:
# only the purchases made before the claim are shown
before = [p for p in (history["transactions"] or {}).get("purchases", []) if p["ts"] < claim["ts"]]
print(f"purchases before the claim: {len(before)}, {sum(p['amount'] for p in before):.2f} in all")
print(f"linked accounts: {len(top['linked_accounts'])}")

# %% [markdown]
# ### The claim against the customer's own norm
#
# Each bar compares one figure of the claim with what is usual **for this customer** (a
# ratio of 1: as usual): the amount against their average basket, the cashback against
# their average cashback per claim, the rate claimed against their usual rate, the time
# since their previous claim against their usual gap. A customer without history (a
# brand-new account) has no norm, and the API leaves those comparisons out; then the fact
# that there is no history is the signal, and the reasons say so. The plot shows the top
# cases that have norms.
#
# One comparison is misleading as the API computes it today: `customer_claims_1h` counts
# the claim itself, so a customer who claims once a month shows about 700 times their
# hourly rate on any claim. Read it as "claims in the last hour", not as a ratio.

# %%
with_norms = []
for case_id in queue.filter(pl.col("reason") == "flagged")["case_id"]:
    detail = top if case_id == top_id else ok(ana.get(f"/v1/reviews/{case_id}"))
    if len([n for n in detail["norms"] if n["ratio"] is not None]) >= 2:
        with_norms.append(detail)
    if len(with_norms) == 3:
        break
if with_norms:
    fig, axes = plt.subplots(1, len(with_norms), figsize=(4.6 * len(with_norms), 3.8))
    for ax, detail in zip(np.atleast_1d(axes), with_norms, strict=True):
        norms = [n for n in detail["norms"] if n["ratio"] is not None]
        ratios = [n["ratio"] for n in norms]
        ax.barh(
            [n["feature"] for n in norms], ratios,
            color=["firebrick" if r > 1 else "steelblue" for r in ratios],
        )  # fmt: skip
        ax.axvline(1, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("claim / the customer's norm (log)")
        rank = queue["case_id"].to_list().index(detail["case"]["case_id"]) + 1
        ax.set_title(
            f"#{rank}: case {detail['case']['case_id']}, score {detail['case']['risk_score']:.0f}",
            fontsize=10,
        )
        ax.invert_yaxis()
    fig.suptitle("the claim against the customer's own norm (1 = as usual)")
    fig.tight_layout()
    plt.show()
else:
    print("skipped: no flagged case has a customer with history")
for detail in with_norms[:1]:
    print(pl.DataFrame(detail["norms"]).select("feature", "value", "norm", "ratio", "description"))

# %% [markdown]
# ## 6. Taking the case
#
# Before working on a case, an analyst **takes** it (`POST /v1/reviews/{id}/claim`): it is
# locked to them for 15 minutes (`CASHBACK_SERVING__REVIEW_LOCK_MINUTES`); taking it again
# extends the lock. Everyone else sees who holds it and until when, and their attempts to
# take or decide it are refused with 409 and that same information, so two people never
# work the same case, nor pay and block the same claim.

# %%
lock = ok(ana.post(f"/v1/reviews/{top_id}/claim"))
print(f"Ana takes case {top_id}: locked by {lock['locked_by']} until {lock['locked_until'][11:19]}")
seen_by_ben = next(
    item for item in ok(ben.get("/v1/reviews"))["items"] if item["case_id"] == top_id
)
print(f"Ben's queue shows case {top_id} locked by {seen_by_ben['locked_by']}")
for action, response in [
    ("take it", ben.post(f"/v1/reviews/{top_id}/claim")),
    (
        "decide it",
        ben.post(
            f"/v1/reviews/{top_id}/decision",
            json={"decision": "approve", "client_decision_id": f"ben-{top_id}-approve"},
        ),
    ),
]:
    print(f"Ben tries to {action}: {response.status_code} {response.json()['detail']}")

# %% [markdown]
# ## 7. Deciding
#
# `POST /v1/reviews/{id}/decision` stores the decision with the analyst, the time and a
# note (the audit trail), and tells the cashback engine what to do with the money (section
# 9). The decisions, and the label each gives the claim:
#
# | decision | when | label | the engine |
# | --- | --- | --- | --- |
# | `approve` | nothing wrong | legit | pays the cashback |
# | `reject` | fraud, not paid yet | fraud | never pays it |
# | `partial` | real purchase, too much claimed | fraud (over-claim) | pays part, holds the rest |
# | `clawback` | fraud, already paid | fraud | takes it back |
# | `hold` | not sure yet (waiting for a receipt) | none yet | holds it; the case stays open |
#
# Each request carries a `client_decision_id` of the analyst's tool: sending it again (a
# double click, a timeout) returns the stored decision instead of making a second one.
#
# **How the notebook's analysts decide.** A real analyst investigates: calls the customer
# or the merchant, asks for the receipt. The notebook cannot, so the **investigation** is
# simulated: it returns the simulator's truth (fraud or not, and which kind of abuse),
# except that it misses 10 % of frauds and wrongly suspects 2 % of honest claims, drawn at
# random per claim (for those it takes the model's guess of the kind of abuse). Fraud is
# rejected with the kind of abuse found (`abuse_type`: it goes into the fraud label), the
# rest approved. Two kinds of decision are made on what the case shows instead: the
# partial decision below, and the ring in section 8.

# %%
the_truth = {row[0]: row[1:] for row in truth.iter_rows()}  # claim_id: (is_fraud, abuse)
MISS, FALSE_ALARM = 0.10, 0.02
decided: list[dict] = []  # every decision stored, as the API answered


def investigate(item: dict) -> str | None:
    """The simulated investigation of a queue item: the abuse found, None when none."""
    claim_id = item["claim_id"]
    fraud, abuse = the_truth[claim_id]
    draw = np.random.default_rng([SEED, zlib.crc32(claim_id.encode())]).random()
    if draw < (MISS if fraud else FALSE_ALARM):  # the investigation gets it wrong
        return None if fraud else (item["abuse_type"] or "other")
    return abuse if fraud else None


def decide(
    analyst: str,
    case_id: int,
    decision: str,
    note: str,
    amount: float | None = None,
    abuse_type: str | None = None,
) -> dict:
    """Take the case, then decide it; the stored decision."""
    client = analysts[analyst]
    ok(client.post(f"/v1/reviews/{case_id}/claim"))
    body = {"decision": decision, "note": note, "client_decision_id": f"{case_id}-{decision}"}
    body |= {"amount": amount} if amount is not None else {}
    body |= {"abuse_type": abuse_type} if abuse_type is not None else {}
    answer = ok(client.post(f"/v1/reviews/{case_id}/decision", json=body))
    decided.append(answer | {"how": "evidence" if decision == "partial" else "investigation"})
    return answer


def investigate_and_decide(analyst: str, item: dict) -> dict:
    """Investigate a queue item, then reject it (with the abuse found) or approve it."""
    found = investigate(item)
    if found is None:
        return decide(analyst, item["case_id"], "approve", "investigated: nothing wrong found")
    note = f"investigated: {found.replace('_', ' ')}"
    return decide(analyst, item["case_id"], "reject", note, abuse_type=found)


def summary(answer: dict) -> str:
    """A stored decision in one line."""
    payouts = ", ".join(f"{p['action']} {p['amount']:.2f}" for p in answer["payouts"])
    return (
        f"case {answer['case_id']}: {answer['decision']} by {answer['analyst']} -> label "
        f"{answer['label']}, case {answer['status']}; payout feed: {payouts}"
    )


item_of = {item["case_id"]: item for item in queue_items}
answer = investigate_and_decide("ana", item_of[top_id])
print(summary(answer))
show(answer)

# %% [markdown]
# **Partial.** A purchase can be real while the cashback claimed is not: here, the flagged
# case whose customer claims the highest rate against their usual one. Ana approves the
# cashback at the customer's usual rate and withholds the rest.

# %%
overclaims = []
for item in queue.filter(pl.col("reason") == "flagged").rows(named=True):
    detail = ok(ana.get(f"/v1/reviews/{item['case_id']}"))
    usual = next((n for n in detail["norms"] if n["feature"] == "cashback_share"), None)
    if detail["case"]["status"] == "open" and usual and usual["ratio"] and usual["ratio"] > 1.2:
        due = np.floor(item["amount"] * usual["norm"] * 100) / 100
        if 0 < due < item["cashback_amount"]:
            overclaims.append((usual["ratio"], item["case_id"], float(due), usual))
if overclaims:
    ratio, partial_id, due, usual = max(overclaims)
    answer = decide(
        "ana",
        partial_id,
        "partial",
        f"claims {usual['value']:.1%} of the amount; the customer's usual rate is "
        f"{usual['norm']:.1%}: paid at that rate",
        amount=due,
        abuse_type="other",
    )
    print(summary(answer))
else:
    print("skipped: no open case claims more than its customer's usual rate")

# %% [markdown]
# **Hold.** Ben takes the audit case with the most cashback and wants the receipt from the
# merchant before deciding: he holds the payout. The case stays in the queue, marked
# `held`, for a final decision later in the day (by him or anyone). **Approve.** Ana takes
# the next audit case, and the investigation finds nothing wrong.

# %%
audits = queue.filter(pl.col("reason") == "audit").sort("cashback_amount", descending=True)
undecided = queue.filter(~pl.col("case_id").is_in([d["case_id"] for d in decided]))
held_id = (audits if audits.height else undecided)["case_id"][0]  # no audit: a rare draw
print(summary(decide("ben", held_id, "hold", "asked the merchant for the receipt")))
retry = ben.post(
    f"/v1/reviews/{held_id}/decision",
    json={
        "decision": "hold",
        "note": "asked the merchant for the receipt",
        "client_decision_id": f"{held_id}-hold",
    },
)
print(f"the same request sent again: {retry.status_code}, decision {retry.json()['id']} again")
# the queue's held cases (the first page by expected loss may not reach a small one)
held_queue = ok(ana.get("/v1/reviews", params={"status": "held"}))["items"]
held = next(i for i in held_queue if i["case_id"] == held_id)
print(f"in the queue: case {held_id} is {held['status']}")
cleared = next((c for c in audits["case_id"][1:] if investigate(item_of[c]) is None), None)
if cleared is not None:
    print(summary(investigate_and_decide("ana", item_of[cleared])))

# %% [markdown]
# ## 8. A ring, in one decision
#
# Some flagged claims come from accounts that share a device with other accounts: the
# rule `shared_device`, and the case's linked accounts. Ana opens the one linked to the
# most accounts through its device, and rejects every open case of those accounts from
# that device at once with `POST /v1/reviews/bulk-decision`: one request, one transaction;
# if any case were decided already or held by someone else, nothing would be stored and
# she would be told which. Whether they really were a ring, section 11 says.

# %%
candidates = []
for item in ok(ana.get("/v1/reviews", params={"reason": "flagged", "limit": 200}))["items"]:
    if "shared_device" in item["rule_hits"]:
        detail = ok(ana.get(f"/v1/reviews/{item['case_id']}"))
        by_device = [a for a in detail["linked_accounts"] if "device_id" in a["linked_by"]]
        if by_device:
            candidates.append((len(by_device), item["expected_loss"], item["case_id"], detail))
if candidates:
    *_, ring_case, ring = max(candidates, key=lambda c: c[:3])
    device = ring["claim"]["device_id"]
    members = [ring["claim"]["customer_id"]] + [
        a["customer_id"] for a in ring["linked_accounts"] if "device_id" in a["linked_by"]
    ]
    ring_claims = [c for c in ring["history"]["claims"] if c["device_id"] == device] + [
        c
        for a in ring["linked_accounts"]
        if "device_id" in a["linked_by"]
        for c in a["claims"]
        if c["device_id"] == device
    ]
    ring_cases = sorted({c["case_id"] for c in ring_claims if c["case_status"] in {"open", "held"}})
    print(
        f"case {ring_case}: device {device} used by {len(members)} accounts; "
        f"{len(ring_claims)} of their claims came from it, {len(ring_cases)} with an open case"
    )
    for account in ring["linked_accounts"]:
        print(
            f"  {account['customer_id']} linked by {account['linked_by']}: "
            f"{len(account['claims'])} claims, cases {[c['case_id'] for c in account['claims']]}"
        )
    bulk = ok(
        ana.post(
            "/v1/reviews/bulk-decision",
            json={
                "case_ids": ring_cases,
                "decision": "reject",
                "abuse_type": "multi_account",
                "note": f"ring: {len(members)} accounts claiming from device {device}",
                "client_decision_id": f"ring-{device}",
            },
        )
    )
    decided += [d | {"how": "ring"} for d in bulk["decisions"]]
    print(f"one request, {len(bulk['decisions'])} decisions:")
    for answer in bulk["decisions"]:
        print("  " + summary(answer))
else:
    ring_claims, members, device = [], [], None
    print("skipped: no flagged case shares its device with other accounts")

# %% [markdown]
# The ring as the case shows it: the device in the middle, the accounts around it, each
# claim from the device a dot, coloured by the decision the claim got at scoring.

# %%
if members:
    fig, ax = plt.subplots(figsize=(6.5, 6))
    angles = np.linspace(0, 2 * np.pi, len(members), endpoint=False)
    ax.scatter([0], [0], s=900, color="black", marker="s")
    ax.annotate(device, (0, 0), xytext=(0, -28), textcoords="offset points", ha="center")
    score_colors = {"allow": "seagreen", "review": "orange", "block": "firebrick"}
    for angle, member in zip(angles, members, strict=True):
        x, y = np.cos(angle), np.sin(angle)
        ax.plot([0, x], [0, y], color="grey", lw=1, zorder=0)
        ax.scatter([x], [y], s=700, color="lightsteelblue", edgecolor="black")
        ax.annotate(member, (x, y), xytext=(0, 22), textcoords="offset points", ha="center")
        mine = [c for c in ring_claims if c["customer_id"] == member]
        for k, c in enumerate(mine):
            offset = 0.12 * (k - (len(mine) - 1) / 2)
            ax.scatter(
                [x * 0.72 - y * offset], [y * 0.72 + x * offset], s=40,
                color=score_colors[c["decision"]], edgecolor="black",
            )  # fmt: skip
    for decision, color in score_colors.items():
        ax.scatter([], [], s=40, color=color, edgecolor="black", label=f"claim scored {decision}")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{len(members)} accounts, one device, {len(ring_claims)} claims")
    fig.tight_layout()
    plt.show()
else:
    print("skipped: no ring in the queue")

# %% [markdown]
# ### The rest of the queue
#
# Ana and Ben work through the rest, in queue order, taking turns: each takes a case, the
# simulated investigation runs, and they reject or approve. The held case comes back too:
# the merchant has answered.

# %%
turn = 0
while True:
    items = ok(ana.get("/v1/reviews", params={"limit": 200}))["items"]
    if not items:
        break
    investigate_and_decide(("ana", "ben")[turn % 2], items[0])
    turn += 1
made = pl.DataFrame(decided).select(
    "case_id", "claim_id", "decision", "label", "abuse_type", "analyst", "how", "status"
)
print(f"{made.height} decisions stored; the queue is empty")
print(made.group_by("decision", "analyst").len().sort("decision", "analyst"))

# %% [markdown]
# ## 9. What the cashback engine sees
#
# The engine never reads the queue. It polls `GET /v1/payouts/decisions?after=N` with its
# `engine` key and gets, in order, what to do with the money of each reviewed claim:
# **release** (pay the amount), **hold** (do not pay it: for good after a reject, until
# the final decision after a hold) or **clawback** (take it back). The entries are numbered
# 1, 2, 3, ... without gaps: the engine keeps the last number it handled and asks for what
# came after, so it never misses or repeats one.

# %%
entries, after = [], 0
while True:
    feed = ok(engine.get("/v1/payouts/decisions", params={"after": after, "limit": 20}))
    entries += feed["entries"]
    after = int(feed["next_cursor"])
    if not feed["entries"]:
        break
print(f"{len(entries)} entries; next poll asks after={after} and gets nothing new")
print("the feed with a risk key:", ana.get("/v1/payouts/decisions").status_code)
payout = pl.DataFrame(entries).join(
    pl.DataFrame(decided).select("claim_id", "decision").unique("claim_id", keep="last"),
    on="claim_id",
)
print(payout.select("sequence", "claim_id", "action", "amount", "decision").head(8))
print(
    payout.group_by("action")
    .agg(pl.len().alias("entries"), pl.col("amount").sum().alias("amount"))
    .sort("action")
)

# %% [markdown]
# The cashback of the reviewed claims by what the engine was told, per final decision. A
# held claim has two entries: the hold, then the release or the hold of its final decision.

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
actions = [a for a in ("release", "hold", "clawback") if a in set(payout["action"])]
action_colors = {"release": "seagreen", "hold": "firebrick", "clawback": "purple"}
by_decision = payout.group_by("decision", "action").agg(pl.col("amount").sum())
kinds = [d for d in DECISION_COLORS if d in set(by_decision["decision"])]
bottom = np.zeros(len(kinds))
for action in actions:
    amounts = [
        by_decision.filter(pl.col("decision") == d, pl.col("action") == action)["amount"].sum()
        for d in kinds
    ]
    ax.bar(kinds, amounts, bottom=bottom, color=action_colors[action], label=action)
    bottom += amounts
ax.set_xlabel("final decision on the claim")
ax.set_ylabel("cashback in the feed")
ax.set_title("what the payout feed told the engine, by decision")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 10. The day in numbers
#
# `GET /v1/reviews/stats?days=N` gives the team lead the workflow per day (UTC): cases
# opened (flagged, audit), final decisions and holds, the share of decisions that found
# fraud, the fraud rate of the audit sample, the cashback saved (rejects and clawbacks in
# full, the withheld part of partials) and the median time from a case opening to its final
# decision. In this notebook the whole day passes in a minute, so the times are short.
# The notebook counts the same things from its own decisions to check them.

# %%
# today (UTC); a run across midnight would split its cases over two days
[today] = ok(ana.get("/v1/reviews/stats", params={"days": 1}))["days"]
finals = pl.DataFrame(decided).filter(pl.col("label").is_not_null())
reason_of = dict(queue.select("case_id", "reason").iter_rows())
cashback_of = dict(queue.select("case_id", "cashback_amount").iter_rows())
audit_finals = finals.filter(pl.col("case_id").replace_strict(reason_of) == "audit")
saved = sum(
    cashback_of[d["case_id"]] - (d["amount"] or 0) if d["decision"] == "partial" else 0
    for d in finals.rows(named=True)
) + sum(cashback_of[c] for c in finals.filter(pl.col("decision") == "reject")["case_id"])
ours = {
    "opened_flagged": queue.filter(pl.col("reason") == "flagged").height,
    "opened_audit": queue.filter(pl.col("reason") == "audit").height,
    "decided": finals.height,
    "held": made.filter(pl.col("decision") == "hold").height,
    "fraud_share": (finals["label"] == "fraud").mean(),
    "audit_decided": audit_finals.height,
    "audit_fraud_rate": (audit_finals["label"] == "fraud").mean() if audit_finals.height else None,
    "cashback_saved": saved,
}
check = pl.DataFrame(
    {
        "statistic": list(ours),
        "api": [float(today[k]) if today[k] is not None else None for k in ours],
        "notebook": [float(v) if v is not None else None for v in ours.values()],
    }
).with_columns(agree=((pl.col("api") - pl.col("notebook")).abs() < 1e-4).fill_null(value=True))
print(f"{today['day']}: median time to a final decision {today['median_hours_to_decision']:.4f} h")
print(check)

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
left.bar(["opened"], [today["opened_flagged"]], color="salmon", label="opened: flagged")
left.bar(["opened"], [today["opened_audit"]], bottom=[today["opened_flagged"]],
         color="steelblue", label="opened: audit")  # fmt: skip
fraud_n = round(today["fraud_share"] * today["decided"]) if today["decided"] else 0
left.bar(["decided"], [fraud_n], color="firebrick", label="decided: fraud")
left.bar(["decided"], [today["decided"] - fraud_n], bottom=[fraud_n], color="seagreen",
         label="decided: legit")  # fmt: skip
left.bar(["held"], [today["held"]], color="grey", label="held (then decided)")
left.set_ylabel("cases")
left.set_ylim(0, 1.5 * max(today["opened_flagged"] + today["opened_audit"], today["decided"], 1))
left.set_title(f"{today['day']}: cases opened, decided, held")
left.legend(ncols=2, fontsize=8)
money = {
    "cashback in\nthe cases": queue["cashback_amount"].sum(),
    "saved": today["cashback_saved"],
    "released": payout.filter(pl.col("action") == "release")["amount"].sum(),
}
right.bar(list(money), list(money.values()), color=["grey", "firebrick", "seagreen"])
right.set_ylabel("cashback")
right.set_title("the money: at stake, saved, paid")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 11. Against the truth
#
# The simulated world knows which claims were fraud. First the analysts' final decisions
# against it: a small confusion table, with how each was decided (the simulated
# investigation, the partial decision on the case's evidence, the ring's bulk decision).
# Then what the review never saw: frauds the model allowed that the audit did not draw.
# Remember that the analysts are simulated; the investigation's mistakes are the ones
# drawn in section 7, not a measurement of anyone.

# %%
said = (
    pl.when(pl.col("label") == "fraud").then(pl.lit("said fraud")).otherwise(pl.lit("said legit"))
)
real = pl.when(pl.col("is_fraud")).then(pl.lit("truly fraud")).otherwise(pl.lit("truly honest"))
judged = (
    finals.select("case_id", "claim_id", "decision", "label", "analyst", "how")
    .join(truth.rename({"abuse_type": "true_abuse"}), on="claim_id")
    .with_columns(
        said.alias("analysts"),
        real.alias("truth"),
        pl.col("case_id").replace_strict(reason_of).alias("reason"),
    )
)
confusion = (
    judged.group_by("analysts", "truth").len().pivot("truth", index="analysts", values="len")
).fill_null(0)
for column in ("truly fraud", "truly honest"):
    if column not in confusion.columns:
        confusion = confusion.with_columns(pl.lit(0, pl.UInt32).alias(column))
confusion = confusion.select("analysts", "truly fraud", "truly honest").sort("analysts")
print(confusion)
print(
    judged.group_by("how", "reason")
    .agg(
        pl.len().alias("decisions"),
        (pl.col("label") == "fraud").sum().alias("said_fraud"),
        pl.col("is_fraud").sum().alias("truly_fraud"),
        ((pl.col("label") == "fraud") != pl.col("is_fraud")).sum().alias("wrong"),
    )
    .sort("how", "reason")
)
print("the ones they got wrong:")
print(
    judged.filter((pl.col("label") == "fraud") != pl.col("is_fraud")).select(
        "case_id", "reason", "decision", "how", "analyst", "true_abuse", "is_fraud"
    )
)

# %%
weekend_truth = (
    scored.join(truth, on="claim_id")
    .join(weekend.select("claim_id", "cashback_amount"), on="claim_id")
    .join(
        queue.select("claim_id", pl.col("reason").alias("reviewed as")), on="claim_id", how="left"
    )
    .with_columns(pl.col("reviewed as").fill_null("not reviewed"))
)
where = (
    weekend_truth.group_by("reviewed as")
    .agg(
        pl.len().alias("claims"),
        pl.col("is_fraud").sum().alias("frauds"),
        pl.col("cashback_amount").filter(pl.col("is_fraud")).sum().alias("fraud_cashback"),
    )
    .with_columns((pl.col("frauds") / pl.col("claims")).alias("fraud_rate"))
    .sort("reviewed as")
)
print(where)
allowed = weekend_truth.filter(pl.col("decision") == "allow")
print(
    f"fraud rate among the claims the model allowed: {allowed['is_fraud'].mean():.2%} "
    f"(truth); the audit sample's estimate today: "
    + ("none" if today["audit_fraud_rate"] is None else f"{today['audit_fraud_rate']:.2%}")
    + f" from {today['audit_decided']} audits (the analysts' labels, mistakes included)"
)

# %% [markdown]
# Left: the confusion table. Right: where the weekend's frauds ended, in cashback: stopped
# by a review decision (rejected, or partly withheld), paid after review by mistake, or
# never reviewed because the model allowed them and the audit did not draw them. A handful
# of audits a day cannot measure a fraud rate of one or two percent: it is their sum over
# weeks that tells the team lead how much the model lets through.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=[1, 1.3])
matrix = confusion.select("truly fraud", "truly honest").to_numpy()
left.imshow(matrix, cmap="Reds")
for (i, j), n in np.ndenumerate(matrix):
    left.text(j, i, str(n), ha="center", va="center", fontsize=14)
left.set_xticks([0, 1], ["truly fraud", "truly honest"])
left.set_yticks(range(len(confusion)), confusion["analysts"].to_list())
left.grid(visible=False)
left.set_title(f"{judged.height} final decisions against the truth")
frauds = weekend_truth.filter(pl.col("is_fraud")).join(
    judged.select("claim_id", pl.col("label").alias("final_label")), on="claim_id", how="left"
)
outcome = frauds.with_columns(
    pl.when(pl.col("final_label") == "fraud")
    .then(pl.lit("stopped by review"))
    .when(pl.col("final_label") == "legit")
    .then(pl.lit("paid after review"))
    .otherwise(pl.lit("never reviewed"))
    .alias("outcome")
)
order = ["stopped by review", "paid after review", "never reviewed"]
sums = [outcome.filter(pl.col("outcome") == o)["cashback_amount"].sum() for o in order]
counts = [outcome.filter(pl.col("outcome") == o).height for o in order]
bars = right.barh(order, sums, color=["firebrick", "orange", "grey"])
right.bar_label(bars, [f"{n} claim{'s' * (n != 1)}" for n in counts], padding=3, fontsize=8)
right.invert_yaxis()
right.set_xlabel("cashback of the weekend's fraudulent claims")
right.set_title("where the weekend's frauds ended")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Stop the server
#
# The server stops here (SIGINT, uvicorn's graceful stop). The temporary directory, with
# the world and the app database that holds the day's decisions, stays until the kernel
# exits.

# %%
for client in (engine, *analysts.values()):
    client.close()
stop_server()
print(f"server stopped (exit code {server.returncode})")
atexit.register(workdir.cleanup)

# %% [markdown]
# ## Decisions become labels
#
# Every final decision above carries a label: approve means legit; reject, partial and
# clawback mean fraud, with the kind of abuse the analyst confirmed (a hold gives none
# yet). Those labels are what the fraud model needs most and gets least of: a chargeback
# comes for only part of the frauds, months late, and the audit sample is small. The next
# step, `cashback labels export`, copies the day's labels into the `claim_labels` table
# that `cashback train fraud` learns from: source `review` for flagged cases, `audit` for
# the audit sample, which stays the unbiased sample the model's metrics are read on. It is
# safe to run every night: a second run adds nothing.

# %%
print(cashback("labels", "export"))
print(cashback("labels", "export"))  # again: nothing new

# %%
table = read_table(world, "claim_labels").collect()
exported = table.filter(pl.col("source").is_in(["review", "audit"])).join(
    judged.select("claim_id"), on="claim_id", how="semi"
)
print(
    exported.group_by("source", "label", "abuse_type")
    .len()
    .sort("source", "label", "abuse_type", nulls_last=True)
)
