"""Judge a paper's claims from multi-seed run records.

A claim says that ``method`` beats ``baseline`` on ``metric``, optionally by at least ``margin``
(in the metric's units) and optionally only on some ``datasets``::

    {id, text, metric, method, baseline, datasets: [..], margin: 0.0, relative: false,
     min_effect: 0.0, note: "why it may not reproduce at this scale"}

The metric's direction comes from the benchmark's ``metrics: {primary, higher_is_better}``; the
arms' validity gates come from the benchmark's ``gates:`` (``leaderboard.gates``).

Verdict rule
------------
A claim is judged separately for every (dataset, profile) of its benchmark that has records
(restricted to ``datasets`` when the claim lists them):

1. Take the ``ok`` runs of ``method`` and of ``baseline`` and pair them by seed (a seed missing on
   either side is dropped); ``n`` is the number of pairs.
2. For each pair, the improvement is ``u_s = sign * (m_s - b_s)`` with ``sign = +1`` when higher is
   better and ``-1`` when lower is better, so ``u_s > 0`` always means "the method did better".
   A ``relative: true`` claim uses ``u_s = sign * (m_s - b_s) / |b_s|`` and states ``margin`` and
   ``min_effect`` as fractions of the baseline ("within 5 %" is ``margin: -0.05``).
3. **invalid** when the comparison cannot test the claim: an arm fails one of its gates on a
   paired seed, the two arms produced identical values on every paired seed, or a relative
   difference is undefined (the baseline is 0 on a seed). ``reason`` names the arm, the dataset
   and the gate.
4. ``n < 2`` -> **inconclusive** (one seed says nothing about seed variance).
5. Otherwise take the 95% Student-t interval of the mean of ``u_s``:
   ``mean ± t(0.975, n - 1) * sd / sqrt(n)`` (sample sd, ddof=1; sd = 0 gives a point interval).
   - the interval lies above the margin (``ci_low > margin``) -> **reproduced**;
   - the records rule the claim out -> **not reproduced**: the interval lies at or below the
     margin (``ci_high <= margin``), or, when the claim states ``min_effect`` (the smallest
     improvement the paper's claim implies), entirely below it (``ci_high < margin + min_effect``);
   - otherwise -> **inconclusive**: the interval reaches both sides, more seeds are needed.

The rule is symmetric: a mean on the wrong side of the margin with an interval that still reaches
above it is inconclusive, not a refutation.

Reported numbers: ``diff_mean``, ``ci_low`` and ``ci_high`` are the mean improvement ``u`` and its
interval, *without* the margin subtracted, so they stay in the metric's units (fractions of the
baseline for relative claims); positive numbers always favour the method. ``detectable`` is the
interval's half-width: the smallest effect these seeds could have told apart from no effect.
``claims.csv`` carries ``margin``, ``relative``, ``min_effect``, ``detectable`` and ``reason`` after
the contract's columns.

A negative ``margin`` states non-inferiority: "accuracy stays within 2 points of the baseline" is
``margin: -0.02`` (reproduced when the whole interval of ``u`` lies above -0.02).

A claim whose metric has no entry in ``higher_is_better`` cannot be judged (there is no "better"),
and is reported as malformed rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from leaderboard.frame import metric_column
from leaderboard.gates import ArmRuns, Gate, MalformedGateError, check_gates, parse_gate
from leaderboard.records import STATUS_OK

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
INVALID = "invalid"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, INVALID)

CONFIDENCE = 0.95
CLAIM_COLUMNS = ("benchmark", "dataset", "profile", "claim", "metric", "method", "baseline", "n",
                 "diff_mean", "ci_low", "ci_high", "verdict")
# Not in the contract's fixed columns but needed to read a verdict: see "Reported numbers" above.
CLAIMS_CSV_COLUMNS = (*CLAIM_COLUMNS, "margin", "relative", "min_effect", "detectable", "reason")
CLAIM_EXTRA_COLUMNS = ("margin", "relative", "min_effect", "detectable", "reason", "text", "note")
CLAIM_KEYS = {"id", "text", "metric", "method", "baseline", "datasets", "margin", "relative", "min_effect", "note"}


class MalformedClaimError(ValueError):
    """A claim that cannot be judged (missing keys, metric without a direction, bad gate)."""


@dataclass(frozen=True)
class PairedComparison:
    n: int
    diff_mean: float
    ci_low: float
    ci_high: float
    verdict: str

    @property
    def detectable(self) -> float:
        """Half-width of the interval: the smallest effect these seeds could have shown."""
        return (self.ci_high - self.ci_low) / 2


def judge_improvements(improvements: Sequence[float], *, margin: float = 0.0, min_effect: float = 0.0,
                       confidence: float = CONFIDENCE) -> PairedComparison:
    """Apply steps 4-5 of the verdict rule to per-seed improvements ``u_s`` (positive = method better)."""
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
    elif ci_high <= margin or (min_effect > 0 and ci_high < margin + min_effect):
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
    unknown = sorted(set(claim) - CLAIM_KEYS)
    if unknown:
        raise MalformedClaimError(f"claim {label!r}: unknown key {unknown[0]!r}")
    if claim["metric"] not in higher_is_better:
        raise MalformedClaimError(
            f"claim {label!r}: metric {claim['metric']!r} has no direction in metrics.higher_is_better")
    datasets = claim.get("datasets")
    if datasets is not None and not isinstance(datasets, (list, tuple)):
        raise MalformedClaimError(f"claim {label!r}: datasets must be a list, got {datasets!r}")
    for key in ("margin", "min_effect"):
        value = claim.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MalformedClaimError(f"claim {label!r}: {key} must be a number, got {value!r}")
    if claim.get("min_effect", 0.0) < 0:
        raise MalformedClaimError(f"claim {label!r}: min_effect must be >= 0 (an improvement), got {claim['min_effect']!r}")
    if not isinstance(claim.get("relative", False), bool):
        raise MalformedClaimError(f"claim {label!r}: relative must be true or false, got {claim['relative']!r}")


def parse_gates(raw_gates: Any, *, higher_is_better: dict[str, bool],
                methods: Sequence[str] | None = None) -> list[Gate]:
    """A benchmark's ``gates:`` list; MalformedClaimError when one cannot be checked."""
    if raw_gates is None:
        return []
    if not isinstance(raw_gates, list):
        raise MalformedClaimError(f"gates must be a list, got {type(raw_gates).__name__}")
    try:
        return [parse_gate(raw, higher_is_better=higher_is_better, methods=methods) for raw in raw_gates]
    except MalformedGateError as exc:
        raise MalformedClaimError(str(exc)) from None


