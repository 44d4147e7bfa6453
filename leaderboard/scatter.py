"""Metric against cost: inline SVG, one dot per method, labels that never overlap.

x is the mean fit time in seconds (log scale when it spans more than a decade), y the primary
metric's mean. Method names sit in a column right of the plot, each at its dot's height, pushed
apart where they would collide and joined to their dot by a thin leader line.
"""

from __future__ import annotations

import html
import math

from leaderboard.formatting import format_number, format_seconds
from leaderboard.report import ScatterPoint

ROLE_COLOURS = {"proposed": "#d62728", "baseline": "#1f77b4"}
OTHER_COLOUR = "#7f7f7f"
LABEL_GAP = 13  # px between label baselines


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    return [low + (high - low) * index / (count - 1) for index in range(count)]


def spread_labels(positions: list[float], *, gap: float, low: float, high: float) -> list[float]:
    """Label heights near ``positions`` (same order), at least ``gap`` apart, kept within [low, high]."""
    order = sorted(range(len(positions)), key=lambda index: positions[index])
    placed = [0.0] * len(positions)
    previous = low - gap
    for index in order:
        placed[index] = max(positions[index], previous + gap)
        previous = placed[index]
    overflow = previous - high
    if overflow > 0:  # shift the whole column up, then keep the gaps from the top down
        for index in order:
            placed[index] -= overflow
        following = high + gap
        for index in reversed(order):
            placed[index] = min(placed[index], following - gap)
            following = placed[index]
    return placed


def scatter_svg(points: list[ScatterPoint], *, metric: str, title: str, width: int = 620, height: int = 360) -> str:
    """Primary metric (y) against mean fit seconds (x), one dot per method; empty without points."""
    if not points:
        return ""
    left, label_column, top, bottom = 64, 170, 16, 44
    plot_w, plot_h = width - left - label_column - 16, height - top - bottom
    xs = [point.fit_s_mean for point in points]
    ys = [point.metric_mean for point in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 10
    to_x = math.log10 if log_x else (lambda value: value)
    x_low, x_high = to_x(min(xs)), to_x(max(xs))
    y_low, y_high = min(ys), max(ys)
    # A single point (or a flat axis) still needs a range to be placed in.
    x_pad = (x_high - x_low) * 0.08 or max(abs(x_high) * 0.1, 0.5)
    y_pad = (y_high - y_low) * 0.08 or max(abs(y_high) * 0.1, 0.01)
    x_low, x_high, y_low, y_high = x_low - x_pad, x_high + x_pad, y_low - y_pad, y_high + y_pad
    if not log_x and min(xs) >= 0:
        x_low = max(x_low, 0.0)  # no negative seconds on the axis (training-free methods sit at 0)

    def px(value: float) -> float:
        return left + (to_x(value) - x_low) / (x_high - x_low) * plot_w

    def py(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * plot_h

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(f"{metric} vs fit seconds: {title}")}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for tick in _ticks(x_low, x_high):
        x = left + (tick - x_low) / (x_high - x_low) * plot_w
        label = format_seconds(10 ** tick if log_x else tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#999"/>'
                     f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_esc(label)}</text>')
    for tick in _ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#999"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_esc(format_number(tick))}</text>')
    x_label = "mean fit time, s (log scale)" if log_x else "mean fit time, s"
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">{_esc(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f"{_esc(metric)} (mean over seeds)</text>")
    label_x = left + plot_w + 24
    heights = spread_labels([py(point.metric_mean) for point in points], gap=LABEL_GAP, low=top + 8, high=top + plot_h)
    for point, label_y in zip(points, heights):
        colour = ROLE_COLOURS.get(point.role, OTHER_COLOUR)
        x, y = px(point.fit_s_mean), py(point.metric_mean)
        tooltip = f"{point.method} ({point.role}): {metric} {format_number(point.metric_mean)}, " \
                  f"fit {format_seconds(point.fit_s_mean)} s"
        parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{label_x - 3:.1f}" y2="{label_y - 4:.1f}" stroke="#ddd"/>'
                     f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"><title>{_esc(tooltip)}</title></circle>'
                     f'<text x="{label_x:.1f}" y="{label_y:.1f}" fill="{colour}">{_esc(point.method)}</text>')
    parts.append("</svg>")
    return "".join(parts)
