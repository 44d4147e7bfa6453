"""Run records -> one tidy pandas DataFrame, one row per run.

Columns, in order:

- identity: ``benchmark, method, role, dataset, profile, seed, status`` (the CLI contract's first
  columns of ``results.csv``), then ``run_id, error_type, error_message``;
- ``metric/<name>`` for every metric any record reports (sorted), ``cost/<name>`` for every cost
  key (``records.COST_KEYS`` order, then any extra keys sorted); values are floats, NaN where a
  run did not report one;
- a hardware/software summary: ``accelerator, devices, world_size, num_nodes, strategy, cpu,
  gpu_names, python_version, torch_version, lightning_version, torchmetrics_version, git_sha,
  git_dirty, config_hash, started_at, finished_at, artifacts`` (``|``-joined paths of the files a
  run wrote for readers, relative to the results folder).

A record that cannot be read is a *problem* (one line naming the file and what is wrong), never a
crash: the leaderboard is built from whatever is readable.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard.records import COST_KEYS, CorruptRecordError, RecordStore, RunRecord

METRIC_PREFIX = "metric/"
COST_PREFIX = "cost/"

IDENTITY_COLUMNS = ("benchmark", "method", "role", "dataset", "profile", "seed", "status")
RUN_COLUMNS = ("run_id", "error_type", "error_message")
SYSTEM_COLUMNS = (
    "accelerator", "devices", "world_size", "num_nodes", "strategy", "cpu", "gpu_names",
    "python_version", "torch_version", "lightning_version", "torchmetrics_version",
    "git_sha", "git_dirty", "config_hash", "started_at", "finished_at", "artifacts", "metered_stage",
)
# Cost entries that are labels, not numbers: the runner names the cached stage whose training speed a
# run that trained nothing itself reports (benchmarks/runner.py); they become plain text columns.
COST_LABELS = ("metered_stage",)

# record.software key -> frame column; "torch" alone would read like a tensor, not a version.
_SOFTWARE_COLUMNS = {
    "python": "python_version", "torch": "torch_version", "lightning": "lightning_version",
    "torchmetrics": "torchmetrics_version", "git_sha": "git_sha", "git_dirty": "git_dirty",
}
_HARDWARE_COLUMNS = ("accelerator", "devices", "world_size", "num_nodes", "strategy", "cpu")


def metric_column(name: str) -> str:
    return METRIC_PREFIX + name


def cost_column(name: str) -> str:
    return COST_PREFIX + name


def metric_names(frame: pd.DataFrame) -> list[str]:
    return [column.removeprefix(METRIC_PREFIX) for column in frame.columns if column.startswith(METRIC_PREFIX)]


def cost_names(frame: pd.DataFrame) -> list[str]:
    return [column.removeprefix(COST_PREFIX) for column in frame.columns if column.startswith(COST_PREFIX)]


def load_records(results_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable record under ``results_dir``, plus one problem line per unreadable one."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return [], [f"{results_dir}: no such results folder; run `litbench run` first or pass --results"]
    records: list[RunRecord] = []
    problems: list[str] = []
    for item in RecordStore(results_dir).iter_records():
        if isinstance(item, CorruptRecordError):
            problems.append(str(item))
        else:
            records.append(item)
    return records, problems


def load_frame(results_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The tidy run table of ``results_dir`` and the problems met while reading it."""
    records, problems = load_records(results_dir)
    frame = records_to_frame(records, problems=problems)
    return frame, problems


def records_to_frame(records: list[RunRecord], *, problems: list[str]) -> pd.DataFrame:
    """One row per record; records with malformed fields are skipped and appended to ``problems``."""
    rows: list[dict[str, Any]] = []
    for record in records:
        try:
            rows.append(_record_row(record, problems=problems))
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{record.run_id}: {exc}; delete the record or re-run it with --force")
    metric_keys = sorted({key for row in rows for key in row if key.startswith(METRIC_PREFIX)})
    extra_costs = sorted({key for row in rows for key in row if key.startswith(COST_PREFIX)}
                         - {cost_column(name) for name in COST_KEYS})
    columns = [*IDENTITY_COLUMNS, *RUN_COLUMNS, *metric_keys,
               *(cost_column(name) for name in COST_KEYS), *extra_costs, *SYSTEM_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [column for column in columns if column.startswith((METRIC_PREFIX, COST_PREFIX))]
    frame[numeric] = frame[numeric].astype(float)
    frame["seed"] = frame["seed"].astype(int)
    return frame.sort_values(["benchmark", "dataset", "profile", "method", "seed"], kind="stable",
                             ignore_index=True)


def _record_row(record: RunRecord, *, problems: list[str]) -> dict[str, Any]:
    for name in ("benchmark", "method", "role", "dataset", "profile"):
        if not isinstance(getattr(record, name), str) or not getattr(record, name):
            raise ValueError(f"field {name!r} must be a non-empty string, got {getattr(record, name)!r}")
    seed = record.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    metrics = _mapping(record.metrics, field_name="metrics")
    cost = _mapping(record.cost, field_name="cost")
    hardware = _mapping(record.hardware, field_name="hardware")
    software = _mapping(record.software, field_name="software")
    error = _mapping(record.error, field_name="error")

    row: dict[str, Any] = {name: getattr(record, name) for name in IDENTITY_COLUMNS}
    row["run_id"] = record.run_id
    # A failed run without an error object still needs a type to be counted by.
    row["error_type"] = str(error.get("type") or "unknown error") if not record.ok else ""
    row["error_message"] = str(error.get("message") or "") if not record.ok else ""
    for name, value in metrics.items():
        row[metric_column(str(name))] = _number(value, where=f"{record.run_id}: metric {name!r}", problems=problems)
    for name in COST_LABELS:
        row[name] = str(cost[name]) if cost.get(name) is not None else ""
    for name, value in cost.items():
        if name in COST_LABELS:
            continue
        row[cost_column(str(name))] = _number(value, where=f"{record.run_id}: cost {name!r}", problems=problems)
    for name in _HARDWARE_COLUMNS:
        row[name] = hardware.get(name)
    gpu_names = hardware.get("gpu_names")
    row["gpu_names"] = ", ".join(map(str, gpu_names)) if isinstance(gpu_names, (list, tuple)) else (gpu_names or "")
    for key, column in _SOFTWARE_COLUMNS.items():
        row[column] = software.get(key)
    row["config_hash"] = record.config_hash
    row["started_at"] = record.started_at
    row["finished_at"] = record.finished_at
    row["artifacts"] = "|".join(record.artifacts)  # paths relative to the results folder
    return row


def _mapping(value: Any, *, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field_name} must be an object, got {type(value).__name__}")
    return value


def _number(value: Any, *, where: str, problems: list[str]) -> float:
    """A metric or cost as a float; null is a legitimately missing value, anything else a problem."""
    if value is None:
        return math.nan
    if isinstance(value, Real):
        return float(value)
    problems.append(f"{where} is not a number ({value!r}); shown as missing")
    return math.nan
