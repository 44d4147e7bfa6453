"""Judge a paper's claims from multi-seed run records.

A claim says that ``method`` beats ``baseline`` on ``metric``, optionally by at least ``margin``
(in the metric's units) and optionally only on some ``datasets``::

    {id, text, metric, method, baseline, datasets: [..] (optional), margin: 0.0 (optional)}

The metric's direction comes from the benchmark's ``metrics: {primary, higher_is_better}``.

Verdict rule
------------
A claim is judged separately for every (dataset, profile) of its benchmark that has records
(restricted to ``datasets`` when the claim lists them):

1. Take the ``ok`` runs of ``method`` and of ``baseline`` and pair them by seed (a seed missing on
   either side is dropped); ``n`` is the number of pairs.
2. For each pair, the improvement is ``u_s = sign * (m_s - b_s)`` with ``sign = +1`` when higher is
   better and ``-1`` when lower is better, so ``u_s > 0`` always means "the method did better".
   The claim's test statistic is ``d_s = u_s - margin``.
3. ``n < 2`` -> **inconclusive** (one seed says nothing about seed variance).
4. Otherwise take the 95% Student-t interval of the mean of ``d_s``:
   ``mean ± t(0.975, n - 1) * sd / sqrt(n)`` (sample sd, ddof=1; sd = 0 gives a point interval).
   - interval entirely above 0 (``ci_low > 0``) -> **reproduced**;
   - mean ≤ 0 -> **not reproduced**: the point estimate does not support the claim;
   - otherwise (mean > 0 but the interval reaches 0) -> **inconclusive**: more seeds are needed.

Reported numbers: ``diff_mean``, ``ci_low`` and ``ci_high`` are the mean improvement ``u`` and its
interval, *without* the margin subtracted, so they stay in the metric's units and read the same
for every claim ("the method is 0.05 better, 95% CI [0.02, 0.08]"); the verdict compares them with
``margin`` (``ci_low > margin``, ``diff_mean <= margin``), which is the rule above on ``d_s``.
``claims.csv`` therefore carries a trailing ``margin`` column. Positive numbers always favour the
method, also for lower-is-better metrics.

A negative ``margin`` states non-inferiority: "accuracy stays within 2 points of the baseline" is
``margin: -0.02`` (reproduced when the whole interval of ``u`` lies above -0.02).

A claim whose metric has no entry in ``higher_is_better`` cannot be judged (there is no "better"),
and is reported as malformed rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from leaderboard.frame import metric_column
from leaderboard.records import STATUS_OK

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

CONFIDENCE = 0.95
CLAIM_COLUMNS = ("benchmark", "dataset", "profile", "claim", "metric", "method", "baseline", "n",
                 "diff_mean", "ci_low", "ci_high", "verdict")
# Not in claims.csv's fixed columns but needed to read a verdict: see "Reported numbers" above.
CLAIM_EXTRA_COLUMNS = ("margin", "text")
CLAIMS_CSV_COLUMNS = (*CLAIM_COLUMNS, "margin")


class MalformedClaimError(ValueError):
    """A claim that cannot be judged (missing keys, metric without a direction)."""


@dataclass(frozen=True)
class PairedComparison:
    n: int
    diff_mean: float
    ci_low: float
    ci_high: float
    verdict: str


def judge_improvements(improvements: Sequence[float], *, margin: float = 0.0,
                       confidence: float = CONFIDENCE) -> PairedComparison:
    """Apply the verdict rule to per-seed improvements ``u_s`` (positive = method better)."""
    values = np.asarray(list(improvements), dtype=float)
    n = int(values.size)
    if n == 0:
        return PairedComparison(n=0, diff_mean=math.nan, ci_low=math.nan, ci_high=math.nan, verdict=INCONCLUSIVE)
    mean = float(values.mean())
    if n < 2:
        return PairedComparison(n=n, diff_mean=mean, ci_low=math.nan, ci_high=math.nan, verdict=INCONCLUSIVE)
    sd = float(values.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    ci_low, ci_high = mean - half_width, mean + half_width
    if ci_low > margin:
        verdict = REPRODUCED
    elif mean <= margin:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return PairedComparison(n=n, diff_mean=mean, ci_low=ci_low, ci_high=ci_high, verdict=verdict)


def validate_claim(claim: Any, *, higher_is_better: dict[str, bool]) -> None:
    """Raise MalformedClaimError with a one-line reason when ``claim`` cannot be judged."""
    if not isinstance(claim, dict):
        raise MalformedClaimError(f"a claim must be a mapping, got {claim!r}")
    label = claim.get("id", "<claim without id>")
    missing = [key for key in ("id", "metric", "method", "baseline") if not claim.get(key)]
    if missing:
        raise MalformedClaimError(f"claim {label!r}: missing {missing}")
    if claim["metric"] not in higher_is_better:
        raise MalformedClaimError(
            f"claim {label!r}: metric {claim['metric']!r} has no direction in metrics.higher_is_better")
    datasets = claim.get("datasets")
    if datasets is not None and not isinstance(datasets, (list, tuple)):
        raise MalformedClaimError(f"claim {label!r}: datasets must be a list, got {datasets!r}")
    margin = claim.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise MalformedClaimError(f"claim {label!r}: margin must be a number, got {margin!r}")


def judge_claim(frame: pd.DataFrame, *, benchmark: str, claim: dict[str, Any],
                higher_is_better: dict[str, bool]) -> list[dict[str, Any]]:
    """One verdict row per (dataset, profile) of ``benchmark`` that has records of the claim's methods."""
    validate_claim(claim, higher_is_better=higher_is_better)
    metric, method, baseline = claim["metric"], claim["method"], claim["baseline"]
    margin = float(claim.get("margin") or 0.0)
    sign = 1.0 if higher_is_better[metric] else -1.0
    runs = frame[(frame["benchmark"] == benchmark) & frame["method"].isin([method, baseline])]
    if claim.get("datasets") is not None:
        runs = runs[runs["dataset"].isin([str(name) for name in claim["datasets"]])]
    column = metric_column(metric)
    rows: list[dict[str, Any]] = []
    for (dataset, profile), group in runs.groupby(["dataset", "profile"], sort=True):
        ok = group[group["status"] == STATUS_OK]
        if column in ok.columns:
            ok = ok[ok[column].notna()]
            method_by_seed = ok[ok["method"] == method].set_index("seed")[column]
            baseline_by_seed = ok[ok["method"] == baseline].set_index("seed")[column]
            paired = pd.concat({"method": method_by_seed, "baseline": baseline_by_seed}, axis=1, join="inner")
            improvements = sign * (paired["method"] - paired["baseline"])
        else:
            improvements = pd.Series([], dtype=float)
        result = judge_improvements(improvements.to_numpy(), margin=margin)
        rows.append({
            "benchmark": benchmark, "dataset": dataset, "profile": profile, "claim": claim["id"],
            "metric": metric, "method": method, "baseline": baseline, "n": result.n,
            "diff_mean": result.diff_mean, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "verdict": result.verdict, "margin": margin, "text": str(claim.get("text") or ""),
        })
    return rows


def judge_claims(frame: pd.DataFrame, *, benchmark: str, metrics: dict[str, Any],
                 claims: list[dict[str, Any]], problems: list[str] | None = None) -> pd.DataFrame:
    """Verdicts of every claim of one benchmark (columns CLAIM_COLUMNS + CLAIM_EXTRA_COLUMNS).

    A malformed claim raises MalformedClaimError, or, when ``problems`` is given, is appended to it
    as one line and skipped so the other claims are still judged.
    """
    higher_is_better = dict((metrics or {}).get("higher_is_better") or {})
    rows: list[dict[str, Any]] = []
    for claim in claims or []:
        try:
            rows.extend(judge_claim(frame, benchmark=benchmark, claim=claim, higher_is_better=higher_is_better))
        except MalformedClaimError as exc:
            if problems is None:
                raise
            problems.append(f"{benchmark}: {exc}")
    return claims_frame(rows)


def claims_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Verdict rows as a DataFrame with a fixed column order, also when there are none."""
    frame = pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, *CLAIM_EXTRA_COLUMNS])
    frame["n"] = frame["n"].astype(int)
    for column in ("diff_mean", "ci_low", "ci_high", "margin"):
        frame[column] = frame[column].astype(float)
    return frame
