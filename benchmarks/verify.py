"""`litbench verify`: re-run a seeded sample of committed ok records on this machine and compare.

Each sampled record is re-run from its own resolved config (its ``config_hash`` is checked first:
a config that no longer hashes to the record's hash is skipped, never re-run under another name)
into a scratch folder, so the committed results folder is never written; its bytes are compared
before and after to prove it. The sample is seeded and stratified: per benchmark, methods take
turns in a seeded order and each method gives a seeded pick of its seeds/datasets.

The comparison is metric by metric (bit-identical, and the largest |difference|), then claim by
claim: each claim is judged by ``leaderboard.claims`` twice, from the committed records and from
the same records with the re-runs in place of their originals, and the two verdicts compared.
``--twice`` re-runs every sampled record a second time here (its own stage cache, so cached stages
are rebuilt too): two runs that differ on one machine are nondeterministic, whatever the originals say.

Re-runs happen in this process, one after another, with the torch threads of ``$LITBENCH_NUM_THREADS``
(a thread count changes the order of floating-point reductions, so compare like with like).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.errors import UsageError
from benchmarks.resolve import identity_of
from leaderboard.claims import judge_claims
from leaderboard.frame import load_records, records_to_frame
from leaderboard.records import (RunRecord, VerificationRecord, config_hash, utc_now, verification_path,
                                 write_json_atomic)
from leaderboard.report import resolve_specs
from leaderboard.verification import is_timed_metric

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a run executes (specs are not: the record's config is re-run); a run whose code differs from
# its original's is not a like-for-like machine comparison.
CODE_PATHS = ("modules", "datamodules", "benchmarks", ":!benchmarks/specs", ":!benchmarks/suites")

@dataclass
class Rerun:
    original: RunRecord
    rerun: RunRecord
    twice: RunRecord | None = None


# -- selection ----------------------------------------------------------------------------------


def stratified_sample(records: list[RunRecord], *, per_benchmark: int | None, seed: int) -> list[RunRecord]:
    """``per_benchmark`` records (None: all), methods taking turns in a seeded order, each method's
    records in a seeded order; the same records for the same seed and records."""
    ordered = sorted(records, key=lambda record: record.run_id)
    if per_benchmark is None:
        return ordered
    rng = random.Random(seed)
    by_method: dict[str, list[RunRecord]] = {}
    for record in ordered:
        by_method.setdefault(record.method, []).append(record)
    methods = sorted(by_method)
    rng.shuffle(methods)
    for method in methods:
        rng.shuffle(by_method[method])
    picked: list[RunRecord] = []
    while len(picked) < per_benchmark and any(by_method.values()):
        for method in methods:
            if by_method[method] and len(picked) < per_benchmark:
                picked.append(by_method[method].pop(0))
    return picked


def select(records: list[RunRecord], *, benchmarks: list[str], known: set[str], profile: str,
           per_benchmark: int | None, seed: int) -> dict[str, list[RunRecord]]:
    """The sample per benchmark; bad input (unknown benchmark, no ok records) raises UsageError."""
    names = benchmarks or sorted({record.benchmark for record in records if record.profile == profile})
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r} (known: {', '.join(sorted(known)) or 'none'}); "
                         "`litbench list` shows them")
    chosen = {}
    for name in names:
        ok = [record for record in records if record.benchmark == name and record.profile == profile and record.ok]
        if not ok:
            raise UsageError(f"no ok records of {name!r} in profile {profile!r} to verify; run "
                             f"`litbench run {name} --profile {profile}` first or pass --results DIR")
        chosen[name] = stratified_sample(ok, per_benchmark=per_benchmark, seed=seed)
    if not chosen:
        raise UsageError(f"no ok records in profile {profile!r} to verify; run `litbench run` first or pass --results DIR")
    return chosen


# -- re-running ---------------------------------------------------------------------------------


def rerun_config(record: RunRecord, *, data_dir: str | None, data_cache: Path) -> dict[str, Any]:
    """The record's config with this machine's data root and a scratch data cache; the hash must
    still be the record's (locations are not part of it)."""
    config = copy.deepcopy(record.config)
    data_args = config.setdefault("data", {}).setdefault("init_args", {})
    recorded_root = data_args.get("data_dir")
    if recorded_root is not None and data_dir is not None:
        data_args["data_dir"] = str(Path(data_dir).resolve())
    elif recorded_root is not None and not Path(str(recorded_root)).is_dir():
        raise UsageError(f"{record.run_id} read its data from {recorded_root!r}, which is not here; "
                         "pass --data-dir (a data root like ../shared/data)")
    if "cache_dir" in data_args:
        data_args["cache_dir"] = str(data_cache)
    return config


def hash_problem(record: RunRecord, config: dict[str, Any]) -> str:
    """Why the record cannot be re-run as it was, or "" when its config still hashes to its hash."""
    actual = config_hash(identity_of(config))
    if actual != record.config_hash:
        return f"its config hashes to {actual}, not the recorded {record.config_hash} (edited record?)"
    return ""