def judge_claim(frame: pd.DataFrame, *, benchmark: str, claim: dict[str, Any],
                higher_is_better: dict[str, bool], gates: Sequence[Gate] = ()) -> list[dict[str, Any]]:
    """One verdict row per (dataset, profile) of ``benchmark`` that has records of the claim's methods."""
    validate_claim(claim, higher_is_better=higher_is_better)
    metric, method, baseline = claim["metric"], claim["method"], claim["baseline"]
    margin, min_effect = float(claim.get("margin") or 0.0), float(claim.get("min_effect") or 0.0)
    relative = bool(claim.get("relative", False))
    runs = frame[(frame["benchmark"] == benchmark) & frame["method"].isin([method, baseline])]
    if claim.get("datasets") is not None:
        runs = runs[runs["dataset"].isin([str(name) for name in claim["datasets"]])]
    rows: list[dict[str, Any]] = []
    for dataset, profile in runs[["dataset", "profile"]].drop_duplicates().itertuples(index=False):
        group = frame[(frame["benchmark"] == benchmark) & (frame["dataset"] == dataset)
                      & (frame["profile"] == profile) & (frame["status"] == STATUS_OK)]
        arm_runs = ArmRuns(values=group.drop_duplicates(["method", "seed"], keep="last").set_index(["method", "seed"]))
        paired = _paired_values(group, metric=metric, method=method, baseline=baseline)
        sign = 1.0 if higher_is_better[metric] else -1.0
        improvements = sign * (paired["method"] - paired["baseline"])
        reason = _invalid_reason(paired, arm_runs, gates=gates, claim=claim, dataset=str(dataset),
                                 relative=relative, higher_is_better=higher_is_better)
        if relative and bool((paired["baseline"] != 0).all()):
            improvements = improvements / paired["baseline"].abs()
        result = judge_improvements(improvements.to_numpy(), margin=margin, min_effect=min_effect)
        verdict = INVALID if reason else result.verdict
        if not reason and result.n < 2:
            reason = f"{result.n} paired seed{'s' if result.n != 1 else ''}: an interval needs at least 2"
        rows.append({
            "benchmark": benchmark, "dataset": dataset, "profile": profile, "claim": claim["id"],
            "metric": metric, "method": method, "baseline": baseline, "n": result.n,
            "diff_mean": result.diff_mean, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "verdict": verdict, "margin": margin, "relative": relative,
            "min_effect": min_effect if "min_effect" in claim else math.nan,
            "detectable": result.detectable, "reason": reason,
            "text": str(claim.get("text") or ""), "note": str(claim.get("note") or ""),
        })
    return sorted(rows, key=lambda row: (str(row["dataset"]), str(row["profile"])))


