"""Online Retail (UCI): invoice lines to one transaction per invoice, with returns linked.

The file has one row per invoice line: InvoiceNo, StockCode, Description, Quantity,
InvoiceDate, UnitPrice, CustomerID, Country. It is read as UTF-8; a latin-1 copy (as some
mirrors publish it) is accepted too, with a note.

Lines left out, each counted under the first reason that applies, in this order:

1. `missing_customer_id`: CustomerID is empty.
2. `adjustment`: InvoiceNo starts with 'A' (bad-debt adjustments, not sales).
3. `non_positive_price`: UnitPrice <= 0.
4. `duplicate_line`: the line repeats an earlier line exactly (all eight columns); the
   first copy is kept.
5. `quantity_sign`: Quantity <= 0 on a sale, or >= 0 on a cancellation.

Then whole invoices are left out, their remaining lines counted:

6. `zero_amount`: the invoice totals less than half a cent.
7. `return_without_purchase`: a cancellation with no matching purchase (see Returns).
8. `return_exceeds_purchase`: a cancellation larger than what remains of its purchase.

Transactions: one per invoice; txn_id = InvoiceNo; amount = the sum of Quantity *
UnitPrice, computed exactly in thousandths (prices have up to three decimals) and rounded
to cents, halves away from zero; channel 'online'; merchant the retailer itself. The time
is the invoice's earliest line (a few invoices span a minute boundary), InvoiceDate being
UK wall-clock time (Europe/London) converted to UTC; see `local_to_utc` for the policy at
daylight-saving changes.

Returns: a cancellation invoice ('C...') is a return with a negative amount. Its purchase
is the most recent purchase invoice of the same customer at or before it (ties: the
highest invoice number) that contains the returned items, meaning every merchandise
StockCode of the cancellation appears among that invoice's lines (quantities are not
matched: the amount rule below bounds what can be returned). Merchandise codes start with
a digit; the others are service lines (POST and DOT postage, C2 carriage, M manual,
D discount, CRUK commission, BANK CHARGES, PADS) that any purchase contains, so a
cancellation of service lines only (a discount, a manual credit) goes to the customer's
most recent purchase. Returns are taken in time order (then invoice number); one that
would make the returns of its purchase exceed the purchase is left out and does not
count against later ones.

Category: the first group of `CATEGORY_KEYWORDS` with a word in the line's Description,
else 'unknown'; a transaction has the category of its largest line (by |amount|, ties to
the earlier line). The merchant's category is the one other than 'unknown' with the largest
purchase amount.

Customers: customer_id = CustomerID as integer text ('17850.0' becomes '17850'); signup_ts
= the first transaction; region = Country of the first transaction ('Unspecified' becomes
null); age_band null; acquisition_channel 'unknown'.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import polars as pl

from cashback.settings import Settings
from cashback.vocab import Channel
from pipelines.importers import (
    ROW,
    Imported,
    Parsed,
    detect_encoding,
    first_failure,
    local_to_utc,
    raise_first_failure,
    read_bytes,
    require_columns,
    require_rows,
    round_cents,
    scan_text_csv,
    to_utf8,
)

COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
ENCODINGS = ("utf-8", "latin-1")
TIME_ZONE = "Europe/London"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
MERCHANT_ID = "online_retail"
UNKNOWN = "unknown"
UNKNOWN_REGIONS = ("Unspecified",)
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jewellery", ("NECKLACE", "BRACELET", "EARRINGS", "RING", "RINGS", "CHARM", "BEADS",
                   "DIAMANTE", "BROOCH", "HAIR")),
    ("bags", ("BAG", "BAGS", "PURSE", "HANDBAG", "SHOPPER")),
    ("seasonal_party", ("CHRISTMAS", "XMAS", "EASTER", "PARTY", "BIRTHDAY", "BUNTING",
                        "GARLAND", "BALLOON", "BALLOONS")),
    ("kitchen", ("MUG", "MUGS", "CUP", "CUPS", "TEA", "TEACUP", "CAKE", "CAKESTAND", "BOWL",
                 "BOWLS", "PLATE", "PLATES", "JAR", "JARS", "JUG", "CUTLERY", "PANTRY",
                 "KITCHEN", "TRAY", "LUNCH", "SNACK", "PICNIC", "BREAD", "JAM", "BAKING",
                 "SPOON", "SPOONS", "NAPKINS", "TEAPOT", "APRON", "BOTTLES")),
    ("stationery", ("CARD", "CARDS", "PAPER", "WRAP", "NOTEBOOK", "PENCIL", "PENCILS", "PEN",
                    "PENS", "STICKER", "STICKERS", "ENVELOPE", "ENVELOPES", "CALENDAR")),
    ("toys", ("TOY", "TOYS", "GAME", "GAMES", "DOLL", "DOLLY", "PLAYHOUSE", "JIGSAW",
              "PUZZLE", "SKIPPING", "CHILDRENS", "BLOCK", "BLOCKS", "HARMONICA", "NESTING",
              "FELTCRAFT", "GLIDERS")),
    ("garden", ("GARDEN", "GARDENERS", "PLANT", "PLANTER", "FLYTRAP", "CROQUET", "WATERING")),
    ("home_decor", ("CANDLE", "CANDLES", "HOLDER", "LIGHT", "LIGHTS", "LANTERN", "FRAME",
                    "MIRROR", "CUSHION", "CLOCK", "SIGN", "DOORMAT", "DECORATION", "ORNAMENT",
                    "VASE", "HOOK", "HOOKS", "DRAWER", "CABINET", "CHEST", "STORAGE", "RACK",
                    "INCENSE", "WALL", "WICKER", "CHALKBOARD", "MEMOBOARD", "BOTTLE",
                    "WARMER", "PARASOL", "UMBRELLA")),
)  # fmt: skip


class Reason(StrEnum):
    """Why lines were left out, in the order they are tested."""

    MISSING_CUSTOMER_ID = "missing_customer_id"
    ADJUSTMENT = "adjustment"
    NON_POSITIVE_PRICE = "non_positive_price"
    DUPLICATE_LINE = "duplicate_line"
    QUANTITY_SIGN = "quantity_sign"
    ZERO_AMOUNT = "zero_amount"
    RETURN_WITHOUT_PURCHASE = "return_without_purchase"
    RETURN_EXCEEDS_PURCHASE = "return_exceeds_purchase"


def load(path: Path, settings: Settings) -> Imported:
    """Read the Online Retail CSV (gzip allowed) and derive the contract tables.

    Args:
        path: the file.
        settings: for the merchant's margin_rate.

    Returns:
        customers, merchants and transactions, the lines left out by reason, and notes.

    Raises:
        CashbackError: when the file is missing, empty, not CSV, lacks a column or has a
            value that does not parse.
    """
    raw = read_bytes(path)
    encoding = detect_encoding(raw, ENCODINGS)
    lines = scan_text_csv(path, to_utf8(path, raw, encoding))
    require_columns(path, lines.collect_schema().names(), COLUMNS)
    checks = _checks()
    parsed = lines.pipe(_parse).with_columns(_line_reason().alias("reason"))
    failures, reasons, kept = pl.collect_all(
        [
            first_failure(parsed, checks),
            parsed.filter(pl.col("reason").is_not_null()).group_by("reason").agg(pl.len()),
            parsed.filter(pl.col("reason").is_null()).pipe(_kept_lines),
        ]
    )
    raise_first_failure(path, failures, checks)
    require_rows(path, kept.height + int(reasons["len"].sum()))
    invoices = _invoices(kept.lazy()).collect()
    links = _match_returns(invoices.lazy(), _merchandise_codes(kept.lazy())).collect()
    accepted, rejected = _accept_within_purchase(links)
    transactions = _transactions(invoices, accepted)
    left_out = dict(zip(reasons["reason"], reasons["len"], strict=True))
    left_out.update(_invoices_left_out(invoices, links, rejected))
    return Imported(
        tables={
            "customers": _customers(transactions, invoices),
            "merchants": _merchants(transactions, settings),
            "transactions": transactions,
        },
        left_out={r.value: left_out[r.value] for r in Reason if left_out.get(r.value, 0) > 0},
        notes=_notes(settings, encoding),
    )


def _checks() -> list[Parsed]:
    """What every line must look like (CustomerID may be empty: that line is left out)."""
    return [
        Parsed("InvoiceNo", pl.col("InvoiceNo"), pl.col("invoice"), "an invoice number"),
        Parsed("StockCode", pl.col("StockCode"), pl.col("StockCode"), "a stock code"),
        Parsed("Quantity", pl.col("Quantity"), pl.col("quantity"), "an integer"),
        Parsed(
            "InvoiceDate",
            pl.col("InvoiceDate"),
            pl.col("ts"),
            f"a time in the format {TIMESTAMP_FORMAT}",
        ),
        Parsed("UnitPrice", pl.col("UnitPrice"), pl.col("price_milli"), "a number"),
        Parsed(
            "CustomerID",
            pl.col("CustomerID"),
            pl.col("customer_id"),
            "an integer customer id (e.g. 17850 or 17850.0)",
            required=False,
        ),
    ]


def _parse(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Typed columns next to the raw ones: null where a value does not parse."""
    quantity = pl.col("Quantity").str.strip_chars().cast(pl.Int64, strict=False)
    price = pl.col("UnitPrice").str.strip_chars().cast(pl.Float64, strict=False)
    customer = pl.col("CustomerID").str.strip_chars().cast(pl.Float64, strict=False)
    local = (
        pl.col("InvoiceDate")
        .str.strip_chars()
        .str.strptime(pl.Datetime("us"), TIMESTAMP_FORMAT, strict=False)
    )
    return lines.with_columns(
        pl.col("InvoiceNo").str.strip_chars().alias("invoice"),
        quantity.alias("quantity"),
        (price * 1000).round(0).cast(pl.Int64, strict=False).alias("price_milli"),
        pl.when(customer == customer.floor())
        .then(customer.cast(pl.Int64, strict=False).cast(pl.String))
        .alias("customer_id"),
        local_to_utc(local, TIME_ZONE).alias("ts"),
    ).with_columns(pl.col("invoice").str.starts_with("C").alias("is_return"))


