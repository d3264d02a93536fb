"""``nurture report --format html``: the pipeline summary as one self-contained page with charts.

No scripts or styles are fetched: the charts are inline SVG drawn here, so the file opens the
same from a laptop, a mail attachment or an air-gapped server. A few lines of inline script
count the bars the browser actually laid out (``data-bars-drawn`` on the root element), which
is how the test checks, in headless Chromium, that the charts are drawn.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from typing import Any

BAR_HEIGHT = 22
LABEL_WIDTH = 220
CHART_WIDTH = 460
COLOURS = ("#2f6fdb", "#e8833a", "#3aa57a", "#c0392b", "#8e44ad", "#7f8c8d", "#d4ac0d")
# The order leads move through, for the funnel.
FUNNEL = ("new", "nurturing", "working", "qualified", "customer")


def render_html(summary: Mapping[str, Any], *, generated: dt.datetime | None = None) -> str:
    generated = generated or dt.datetime.now(dt.UTC)
    lost = _sum_nested(summary.get("lost_by_reason", {}))
    by_source = {
        row["source"]: round(100 * row["won"] / row["leads"], 1) if row["leads"] else 0.0
        for row in summary.get("conversion_by_source", [])
    }
    statuses = summary.get("leads_by_status", {})
    funnel = {status: statuses.get(status, 0) for status in FUNNEL}
    sections = [
        _headline(summary),
        _chart("Lead funnel", funnel, "leads"),
        _chart("Lost reasons", lost, "deals"),
        _chart("Lost to competitors", summary.get("lost_to_competitors", {}), "deals"),
        _chart("Conversion by lead source", by_source, "% won"),
        _chart("Emails by outcome", summary.get("emails_by_status", {}), "emails"),
        _chart(
            "Days in the current stage (open deals, average)",
            {k: v["avg_days"] for k, v in summary.get("time_in_stage", {}).items()},
            "days",
        ),
        _chart("Days from opening to close, by outcome", summary.get("days_to_close", {}), "days"),
        _attention(summary.get("needs_attention", {})),
        _chart("Leads disqualified, by reason", summary.get("disqualified_by_reason", {}), "leads"),
    ]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Nurture pipeline report</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>Nurture pipeline report</h1>\n<p class="when">Generated '
        f"{generated:%Y-%m-%d %H:%M} UTC</p>\n"
        + "\n".join(sections)
        + f"\n<script>{_COUNT_BARS}</script>\n</body>\n</html>\n"
    )


def _headline(summary: Mapping[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.0f}%"

    figures = [
        ("Win rate", pct(summary.get("win_rate"))),
        ("Win-back rate", pct(summary.get("win_back_rate"))),
        ("Open deals, owner warned", str(summary.get("open_deals_owner_warned", 0))),
        ("Owners released", str(summary.get("owners_released", 0))),
        ("Daily runs", str(summary.get("daily_runs", 0))),
    ]
    cells = "".join(
        f'<div class="figure"><span class="value">{html.escape(v)}</span>'
        f'<span class="label">{html.escape(k)}</span></div>'
        for k, v in figures
    )
    return f'<section class="figures">{cells}</section>'


def _attention(board: Mapping[str, Any]) -> str:
    """The failed-leads board: what needs a person, then rejected rows by reason."""
    figures = [
        ("Emails failed", board.get("emails_failed", 0)),
        ("Leads waiting for an owner", board.get("leads_waiting_for_an_owner", 0)),
    ]
    cells = "".join(
        f'<div class="figure"><span class="value">{int(v)}</span>'
        f'<span class="label">{html.escape(k)}</span></div>'
        for k, v in figures
    )
    rejected = _chart(
        "Rejected import rows, by reason", board.get("rejected_rows_by_reason", {}), "rows"
    )
    return f'<h2>Needs attention</h2><section class="figures">{cells}</section>{rejected}'


def _chart(title: str, values: Mapping[str, float], unit: str) -> str:
    rows = [(str(k).replace("_", " "), float(v)) for k, v in values.items() if v]
    heading = f"<h2>{html.escape(title)}</h2>"
    if not rows:
        return f'<section>{heading}<p class="empty">Nothing yet.</p></section>'
    rows.sort(key=lambda kv: -kv[1])
    top = max(v for _, v in rows)
    height = BAR_HEIGHT * len(rows) + 4
    width = LABEL_WIDTH + CHART_WIDTH + 80
    bars = []
    for i, (label, value) in enumerate(rows):
        y = 2 + i * BAR_HEIGHT
        length = max(2.0, CHART_WIDTH * value / top)
        shown = f"{value:g}"
        bars.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{BAR_HEIGHT - 6}"'
            f' fill="{COLOURS[i % len(COLOURS)]}"><title>{html.escape(label)}: {shown} {html.escape(unit)}</title></rect>'
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}">{shown}</text>'
        )
    svg = (
        f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>'
    )
    return f'<section class="chart">{heading}{svg}</section>'


def _sum_nested(by: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in by.values():
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0) + n
    return total


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 860px; color: #222; }
h1 { margin-bottom: 0; } .when { color: #666; margin-top: .2rem; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
svg text { font-size: 12px; fill: #333; }
.figures { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 1rem; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: .6rem .9rem; min-width: 120px; }
.figure .value { display: block; font-size: 1.5rem; font-weight: 600; }
.figure .label { color: #666; font-size: .85rem; }
.empty { color: #888; }
"""

# Counts the bars the browser laid out with a real size: proof the charts were drawn.
_COUNT_BARS = (
    "document.documentElement.dataset.barsDrawn = String(Array.from("
    "document.querySelectorAll('svg rect.bar')).filter(r => r.getBBox().width > 0 && "
    "r.getBoundingClientRect().height > 0).length);"
)
