"""Calibration sweeps: which value of a scaled profile's hyper-parameter the validation split chose.

``litbench sweep`` (``benchmarks.calibrate``) trains one method once per value and seed, scores each
run with its own ``test_step`` on the datamodule's *validation* split (never the test split), and
writes the run records under ``<results>/calibration/<benchmark>/<sweep id>/<value>/`` plus one
summary ``<results>/calibration/<benchmark>/<sweep id>.json`` (schema ``litbench.calibration/1``)::

    schema, benchmark, method, dataset, profile, parameter, metric, higher_is_better, split ("val"),
    seeds, values: [{value, mean, std, n, runs: [record paths relative to the results folder]}],
    chosen (the value with the best mean over the runs that all seeds finished; null when none),
    profile_value (what the profile resolved the parameter to when swept), command, finished_at

Run records under ``calibration/`` are not leaderboard runs (``RecordStore`` skips the folder), so a
validation score is never judged as a result; the leaderboard shows each sweep as one table row,
with whether the committed records of that method and profile ran with the chosen value (read from
their configs: a profile changed after the sweep shows as what the records used, not as the value
it had when swept).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from leaderboard.formatting import format_mean_std
from leaderboard.records import CorruptRecordError, read_record

CALIBRATION_SCHEMA = "litbench.calibration/1"
CALIBRATION_DIR = "calibration"
SUMMARY_KEYS = ("benchmark", "method", "dataset", "profile", "parameter", "metric", "higher_is_better", "split",
                "seeds", "values", "chosen", "profile_value", "command", "finished_at")
CALIBRATION_HEADER = ["benchmark", "method", "dataset", "profile", "parameter", "validation metric (mean ± std (n))",
                      "chosen", "records use", "command"]


CALIBRATION_TITLE = "Calibration sweeps"
CALIBRATION_CAPTION = ("`litbench sweep`: a scaled profile's hyper-parameter chosen on the validation split, "
                       "never on test; the runs are committed under results/calibration/")


class MalformedSweepError(ValueError):
    pass


def validate_summary(summary: Any) -> dict[str, Any]:
    """The summary when it has the schema and every key; MalformedSweepError naming what is wrong."""
    if not isinstance(summary, dict):
        raise MalformedSweepError(f"expected an object, got {type(summary).__name__}")
    if summary.get("schema") != CALIBRATION_SCHEMA:
        raise MalformedSweepError(f"schema {summary.get('schema')!r} is not {CALIBRATION_SCHEMA!r}")
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise MalformedSweepError(f"missing {missing[0]!r}")
    if summary["split"] != "val":
        raise MalformedSweepError(f"split {summary['split']!r}: a calibration sweep scores the validation split")
    for entry in summary["values"]:
        if not isinstance(entry, dict) or not {"value", "mean", "std", "n"} <= set(entry):
            raise MalformedSweepError(f"a values entry needs value, mean, std and n, got {entry!r}")
    return summary


def sweep_rows(results_dir: str | Path, problems: list[str]) -> list[list[str]]:
    """One CALIBRATION_HEADER row per sweep summary; unreadable ones are listed in ``problems``."""
    rows = []
    for path in sorted((Path(results_dir) / CALIBRATION_DIR).glob("*/*.json")):
        try:
            summary = validate_summary(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable calibration sweep ({exc}); delete it or rerun `litbench sweep`")
            continue
        rows.append(sweep_row(summary, record_values=recorded_values(results_dir, summary)))
    return rows


def recorded_values(results_dir: str | Path, summary: dict[str, Any]) -> list[Any]:
    """The distinct values of the swept parameter(s) in the configs of the ok run records of the
    sweep's benchmark, dataset, method and profile (a list per record for a multi-parameter sweep)."""
    parameters = str(summary["parameter"]).split("+")
    folder = Path(results_dir) / str(summary["benchmark"]) / str(summary["dataset"]) / str(summary["method"]) / str(summary["profile"])
    distinct: list[Any] = []
    for path in sorted(folder.glob("seed-*.json")):
        try:
            record = read_record(path)
        except CorruptRecordError:
            continue  # the run table reports unreadable records
        if not record.ok:
            continue
        values = [config_value(record.config, parameter) for parameter in parameters]
        value = values[0] if len(values) == 1 else values
        if value not in distinct:
            distinct.append(value)
    return distinct


def config_value(config: dict[str, Any], parameter: str) -> Any:
    """The value at a dotted ``parameter`` path of a resolved run config (``stages.<name>.…`` looks in
    ``litbench.stages``); None when the config leaves it to the class default."""
    parts = [part for part in parameter.strip().split(".") if part]
    if parts and parts[0] == "stages":
        stages = (config.get("litbench") or {}).get("stages") or []
        node: Any = next((stage for stage in stages if len(parts) > 1 and stage.get("name") == parts[1]), None)
        parts = parts[2:]
    else:
        node = config
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return copy.deepcopy(node)


def sweep_row(summary: dict[str, Any], *, record_values: list[Any]) -> list[str]:
    direction = "↑" if summary["higher_is_better"] else "↓"
    values = "; ".join(f"{_value_text(entry['value'])}: {format_mean_std(_float(entry['mean']), _float(entry['std']), int(entry['n']))}"
                       for entry in summary["values"])
    chosen = summary["chosen"]
    if not record_values:
        uses = f"no {summary['profile']} records (the profile had {_value_text(summary['profile_value'])} when swept)"
    elif len(record_values) > 1:
        uses = "mixed: " + ", ".join(_value_text(value) for value in record_values)
    elif chosen is None:
        uses = _value_text(record_values[0])
    elif _unset(record_values[0]):
        # a value the configs leave to the class default cannot be compared from the records alone
        uses = f"{_value_text(record_values[0])} (— = the class default, not in the records' configs)"
    else:
        uses = f"{_value_text(record_values[0])} ({'= chosen' if record_values[0] == chosen else 'differs from the chosen value'})"
    return [str(summary["benchmark"]), str(summary["method"]), str(summary["dataset"]), str(summary["profile"]),
            str(summary["parameter"]), f"{summary['metric']} {direction} on val: {values}",
            "none (a value lost a seed)" if chosen is None else _value_text(chosen), uses, str(summary["command"])]


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(item) for item in value) + "]"
    return "—" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, list) and None in value)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
