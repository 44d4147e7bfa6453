"""`litbench sweep`: choose a scaled profile's hyper-parameter on the validation split.

Several parameters move together when ``--param`` is repeated and each value joins theirs with
``:`` (``--param model.init_args.pretrain_steps --param trainer.max_steps --values 50:450,100:500``
keeps the fine-tuning steps fixed while the pre-training steps change).

    litbench sweep tinymim tinymim --param model.init_args.pretrain_steps --values 50,100,300 \\
        --profile cpu --seeds 2 --data-dir ../shared/data

trains the method once per value and seed with ``--set PARAM=VALUE``, scores every run on the
datamodule's validation split (``evaluate_on="val"``: the run's own ``test_step`` on validation
batches, so no test label is ever seen), and writes the records and a summary that names the
chosen value (format: ``leaderboard.calibration``). The summary keeps the exact command, so a
reader can re-run the sweep; the leaderboard shows whether the committed records ran with the chosen value.
Stages are shared with ordinary runs through the same stage cache (a teacher does not depend on
which split the student is scored on).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.launch import LaunchOptions, plan_runs
from benchmarks.resolve import parse_set, resolve_run
from benchmarks.spec import BenchmarkSpec, SpecError
from leaderboard.calibration import CALIBRATION_DIR, CALIBRATION_SCHEMA, config_value
from leaderboard.records import STATUS_OK, RecordStore, utc_now, write_json_atomic


def sweep_id(*, method: str, dataset: str, profile: str, parameter: str) -> str:
    return _slug(f"{method}-{dataset}-{profile}-{parameter}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "value"


def profile_value(spec: BenchmarkSpec, *, method: str, dataset: str, profile: str, parameters: list[str]) -> Any:
    """What the profile resolves the parameters to today (one value, or a list for several)."""
    config = resolve_run(spec, method=method, dataset=dataset, profile=profile, seed=0).config
    values = [config_value(config, parameter) for parameter in parameters]
    return values[0] if len(values) == 1 else values


def run_sweep(specs: dict[str, BenchmarkSpec], *, benchmark: str, method: str, parameters: list[str], values: list[str],
              profile: str, dataset: str | None, seeds: int, metric: str | None, sets: list[str],
              data_dir: str | None, results_dir: Path, cache_dir: Path, workers: int | None, force: bool,
              command: str, execute: Callable[..., int]) -> tuple[Path, int]:
    """Run the sweep through ``execute`` (the CLI's plan runner); (summary path, failed runs)."""
    if benchmark not in specs:
        raise SpecError(f"unknown benchmark {benchmark!r} (known: {', '.join(sorted(specs))}); `litbench list` shows them")
    spec = specs[benchmark]
    if method not in spec.methods:
        raise SpecError(f"benchmark {benchmark!r} has no method {method!r} (it has: {', '.join(spec.methods)})")
    if profile not in spec.profiles:
        raise SpecError(f"benchmark {benchmark!r} has no profile {profile!r} (it has: {', '.join(spec.profiles)})")
    metric = metric or spec.primary_metric
    if metric not in spec.higher_is_better:
        raise SpecError(f"metric {metric!r} has no direction in {benchmark}'s metrics.higher_is_better, "
                        "so no value can be chosen by it")
    if len(values) < 2:
        raise SpecError("--values: a sweep needs at least two values, comma-separated")
    combinations = [text.split(":") if len(parameters) > 1 else [text] for text in values]
    wrong = [text for text, parts in zip(values, combinations) if len(parts) != len(parameters)]
    if wrong:
        raise SpecError(f"--values {wrong[0]!r}: give one value per --param ({len(parameters)}), joined by ':'")
    parameter = "+".join(parameters)
    dataset = dataset or spec.datasets_for(profile)[0]
    identifier = sweep_id(method=method, dataset=dataset, profile=profile, parameter=parameter)
    root = results_dir / CALIBRATION_DIR / benchmark
    failed = 0
    entries = []
    for text, parts in zip(values, combinations):
        assignments = [f"{name}={part}" for name, part in zip(parameters, parts)]
        parsed = [parse_set(assignment)[1] for assignment in assignments]
        value = parsed[0] if len(parsed) == 1 else parsed
        folder = root / identifier / _slug(text)
        plans = plan_runs(specs, benchmarks=[benchmark], profile=profile, methods=[method], datasets=[dataset],
                          seeds=seeds, sets=[*sets, *assignments], data_dir=data_dir,
                          cache_dir=str(cache_dir), evaluate_on="val")
        options = LaunchOptions(results_dir=folder, cache_dir=cache_dir, launcher="local", workers=workers,
                                force=force, wandb_mode="disabled", wandb_project="litbench-calibration")
        failed += execute(plans, specs=specs, options=options, profile=profile)
        entries.append(_summarise(folder, plans, value=value, metric=metric, results_dir=results_dir))
    complete = [entry for entry in entries if entry["n"] == seeds and entry["mean"] is not None]
    sign = 1.0 if spec.higher_is_better[metric] else -1.0
    chosen = max(complete, key=lambda entry: sign * entry["mean"])["value"] if complete else None
    summary = {
        "schema": CALIBRATION_SCHEMA, "benchmark": benchmark, "method": method, "dataset": dataset,
        "profile": profile, "parameter": parameter, "metric": metric,
        "higher_is_better": bool(spec.higher_is_better[metric]), "split": "val", "seeds": seeds,
        "values": entries, "chosen": chosen,
        "profile_value": profile_value(spec, method=method, dataset=dataset, profile=profile, parameters=parameters),
        "command": command, "finished_at": utc_now(),
    }
    path = root / f"{identifier}.json"
    write_json_atomic(path, summary)
    return path, failed


def _summarise(folder: Path, plans: list[Any], *, value: Any, metric: str, results_dir: Path) -> dict[str, Any]:
    """Mean, sample std and count of ``metric`` over the value's ok records of the planned runs."""
    wanted = {plan.run_id: plan.config_hash for plan in plans}
    scores, runs = [], []
    store = RecordStore(folder)
    for record in store.iter_records():
        if isinstance(record, Exception) or record.run_id not in wanted:
            continue
        if record.status != STATUS_OK or record.config_hash != wanted[record.run_id]:
            continue
        score = (record.metrics or {}).get(metric)
        if score is not None:
            scores.append(float(score))
            runs.append(str(store.path_for(record.run_id).relative_to(results_dir)))
    return {"value": value, "n": len(scores),
            "mean": float(np.mean(scores)) if scores else None,
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
            "runs": sorted(runs)}