def _paired_values(group: pd.DataFrame, *, metric: str, method: str, baseline: str) -> pd.DataFrame:
    """Columns ``method`` and ``baseline``, one row per seed that both arms recorded the metric for."""
    column = metric_column(metric)
    if column not in group.columns:
        return pd.DataFrame({"method": pd.Series(dtype=float), "baseline": pd.Series(dtype=float)})
    recorded = group[group[column].notna()]
    by_seed = {name: recorded[recorded["method"] == name].drop_duplicates("seed", keep="last").set_index("seed")[column]
               for name in (method, baseline)}
    return pd.concat({"method": by_seed[method], "baseline": by_seed[baseline]}, axis=1, join="inner").sort_index()


def _invalid_reason(paired: pd.DataFrame, arm_runs: ArmRuns, *, gates: Sequence[Gate], claim: dict[str, Any],
                    dataset: str, relative: bool, higher_is_better: dict[str, bool]) -> str:
    """Why this comparison cannot test the claim (step 3 of the rule), or "" when it can."""
    if paired.empty:
        return ""
    seeds = list(paired.index)
    failures = [failure for arm in (claim["method"], claim["baseline"])
                for failure in check_gates(gates, arm_runs, method=arm, dataset=dataset, seeds=seeds,
                                           higher_is_better=higher_is_better)]
    # both arms failing one gate through the same shared record (of_method) is one reason, said once
    merged: dict[tuple, Any] = {}
    for failure in failures:
        key = (failure.gate.id, failure.gate.of_method, tuple(failure.failing)) if failure.gate.of_method else id(failure)
        if key in merged:
            merged[key] = replace(merged[key], method=f"{merged[key].method} and {failure.method}")
        else:
            merged[key] = failure
    reasons = [failure.reason(dataset=dataset) for failure in merged.values()]
    if not reasons and (paired["method"] == paired["baseline"]).all():
        reasons.append(f"{claim['method']} and {claim['baseline']} on {dataset} have identical "
                       f"{claim['metric']} on all {len(seeds)} paired seeds: the arms do not differ")
    if not reasons and relative and (paired["baseline"] == 0).any():
        seed = paired.index[paired["baseline"] == 0][0]
        reasons.append(f"{claim['baseline']} on {dataset} has {claim['metric']} = 0 on seed {seed}: "
                       "a relative difference is undefined")
    return "; ".join(reasons)


def judge_claims(frame: pd.DataFrame, *, benchmark: str, metrics: dict[str, Any],
                 claims: list[dict[str, Any]], gates: list[dict[str, Any]] | None = None,
                 problems: list[str] | None = None) -> pd.DataFrame:
    """Verdicts of every claim of one benchmark (columns CLAIM_COLUMNS + CLAIM_EXTRA_COLUMNS).

    A malformed claim (or gate list) raises MalformedClaimError, or, when ``problems`` is given, is
    appended to it as one line and skipped so the other claims are still judged. Malformed gates
    skip every claim: judging without them would hide arms that did not learn.
    """
    higher_is_better = dict((metrics or {}).get("higher_is_better") or {})
    try:
        parsed_gates = parse_gates(gates, higher_is_better=higher_is_better)
    except MalformedClaimError as exc:
        if problems is None:
            raise
        problems.append(f"{benchmark}: {exc}; no claim of it is judged")
        return claims_frame([])
    rows: list[dict[str, Any]] = []
    for claim in claims or []:
        try:
            rows.extend(judge_claim(frame, benchmark=benchmark, claim=claim, higher_is_better=higher_is_better,
                                    gates=parsed_gates))
        except MalformedClaimError as exc:
            if problems is None:
                raise
            problems.append(f"{benchmark}: {exc}")
    return claims_frame(rows)


def claims_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Verdict rows as a DataFrame with a fixed column order, also when there are none."""
    frame = pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, *CLAIM_EXTRA_COLUMNS])
    frame["n"] = frame["n"].astype(int)
    for column in ("diff_mean", "ci_low", "ci_high", "margin", "min_effect", "detectable"):
        frame[column] = frame[column].astype(float)
    frame["relative"] = frame["relative"].astype(bool)
    for column in ("reason", "text", "note"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame
