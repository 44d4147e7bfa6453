"""Number formatting shared by the Markdown and HTML leaderboards (plain text, no markup)."""

from __future__ import annotations

import math

MISSING = "—"


def is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def decimals_for(value: float) -> int:
    """Digits after the point: 3 for scores in [0, 10), fewer for large numbers, 2 significant for tiny ones."""
    magnitude = abs(value)
    if magnitude == 0 or math.isnan(magnitude) or math.isinf(magnitude):
        return 3
    if magnitude < 0.01:
        return min(-math.floor(math.log10(magnitude)) + 1, 8)
    if magnitude < 10:
        return 3
    if magnitude < 1000:
        return 2
    return 1


def format_number(value: float | None, *, decimals: int | None = None) -> str:
    if is_missing(value):
        return MISSING
    digits = decimals_for(value) if decimals is None else decimals
    return f"{value:.{digits}f}"


def format_mean_std(mean: float | None, std: float | None, n: int) -> str:
    """``0.612 ± 0.010 (3)``; no ± for a single run, ``—`` when there is none."""
    if n <= 0 or is_missing(mean):
        return MISSING
    digits = decimals_for(mean)
    if n >= 2 and not is_missing(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"
    return f"{mean:.{digits}f} ({n})"


def format_signed(value: float | None, *, decimals: int | None = None) -> str:
    if is_missing(value):
        return MISSING
    digits = decimals_for(value) if decimals is None else decimals
    return f"{value:+.{digits}f}"


def _scaled(value: float, *, units: tuple[tuple[float, str], ...], separator: str = "", suffix: str = "") -> str:
    for scale, unit in units:
        if abs(value) >= scale:
            scaled = value / scale
            digits = 1 if abs(scaled) < 10 else 0
            return f"{scaled:.{digits}f}{separator}{unit}{suffix}"
    return f"{value:.0f}{separator}{suffix}"


def format_count(value: float | None) -> str:
    """Parameter counts: 1.2M, 850K, 3.4B."""
    if is_missing(value):
        return MISSING
    return _scaled(value, units=((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")))


def format_flops(value: float | None) -> str:
    """FLOPs of one training step: 3.4 GFLOP, 120 MFLOP."""
    if is_missing(value):
        return MISSING
    return _scaled(value, units=((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")),
                   separator=" ", suffix="FLOP")


def format_seconds(value: float | None) -> str:
    if is_missing(value):
        return MISSING
    if abs(value) < 1:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def format_rate(value: float | None) -> str:
    """Throughput (samples/s): 1,234 or 56.7."""
    if is_missing(value):
        return MISSING
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def format_share(value: float | None) -> str:
    """A fraction as a percentage: 0.034 -> 3.4%."""
    if is_missing(value):
        return MISSING
    return f"{100 * value:.1f}%" if abs(value) >= 0.001 else f"{100 * value:.2f}%"


def format_megabytes(value: float | None) -> str:
    if is_missing(value):
        return MISSING
    return f"{value:,.0f}"
