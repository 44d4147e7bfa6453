"""A forest plot of claims: inline SVG, one row per (claim, dataset, profile), no network.

Claims compare different metrics (accuracy, perplexity, MACs, relative differences), so each row
has its own horizontal scale: the row spans its interval, 0 and its bar (margin, and margin +
min_effect when the claim states one), and prints its two ends. Within a row the picture says what
the verdict says: where the interval lies against the dashed zero and the red bar. Rows are
coloured by verdict; hovering a row shows the claim's text, numbers, reason and note.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from leaderboard.formatting import is_missing

VERDICT_COLOURS = {"reproduced": "#1b7f3b", "not reproduced": "#b00020", "inconclusive": "#a36b00",
                   "invalid": "#8a8a8a"}
ROW_HEIGHT = 22
LABEL_WIDTH = 330
PLOT_WIDTH = 300
VERDICT_WIDTH = 120


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _short(value: float) -> str:
    if is_missing(value):
        return "—"
    magnitude = abs(value)
    return f"{value:.3g}" if magnitude >= 1e-3 or magnitude == 0 else f"{value:.1e}"


def _row_range(claim: Any) -> tuple[float, float]:
    bar = claim.margin + (0.0 if is_missing(claim.min_effect) else claim.min_effect)
    values = [0.0, claim.margin, bar] + [v for v in (claim.diff_mean, claim.ci_low, claim.ci_high) if not is_missing(v)]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high), 1.0) * 0.1
    return low - pad, high + pad


def forest_svg(claims: pd.DataFrame, *, title: str, with_benchmark: bool = False) -> str:
    """One SVG row per claim row; empty string when there are none."""
    if claims.empty:
        return ""
    width = LABEL_WIDTH + PLOT_WIDTH + VERDICT_WIDTH
    height = ROW_HEIGHT * (len(claims) + 1) + 8
    parts = [f'<svg class="forest" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(title)}">',
             f'<text x="{LABEL_WIDTH}" y="14">each row: mean improvement (dot) and 95% interval; '
             'dashed: 0; red: the claim\'s bar</text>']
    for index, claim in enumerate(claims.itertuples(index=False)):
        # the overall plot keeps hover text short: each benchmark's own plot carries the text and note
        parts.append(_row(claim, y=ROW_HEIGHT * (index + 1) + 6, with_benchmark=with_benchmark,
                          full_tooltip=not with_benchmark))
    parts.append("</svg>")
    return "".join(parts)


def _row(claim: Any, *, y: float, with_benchmark: bool, full_tooltip: bool = True) -> str:
    colour = VERDICT_COLOURS.get(claim.verdict, "#444")
    low, high = _row_range(claim)

    def x(value: float) -> float:
        return LABEL_WIDTH + 30 + (value - low) / (high - low) * (PLOT_WIDTH - 60)

    label = f"{claim.benchmark} · " if with_benchmark else ""
    label += f"{claim.claim} · {claim.dataset}" + ("" if claim.profile == "cpu" else f" · {claim.profile}")
    unit = " (relative)" if claim.relative else ""
    text = f": {claim.text}" if full_tooltip and claim.text else ""
    tooltip = (f"{claim.claim}{text} — {claim.method} vs {claim.baseline} on {claim.dataset} "
               f"({claim.profile}), {claim.metric}{unit}: mean {_short(claim.diff_mean)}, "
               f"95% CI [{_short(claim.ci_low)}, {_short(claim.ci_high)}], n {claim.n}, margin {_short(claim.margin)}"
               + ("" if is_missing(claim.min_effect) else f", min effect {_short(claim.min_effect)}")
               + f" → {claim.verdict}" + (f". {claim.reason}" if claim.reason else "")
               + (f". Note: {claim.note}" if full_tooltip and claim.note else ""))
    middle = y + ROW_HEIGHT / 2 - 4
    parts = [f'<g class="forest-row verdict-{_esc(claim.verdict.replace(" ", "-"))}"><title>{_esc(tooltip)}</title>',
             f'<text x="0" y="{middle + 4:.1f}">{_esc(label[:52])}</text>',
             f'<line x1="{x(low):.1f}" y1="{middle:.1f}" x2="{x(high):.1f}" y2="{middle:.1f}" stroke="#e4e4e4"/>',
             f'<text x="{LABEL_WIDTH:.1f}" y="{middle + 4:.1f}" fill="#999">{_esc(_short(low))}</text>',
             f'<text x="{LABEL_WIDTH + PLOT_WIDTH:.1f}" y="{middle + 4:.1f}" text-anchor="end" fill="#999">'
             f"{_esc(_short(high))}</text>",
             f'<line x1="{x(0):.1f}" y1="{middle - 7:.1f}" x2="{x(0):.1f}" y2="{middle + 7:.1f}" stroke="#777" '
             'stroke-dasharray="2,2"/>']
    bar = claim.margin + (0.0 if is_missing(claim.min_effect) else claim.min_effect)
    for value in sorted({claim.margin, bar}):
        parts.append(f'<line x1="{x(value):.1f}" y1="{middle - 8:.1f}" x2="{x(value):.1f}" y2="{middle + 8:.1f}" '
                     'stroke="#d33" stroke-width="1.5"/>')
    if not (is_missing(claim.ci_low) or is_missing(claim.ci_high)):
        parts.append(f'<line x1="{x(claim.ci_low):.1f}" y1="{middle:.1f}" x2="{x(claim.ci_high):.1f}" '
                     f'y2="{middle:.1f}" stroke="{colour}" stroke-width="3"/>')
    if not is_missing(claim.diff_mean) and math.isfinite(claim.diff_mean):
        parts.append(f'<circle cx="{x(claim.diff_mean):.1f}" cy="{middle:.1f}" r="4" fill="{colour}"/>')
    parts.append(f'<text x="{LABEL_WIDTH + PLOT_WIDTH + 8:.1f}" y="{middle + 4:.1f}" fill="{colour}" '
                 f'font-weight="600">{_esc(claim.verdict)}</text></g>')
    return "".join(parts)
