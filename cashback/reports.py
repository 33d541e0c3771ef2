"""Self-contained HTML reports: one file with inline CSS and inline SVG plots, nothing fetched.

A report is a title and sections; a section holds blocks: paragraphs (plain strings), key
numbers, verdicts, notes, tables (from polars frames) and plots (matplotlib figures rendered
to SVG). Every string is HTML-escaped when rendered; pass a `markupsafe.Markup` only for HTML
you built yourself.

```python
with styled_figure() as (fig, (ax,)):
    ax.plot(days, lift)
report = Report(
    title="Rate boost: results",
    sections=[
        Section("Verdict", [Verdict("Ship the boost", "Margin +2.1 % (95 % CI 0.4 to 3.8).")]),
        Section("Lift", [plot(fig, title="Cumulative lift", description="Lift by day ..."),
                         table(frame, caption="Lift per metric", formats={"lift": "+.2%"})]),
    ],
)
write_report(report, Path("report.html"))
```

Plots are drawn on `matplotlib.figure.Figure` objects (`styled_figure`), never through pyplot, so
no global backend is selected and nothing is kept alive after rendering.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import polars as pl
from markupsafe import Markup

from cashback.tables import write_text_atomic

if TYPE_CHECKING:
    import jinja2
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

Tone = Literal["positive", "negative", "neutral", "caution"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and on white
PALETTE: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# text stays <text> (readable, selectable, searchable); ids are made unique per plot on render
SVG_RC: Final[dict[RcKeyType, Any]] = {"svg.fonttype": "none", "svg.hashsalt": "cashback-report"}
NULL_CELL: Final = "—"
_SVG_START = re.compile(r"<svg\b")
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')  # an id, or a reference to one


@dataclass(frozen=True)
class Plot:
    """A matplotlib figure as SVG, with its accessible name and description.

    Attributes:
        svg: the `<svg>` element drawn by matplotlib (no XML prolog).
        title: a short name, read by screen readers and shown as the caption by default.
        description: what the plot shows, in words (its text alternative).
        caption: the visible caption under the plot (the title when empty).
    """

    kind: ClassVar[str] = "plot"
    svg: str
    title: str
    description: str
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells.

    Attributes:
        caption: the table's visible name (also its accessible name).
        columns: the column headers.
        rows: one tuple of cell strings per row.
        numeric: per column, whether it holds numbers (right-aligned, tabular figures).
        row_headers: whether the first column names its row (`<th scope="row">`).
    """

    kind: ClassVar[str] = "table"
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    row_headers: bool = True


@dataclass(frozen=True)
class KeyNumber:
    """One headline number: a label, its formatted value and an optional detail line."""

    label: str
    value: str
    detail: str = ""


@dataclass(frozen=True)
class KeyNumbers:
    """A row of headline numbers (wraps onto several lines on narrow screens)."""

    kind: ClassVar[str] = "key_numbers"
    items: Sequence[KeyNumber]


@dataclass(frozen=True)
class Verdict:
    """The conclusion in plain words, in a call-out box.

    Attributes:
        headline: the decision in a few words ("Ship the rate boost").
        text: why, with the numbers that support it.
        tone: colours the box; the headline must say the same in words.
    """

    kind: ClassVar[str] = "verdict"
    headline: str
    text: str = ""
    tone: Tone = "neutral"


@dataclass(frozen=True)
class Note:
    """A short remark the reader must not miss (missing data, a failed check)."""

    kind: ClassVar[str] = "note"
    text: str
    tone: Tone = "caution"


Block = str | Plot | Table | KeyNumbers | Verdict | Note


@dataclass(frozen=True)
class Section:
    """A headed part of a report; a plain string block is a paragraph."""

    heading: str
    blocks: Sequence[Block] = ()


@dataclass(frozen=True)
class Report:
    """A whole report.

    Attributes:
        title: the page title and top heading.
        sections: the parts, in order (a contents list is shown from three sections).
        subtitle: a line under the title.
        meta: (label, value) pairs shown under the title, e.g. ("Data as of", "2025-12-31").
        lang: the language of the text (BCP 47).
    """

    title: str
    sections: Sequence[Section]
    subtitle: str = ""
    meta: Sequence[tuple[str, str]] = ()
    lang: str = "en"


@contextlib.contextmanager
def styled_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float = 6.0,
    height: float = 3.4,
    sharex: bool = False,
    sharey: bool = False,
) -> Iterator[tuple[Figure, list[Axes]]]:
    """A figure in the report style, not registered with pyplot; draw on it inside the block.

    The style (colour-blind-safe palette, 11 pt text, light grid, "$" as plain text) holds
    for everything drawn inside the `with` block.

    Args:
        nrows: rows of axes.
        ncols: columns of axes.
        width: width in inches (the page scales the plot to the text column).
        height: height in inches.
        sharex: share the x axis between the axes.
        sharey: share the y axis between the axes.

    Yields:
        The figure and its axes, row by row: `with styled_figure() as (fig, (ax,)):`.
    """
    import matplotlib as mpl  # noqa: PLC0415 - no work at import time
    from matplotlib.figure import Figure  # noqa: PLC0415

    with mpl.rc_context(_style()):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
        yield fig, list(axes.flat)