def tree_digest(root: Path, benchmarks: list[str]) -> dict[str, str]:
    """sha256 of every file under ``root/<benchmark>/`` (the committed records and their artifacts)."""
    digests = {}
    for name in benchmarks:
        for path in sorted((root / name).rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


# -- comparison ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def code_changes(git_sha: str | None) -> int | None:
    """Files the run executes (CODE_PATHS) that differ between ``git_sha`` and this working tree;
    None when that commit is unknown here."""
    if not git_sha:
        return None
    try:
        diff = subprocess.run(["git", "diff", "--name-only", git_sha, "--", *CODE_PATHS], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return len(diff.stdout.split()) if diff.returncode == 0 else None


def metric_differences(original: dict[str, Any], rerun: dict[str, Any]) -> tuple[bool, dict[str, float | None]]:
    """(bit-identical?, {metric: |difference|}); None where one side lacks the metric or has no value.
    Timed metrics (``is_timed_metric``: measured on the wall clock) differ and do not count against identity."""
    identical = set(original) == set(rerun)
    differences: dict[str, float | None] = {}
    for name in sorted(set(original) | set(rerun)):
        a, b = original.get(name), rerun.get(name)
        if a is None and b is None and name in original and name in rerun:
            differences[name] = 0.0
            continue
        if a is None or b is None:
            differences[name], identical = None, False
            continue
        identical = identical and (float(a) == float(b) or is_timed_metric(name))
        differences[name] = abs(float(a) - float(b))
    return identical, differences


def largest(differences: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per metric the largest difference; None when any run lost or gained the metric."""
    spread: dict[str, float | None] = {}
    for entry in differences:
        for name, value in entry.items():
            if name in spread and spread[name] is None:
                continue
            spread[name] = None if value is None else max(value, spread.get(name) or 0.0)
    return spread


def claim_comparison(records: list[RunRecord], reruns: list[Rerun], *, benchmark: str, profile: str,
                     spec: dict[str, Any], spread: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each claim's verdict from the committed records and with the re-runs in their place."""
    replaced = {item.original.run_id: item.rerun for item in reruns}
    mine = [record for record in records if record.benchmark == benchmark]
    frames = [records_to_frame(chosen, problems=[])
              for chosen in (mine, [replaced.get(record.run_id, record) for record in mine])]
    verdicts = [judge_claims(frame, benchmark=benchmark, metrics=dict(spec.get("metrics") or {}),
                             claims=list(spec.get("claims") or []), gates=spec.get("gates"), problems=[])
                for frame in frames]
    before, after = (table[table["profile"] == profile].set_index(["claim", "dataset"]) for table in verdicts)
    rows = []
    for (claim, dataset), row in before.iterrows():
        verdict_rerun = after.loc[(claim, dataset), "verdict"] if (claim, dataset) in after.index else None
        claim_spread = spread.get(row["metric"])
        if claim_spread is not None and row["relative"]:
            baseline = frames[0]
            values = baseline[(baseline["method"] == row["baseline"]) & (baseline["dataset"] == dataset)
                              & (baseline["profile"] == profile)][f"metric/{row['metric']}"].abs().mean()
            claim_spread = claim_spread / values if values and math.isfinite(values) else None
        rows.append({"claim": str(claim), "dataset": str(dataset), "profile": profile, "metric": row["metric"],
                     "verdict_original": row["verdict"], "verdict_rerun": verdict_rerun,
                     "equal": verdict_rerun == row["verdict"], "detectable": _finite(row["detectable"]),
                     "spread": claim_spread})
    return rows


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _machines(records: list[RunRecord]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        hardware = {k: v for k, v in record.hardware.items() if k not in ("world_size",)}
        software = {k: v for k, v in record.software.items() if k not in ("git_sha", "git_dirty")}
        key = repr((sorted(hardware.items()), sorted(software.items())))
        seen.setdefault(key, {"hardware": hardware, "software": software, "runs": 0})["runs"] += 1
    return list(seen.values())


# -- the command ----------------------------------------------------------------------------------


Execute = Callable[..., RunRecord]


def verify_benchmark(benchmark: str, sample: list[RunRecord], *, all_records: list[RunRecord], profile: str,
                     spec: dict[str, Any], data_dir: str | None, scratch: Path, twice: bool, command: str,
                     sample_info: dict[str, Any], execute: Execute, cache_dir: Path | None = None,
                     progress: Callable[[str], None] = lambda line: None) -> VerificationRecord:
    """Re-run ``sample`` (twice with ``twice``) under ``scratch`` and compare it with the originals.
    ``cache_dir`` (e.g. results/cache) reuses its cached stages and data instead of fresh ones per copy."""
    import torch

    from benchmarks.runner import hardware_info, software_versions

    reruns: list[Rerun] = []
    skipped: list[dict[str, str]] = []
    for index, record in enumerate(sample, 1):
        config = rerun_config(record, data_dir=data_dir, data_cache=cache_dir or scratch / "data-cache")
        problem = hash_problem(record, config)
        if problem:
            skipped.append({"run_id": record.run_id, "reason": problem})
            progress(f"skipped {record.run_id}: {problem}")
            continue
        runs = [execute(config, results_dir=scratch / f"records-{copy_}", cache_dir=cache_dir or scratch / f"stages-{copy_}",
                        wandb_mode="disabled", spec_snapshot=record.spec, write=False)
                for copy_ in ((1, 2) if twice else (1,))]
        reruns.append(Rerun(original=record, rerun=runs[0], twice=runs[1] if twice else None))
        identical, _ = metric_differences(record.metrics, runs[0].metrics)
        progress(f"[{index}/{len(sample)}] {record.run_id}: {runs[0].status}, "
                 f"{'identical' if identical and runs[0].ok else 'changed'}")
    entries, differences = [], []
    for item in reruns:
        identical, difference = metric_differences(item.original.metrics, item.rerun.metrics)
        identical = identical and item.rerun.ok
        differences.append(difference)
        twice_entry = None
        if item.twice is not None:
            same, twice_difference = metric_differences(item.rerun.metrics, item.twice.metrics)
            twice_entry = {"identical": same and item.twice.ok, "max_abs_diff": twice_difference}
        entries.append({"run_id": item.original.run_id, "method": item.original.method,
                        "dataset": item.original.dataset, "seed": item.original.seed,
                        "config_hash": item.original.config_hash, "status": item.rerun.status,
                        "error": (item.rerun.error or {}).get("message") if not item.rerun.ok else None,
                        "identical": identical, "max_abs_diff": difference,
                        "original": {"metrics": item.original.metrics, "finished_at": item.original.finished_at,
                                     "git_sha": item.original.software.get("git_sha")},
                        "code_changed_files": code_changes(item.original.software.get("git_sha")),
                        "rerun": {"metrics": item.rerun.metrics, "run_s": item.rerun.cost.get("run_s"),
                                  "git_sha": item.rerun.software.get("git_sha"),
                                  "stages_reused": sorted(name for name, stage in (item.rerun.stages or {}).items()
                                                          if stage.get("cache_hit"))},
                        "twice": twice_entry})
    spread = largest(differences)
    claims = claim_comparison(all_records, reruns, benchmark=benchmark, profile=profile, spec=spec, spread=spread)
    trainer = sample[0].config.get("trainer", {}) if sample else {}
    machine = {"hardware": {k: v for k, v in hardware_info(trainer, None).items() if k != "world_size"},
               "software": software_versions(), "torch_threads": torch.get_num_threads()}
    timed = sorted({name for difference in differences for name in difference if is_timed_metric(name)})
    return VerificationRecord(benchmark=benchmark, profile=profile, created_at=utc_now(), command=command,
                              sample=sample_info, machine=machine, timed_metrics=timed,
                              original_machines=_machines([item.original for item in reruns]),
                              runs=entries, skipped=skipped, spread=spread, claims=claims)


def run_verify(*, results_dir: Path, benchmarks: list[str], profile: str, per_benchmark: int | None, seed: int,
               twice: bool, data_dir: str | None, scratch: Path | None, command: str,
               specs: dict[str, dict[str, Any]], progress: Callable[[str], None] = lambda line: None,
               execute: Execute | None = None, cache_dir: Path | None = None,
               ) -> tuple[list[tuple[VerificationRecord, Path]], list[str]]:
    """Verify each selected benchmark in the order given; write one verification record per benchmark
    under ``results_dir/verify/`` as soon as it is done. Returns (written, withheld): a benchmark whose
    committed records changed while it was re-run (verify writes only to scratch, so another process
    wrote them) gets no verification record, one line in ``withheld``, and the others go on."""
    if execute is None:
        from benchmarks.runner import execute_run as execute
    if not results_dir.is_dir():
        raise UsageError(f"no results folder {str(results_dir)!r}; run `litbench run` first or pass --results DIR")
    records, _ = load_records(results_dir)
    resolved = resolve_specs(records, specs)
    chosen = select(records, benchmarks=benchmarks, known=set(resolved) | {r.benchmark for r in records},
                    profile=profile, per_benchmark=per_benchmark, seed=seed)
    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="litbench-verify-")) if scratch is None else scratch
    written, withheld = [], []
    try:
        for name, sample in chosen.items():
            progress(f"{name}: re-running {len(sample)} of its {profile} records")
            before = tree_digest(results_dir, [name])
            verification = verify_benchmark(
                name, sample, all_records=records, profile=profile, spec=resolved.get(name, {}), data_dir=data_dir,
                scratch=scratch / name, twice=twice, command=command, execute=execute, progress=progress,
                cache_dir=cache_dir, sample_info={"per_benchmark": per_benchmark, "seed": seed, "twice": twice,
                                                  "cache": str(cache_dir) if cache_dir else "fresh"})
            after = tree_digest(results_dir, [name])
            if after != before:  # the verification is written only once its records are proven untouched
                changed = sorted(set(before.items()) ^ set(after.items()))[0][0]
                withheld.append(f"{results_dir / changed} changed while verify re-ran {name} (another process "
                                "wrote it?); its verification was not written")
                progress(withheld[-1])
                continue
            path = verification_path(results_dir, benchmark=name, profile=profile, stamp=utc_now("%Y%m%dT%H%M%S"))
            write_json_atomic(path, verification.to_dict())
            written.append((verification, path))
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return written, withheld