def _line_reason() -> pl.Expr:
    """The first reason a line is left out, or null when it is kept."""
    first_copy = pl.col(ROW).min().over(COLUMNS)
    quantity = pl.col("quantity")
    wrong_sign = pl.when(pl.col("is_return")).then(quantity >= 0).otherwise(quantity <= 0)
    return (
        pl.when(pl.col("customer_id").is_null())
        .then(pl.lit(Reason.MISSING_CUSTOMER_ID.value))
        .when(pl.col("invoice").str.starts_with("A"))
        .then(pl.lit(Reason.ADJUSTMENT.value))
        .when(pl.col("price_milli") <= 0)
        .then(pl.lit(Reason.NON_POSITIVE_PRICE.value))
        .when(pl.col(ROW) != first_copy)
        .then(pl.lit(Reason.DUPLICATE_LINE.value))
        .when(wrong_sign)
        .then(pl.lit(Reason.QUANTITY_SIGN.value))
    )


def _category(description: pl.Expr) -> pl.Expr:
    """The first keyword group with a word in `description`, else 'unknown'."""
    text = description.fill_null("").str.to_uppercase()
    matches = [
        pl.when(text.str.contains(r"\b(?:" + "|".join(words) + r")\b")).then(pl.lit(category))
        for category, words in CATEGORY_KEYWORDS
    ]
    return pl.coalesce(*matches, pl.lit(UNKNOWN))


