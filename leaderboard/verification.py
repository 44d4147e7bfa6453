"""The leaderboard's view of ``litbench verify``: the latest verification per benchmark and profile
(``<results>/verify/<benchmark>/<profile>-<stamp>.json``, schema ``records.VERIFY_SCHEMA``) as one
table, and a note on each claim whose re-run spread is larger than its ``detectable`` effect."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from leaderboard.records import CorruptRecordError, VerificationRecord, read_verification

VERIFY_TITLE = "Verification (committed records re-run)"
VERIFY_CAPTION = ("`litbench verify`: a seeded sample of ok records re-run from their own configs (same config hash) "
                  "on the machine named, metric by metric against the originals; 'verdicts equal' judges every claim "
                  "again with the re-runs in place of the originals; 'twice here' re-runs each record a second time "
                  "on that machine (--twice): runs that differ there are nondeterministic on one machine; 'caveats' counts "
                  "re-runs that reused a cached stage (not re-run itself) or executed code changed since the original's "
                  "commit (a difference there is not only the machine's)")
# Metrics measured on the wall clock (images/s): they differ run to run by nature, so they do not
# count against bit-identity and are left out of "largest difference".
TIMED_METRIC_NAMES = ("throughput", "latency")
TIMED_METRIC_SUFFIXES = ("_per_s", "_ms", "_seconds")


def is_timed_metric(name: str) -> bool:
    return name in TIMED_METRIC_NAMES or name.endswith(TIMED_METRIC_SUFFIXES)


VERIFY_HEADER = ["benchmark", "profile", "runs re-run", "bit-identical", "largest difference", "verdicts equal",
                 "twice here", "caveats", "original machine", "this machine", "verified"]


def latest_verifications(results_dir: str | Path, problems: list[str]) -> list[VerificationRecord]:
    """The newest readable verification of each (benchmark, profile); unreadable files become problems."""
    latest: dict[tuple[str, str], VerificationRecord] = {}
    for path in sorted((Path(results_dir) / "verify").glob("*/*.json")):
        try:
            record = read_verification(path)
        except CorruptRecordError as exc:
            problems.append(f"{exc}; delete it or rerun `litbench verify`")
            continue
        key = (record.benchmark, record.profile)
        if key not in latest or record.created_at >= latest[key].created_at:
            latest[key] = record
    return [latest[key] for key in sorted(latest)]


def format_difference(value: float | None) -> str:
    if value is None:
        return "metric lost"
    return "0" if value == 0 else f"{value:.2g}"


def largest_difference(record: VerificationRecord) -> str:
    """``acc 0.002 (dcagc/Cora/dcagc/cpu/seed-1)``: the metric and run with the largest |difference|."""
    worst = None
    for run in record.runs:
        for metric, value in run["max_abs_diff"].items():
            if metric in record.timed_metrics:
                continue
            rank = math.inf if value is None else value
            if worst is None or rank > worst[0]:
                worst = (rank, metric, value, run["run_id"])
    if worst is None:
        return "—"
    if worst[0] == 0:
        return "0"
    return f"{worst[1]} {format_difference(worst[2])} ({worst[3]})"


def _machine(hardware: dict, software: dict, threads: int | None = None) -> str:
    parts = [str(hardware.get("cpu") or "?"), f"{hardware.get('cores')} cores"]
    if hardware.get("gpu_names"):
        parts.append(", ".join(map(str, hardware["gpu_names"])))
    if threads:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    parts.append(f"torch {software.get('torch')}")
    return ", ".join(parts)


def verification_row(record: VerificationRecord) -> list[str]:
    runs = record.runs
    identical = sum(bool(run["identical"]) for run in runs)
    equal = sum(bool(claim["equal"]) for claim in record.claims)
    verdicts = ("equal" if equal == len(record.claims) else f"{len(record.claims) - equal} of "
                f"{len(record.claims)} changed") if record.claims else "no claims"
    twice = [run["twice"] for run in runs if run.get("twice")]
    twice_text = f"{sum(bool(t['identical']) for t in twice)} / {len(twice)} identical" if twice else "—"
    skipped = f" ({len(record.skipped)} skipped)" if record.skipped else ""
    originals = "; ".join(_machine(m["hardware"], m["software"]) for m in record.original_machines) or "—"
    here = record.machine
    return [record.benchmark, record.profile, f"{len(runs)}{skipped}", f"{identical} / {len(runs)}",
            largest_difference(record), verdicts, twice_text, caveats(record), originals,
            _machine(here.get("hardware", {}), here.get("software", {}), here.get("torch_threads")),
            record.created_at[:16]]


def caveats(record: VerificationRecord) -> str:
    """``1 reused a cached stage; 2 on changed code`` (or —)."""
    stages = sum(bool(run["rerun"].get("stages_reused")) for run in record.runs)
    changed = sum(run.get("code_changed_files") is None or run["code_changed_files"] > 0 for run in record.runs)
    parts = ([f"{stages} reused a cached stage"] if stages else []) + ([f"{changed} on changed code"] if changed else [])
    return "; ".join(parts) or "—"


def verification_rows(records: list[VerificationRecord]) -> list[list[str]]:
    return [verification_row(record) for record in records]


def annotate_claims(claims: pd.DataFrame, records: list[VerificationRecord]) -> pd.DataFrame:
    """Add a ``verification`` column: on each claim row whose metric moved more between machines
    (the latest verification of its benchmark and profile) than the claim's ``detectable`` effect,
    a note saying so; "" elsewhere."""
    spreads = {(record.benchmark, record.profile, claim["claim"], claim["dataset"]): (claim.get("spread"), record)
               for record in records for claim in record.claims}
    notes = []
    for row in claims.itertuples(index=False):
        spread, record = spreads.get((row.benchmark, row.profile, row.claim, str(row.dataset)), (None, None))
        detectable = float(row.detectable)
        if spread is not None and math.isfinite(detectable) and spread > detectable:
            unit = "% of the baseline" if row.relative else ""
            shown = f"{spread * 100:.2g}{unit}" if row.relative else f"{spread:.2g}"
            notes.append(f"re-run spread {shown} > detectable {detectable * 100 if row.relative else detectable:.2g}"
                         f"{unit} (litbench verify {record.created_at[:10]})")
        else:
            notes.append("")
    annotated = claims.copy()
    annotated["verification"] = pd.Series(notes, index=claims.index, dtype=str)
    return annotated