def _style() -> dict[RcKeyType, Any]:
    from matplotlib.rcsetup import cycler  # noqa: PLC0415 - no work at import time

    return {
        "font.size": 11.0,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.axisbelow": True,
        "grid.color": "#d9d9d9",
        "grid.linewidth": 0.6,
        "axes.titlesize": "medium",
        "axes.titleweight": "bold",
        "legend.frameon": False,
        "text.parse_math": False,  # "$" is money in these reports, not TeX
    }


def plot(fig: Figure, *, title: str, description: str, caption: str = "") -> Plot:
    """Render a matplotlib figure to an SVG block.

    Args:
        fig: the figure (from `styled_figure`, or any `matplotlib.figure.Figure`).
        title: its short accessible name.
        description: what it shows, in words, for readers who cannot see it.
        caption: the visible caption (the title when empty).

    Returns:
        The plot block; the figure can be discarded.
    """
    import matplotlib as mpl  # noqa: PLC0415 - no work at import time

    buffer = io.StringIO()
    with mpl.rc_context(SVG_RC):
        fig.savefig(
            buffer,
            format="svg",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    start = _SVG_START.search(text)
    if start is None:
        msg = "matplotlib produced no <svg> element"
        raise ValueError(msg)
    return Plot(text[start.start() :].strip(), title, description, caption)


def format_number(value: float, spec: str = "") -> str:
    """Format a number for a report.

    Args:
        value: the number.
        spec: a format spec (",.2f", "+.1%", ",d"); empty for the default: integers with
            thousands separators, other numbers with two decimals from 1 up, else three
            significant digits.

    Returns:
        The text; "n/a" for NaN and "∞" / "-∞" for infinities.
    """
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if spec:
        return format(value, spec)
    if isinstance(value, int) or (value.is_integer() and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


def table(
    frame: pl.DataFrame,
    *,
    caption: str,
    formats: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    row_headers: bool = True,
) -> Table:
    """A table block from a polars frame.

    Args:
        frame: the rows to show, in order (keep it short: a report is read, not searched).
        caption: the table's name.
        formats: format specs by column (see `format_number`), e.g. {"lift": "+.2%"}.
        labels: header text by column (the column name otherwise).
        row_headers: whether the first column names its row.

    Returns:
        The table block, its cells formatted (nulls as "—").
    """
    formats = formats or {}
    labels = labels or {}
    numeric = tuple(dtype.is_numeric() for dtype in frame.dtypes)
    rows = tuple(
        tuple(
            _cell(value, formats.get(name, ""))
            for name, value in zip(frame.columns, row, strict=True)
        )
        for row in frame.iter_rows()
    )
    columns = tuple(labels.get(name, name) for name in frame.columns)
    return Table(caption, columns, rows, numeric, row_headers)


def _cell(value: object, spec: str) -> str:
    if value is None:
        return NULL_CELL
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(value, spec)
    if isinstance(value, datetime):
        return format(value, spec or "%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return format(value, spec or "%Y-%m-%d")
    return str(value)


def render(report: Report) -> str:
    """The report as one self-contained HTML document.

    Returns:
        HTML with inline CSS and SVG, no scripts and no external resources (a
        Content-Security-Policy forbids fetching any).
    """
    return _environment().get_template("report.html.j2").render(report=report)


def write_report(report: Report, path: Path) -> Path:
    """Render a report and write it atomically (a temp file, then a rename).

    Returns:
        The path written.
    """
    return write_text_atomic(render(report), path)


def inline_svg(block: Plot, prefix: str) -> Markup:
    """The plot's SVG for inlining: ids made unique by `prefix`, with its accessible name.

    Args:
        block: the plot.
        prefix: unique within the page (several plots share matplotlib's ids).

    Returns:
        The `<svg role="img">` element with a `<title>` and a `<desc>`.
    """
    ids = set(_SVG_ID.findall(block.svg))
    svg = _SVG_REF.sub(
        lambda m: f"{m[1]}{prefix}-{m[2]}" if m[2] in ids else m[0],
        block.svg,
    )
    head, rest = svg.split(">", 1)
    labelled = Markup(
        '{head} role="img" aria-labelledby="{p}-title" aria-describedby="{p}-desc">'
        '<title id="{p}-title">{title}</title><desc id="{p}-desc">{desc}</desc>'
    ).format(
        head=Markup(head),  # noqa: S704 - matplotlib's SVG, its text escaped by matplotlib
        p=prefix,
        title=block.title,
        desc=block.description,
    )
    return labelled + Markup(rest)  # noqa: S704 - idem


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2  # noqa: PLC0415 - no work at import time

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cashback", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["inline_svg"] = inline_svg
    return env