def _kept_lines(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The columns later steps need from the lines that are kept."""
    return lines.select(
        ROW,
        "invoice",
        "is_return",
        "customer_id",
        "ts",
        pl.col("StockCode").str.strip_chars().alias("stock_code"),
        (pl.col("quantity") * pl.col("price_milli")).alias("milli"),
        _category(pl.col("Description")).alias("category"),
        pl.col("Country").alias("country"),
    )


def _cents(milli: pl.Expr) -> pl.Expr:
    """Thousandths to cents, halves away from zero, exactly in integers."""
    return milli.sign() * ((milli.abs() + 5) // 10)


def _invoices(kept: pl.LazyFrame) -> pl.LazyFrame:
    """One row per invoice: customer, earliest time, amount in cents, category, country."""
    largest_first = [pl.col("milli").abs(), pl.col(ROW)]
    return (
        kept.group_by("invoice")
        .agg(
            pl.col("customer_id").min(),
            pl.col("ts").min(),
            pl.col("is_return").first(),
            pl.col("milli").sum(),
            pl.col("category").sort_by(largest_first, descending=[True, False]).first(),
            pl.col("country").sort_by(ROW).first(),
            pl.len().alias("lines"),
        )
        .with_columns(_cents(pl.col("milli")).alias("cents"))
        .sort("invoice")
    )


def _merchandise_codes(kept: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct (invoice, stock code) of merchandise lines (codes starting with a digit)."""
    return (
        kept.filter(pl.col("stock_code").str.contains(r"^\d"))
        .select("invoice", "stock_code")
        .unique()
    )


def _match_returns(invoices: pl.LazyFrame, codes: pl.LazyFrame) -> pl.LazyFrame:
    """Each return's purchase: r_invoice, p_invoice, r_ts, r_abs (cents), p_cents.

    Returns without a purchase that contains their items are absent.
    """
    valid = invoices.filter(pl.col("cents") != 0)
    purchases = valid.filter(~pl.col("is_return")).select(
        pl.col("invoice").alias("p_invoice"),
        "customer_id",
        pl.col("ts").alias("p_ts"),
        pl.col("cents").alias("p_cents"),
    )
    returns = valid.filter(pl.col("is_return")).select(
        pl.col("invoice").alias("r_invoice"),
        "customer_id",
        pl.col("ts").alias("r_ts"),
        pl.col("cents").abs().alias("r_abs"),
    )
    return_codes = returns.join(codes, left_on="r_invoice", right_on="invoice")
    wanted = return_codes.group_by("r_invoice").agg(pl.len().alias("wanted"))
    by_code = (
        return_codes.join(
            purchases.join(codes, left_on="p_invoice", right_on="invoice"),
            on=["customer_id", "stock_code"],
        )
        .filter(pl.col("p_ts") <= pl.col("r_ts"))
        .group_by("r_invoice", "p_invoice", "p_ts")
        .agg(pl.len().alias("found"))
        .join(wanted, on="r_invoice")
        .filter(pl.col("found") == pl.col("wanted"))
        .select("r_invoice", "p_invoice", "p_ts")
    )
    service_only = (
        returns.join(wanted, on="r_invoice", how="anti")
        .join(purchases, on="customer_id")
        .filter(pl.col("p_ts") <= pl.col("r_ts"))
        .select("r_invoice", "p_invoice", "p_ts")
    )
    latest = pl.col("p_invoice").sort_by(["p_ts", "p_invoice"]).last()
    return (
        pl.concat([by_code, service_only])
        .group_by("r_invoice")
        .agg(latest)
        .join(returns.select("r_invoice", "r_ts", "r_abs"), on="r_invoice")
        .join(purchases.select("p_invoice", "p_cents"), on="p_invoice")
        .sort("r_invoice")
    )


def _accept_within_purchase(links: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split matched returns into accepted and exceeding, purchase by purchase.

    Returns are taken in time order (then invoice number). Each round accepts, in every
    purchase, the returns before the first one that overflows what is left, and rejects
    that one; the rest wait for the next round with the budget reduced. A round is a
    vectorized pass; rounds are as many as the most rejections of any one purchase.

    Returns:
        The accepted links and the rejected ones (same columns as `links`).
    """
    pending = (
        links.sort("p_invoice", "r_ts", "r_invoice")
        .with_row_index("__seq")
        .with_columns(pl.col("p_cents").alias("__budget"))
    )
    columns = links.columns
    accepted, rejected = [links.clear()], [links.clear()]
    while pending.height:
        over = pl.col("r_abs").cum_sum().over("p_invoice", order_by="__seq") > pl.col("__budget")
        first_over = pl.when(over).then(pl.col("__seq")).min().over("p_invoice")
        staged = pending.with_columns(first_over.alias("__first_over"))
        ok = pl.col("__first_over").is_null() | (pl.col("__seq") < pl.col("__first_over"))
        accepted.append(staged.filter(ok).select(columns))
        rejected.append(staged.filter(pl.col("__seq") == pl.col("__first_over")).select(columns))
        spent = pl.col("r_abs").filter(ok).sum().over("p_invoice")
        pending = (
            staged.with_columns((pl.col("__budget") - spent).alias("__budget"))
            .filter(pl.col("__seq") > pl.col("__first_over"))
            .drop("__first_over")
        )
    return pl.concat(accepted), pl.concat(rejected)


def _transactions(invoices: pl.DataFrame, accepted: pl.DataFrame) -> pl.DataFrame:
    """Purchases with a non-zero amount, and the accepted returns linked to their purchase."""
    purchases = invoices.filter(~pl.col("is_return"), pl.col("cents") != 0).with_columns(
        pl.lit(None, pl.String).alias("original_txn_id")
    )
    returns = invoices.join(
        accepted.select(pl.col("r_invoice").alias("invoice"), pl.col("p_invoice")),
        on="invoice",
    ).with_columns(pl.col("p_invoice").alias("original_txn_id"))
    return (
        pl.concat([purchases, returns.drop("p_invoice")])
        .select(
            pl.col("invoice").alias("txn_id"),
            "customer_id",
            pl.lit(MERCHANT_ID).alias("merchant_id"),
            "ts",
            round_cents(pl.col("cents") / 100).alias("amount"),
            "category",
            pl.lit(Channel.ONLINE.value).alias("channel"),
            "original_txn_id",
        )
        .sort("ts", "txn_id")
    )


def _invoices_left_out(
    invoices: pl.DataFrame, links: pl.DataFrame, rejected: pl.DataFrame
) -> dict[str, int]:
    """Lines of the invoices left out whole, by reason."""
    returns = invoices.filter(pl.col("is_return"), pl.col("cents") != 0)
    unmatched = returns.join(links, left_on="invoice", right_on="r_invoice", how="anti")
    exceeding = returns.join(rejected, left_on="invoice", right_on="r_invoice", how="semi")
    zero = invoices.filter(pl.col("cents") == 0)
    return {
        Reason.ZERO_AMOUNT.value: int(zero["lines"].sum()),
        Reason.RETURN_WITHOUT_PURCHASE.value: int(unmatched["lines"].sum()),
        Reason.RETURN_EXCEEDS_PURCHASE.value: int(exceeding["lines"].sum()),
    }


def _customers(transactions: pl.DataFrame, invoices: pl.DataFrame) -> pl.DataFrame:
    """One row per customer with a transaction: first seen, and the country then."""
    first = ["ts", "txn_id"]
    country = pl.col("country").sort_by(first).first()
    return (
        transactions.join(
            invoices.select(pl.col("invoice").alias("txn_id"), "country"), on="txn_id"
        )
        .group_by("customer_id")
        .agg(pl.col("ts").min().alias("signup_ts"), country.alias("region"))
        .select(
            "customer_id",
            "signup_ts",
            pl.when(~pl.col("region").is_in(UNKNOWN_REGIONS))
            .then(pl.col("region"))
            .alias("region"),
            pl.lit(None, pl.String).alias("age_band"),
            pl.lit(UNKNOWN).alias("acquisition_channel"),
        )
        .sort("customer_id")
    )


def _merchants(transactions: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The retailer: its main known category (largest purchase amount), the default margin."""
    top = (
        transactions.filter(pl.col("amount") > 0, pl.col("category") != UNKNOWN)
        .group_by("category")
        .agg(pl.col("amount").sum())
        .sort(["amount", "category"], descending=[True, False])
    )
    category = top["category"][0] if top.height else UNKNOWN
    return pl.DataFrame(
        {
            "merchant_id": [MERCHANT_ID],
            "category": [category],
            "margin_rate": [settings.default_margin_rate],
        }
    )


def _notes(settings: Settings, encoding: str) -> tuple[str, ...]:
    margin = (
        f"margin_rate {settings.default_margin_rate} of merchant {MERCHANT_ID} comes from the "
        "setting default_margin_rate (the file has no margins)"
    )
    notes = [
        margin,
        f"InvoiceDate read as {TIME_ZONE} time and stored in UTC",
    ]
    if encoding != ENCODINGS[0]:
        notes.append(f"the file is not valid {ENCODINGS[0]}; read it as {encoding}")
    return tuple(notes)
