"""Tables of the perf records (``<results>/perf/<kind>/*.json``): ``litbench perf parity`` / ``threads`` /
``before-after``,
and ``suite``, which every ``litbench run`` that ran something writes (its wall time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

PARITY_HEADER = ["benchmark", "method", "dataset", "profile", "Lightning s/epoch", "plain loop s/epoch",
                 "ratio [95% CI]", "goal ≤ 1.05", "CPU-time ratio [95% CI]", "CPU-time goal", "losses equal (5 dp)",
                 "steps", "measured"]
SUITE_RUNS_HEADER = ["benchmarks", "profile", "wall", "runs ran / skipped / failed", "workers",
                     "stages built / reused", "part of", "load before → after (1 min)", "measured"]
BEFORE_AFTER_HEADER = ["benchmark", "method", "dataset", "profile", "module", "before (revision)", "before s/epoch",
                       "after s/epoch", "speed-up [95% CI]", "faster", "max rel. loss diff", "measured"]
THREADS_HEADER = ["benchmark", "method", "dataset", "profile", "1 thread", "N threads, active wait",
                  "N threads, passive wait", "N, passive, heap kept", "N", "load before (1/5/15 min)",
                  "measured"]


def _rows(results_dir: str, kind: str, row: Callable[[dict[str, Any]], Any], problems: list[str]) -> list[Any]:
    rows = []
    for path in sorted((Path(results_dir) / "perf" / kind).glob("*.json")):
        try:
            rows.append(row(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            rerun = "the `litbench run` that wrote it" if kind == "suite" else f"`litbench perf {kind.replace('_', '-')}`"
            problems.append(f"{path}: unreadable perf record ({type(exc).__name__}); delete it or rerun {rerun}")
    return rows


def _parity_row(record: dict[str, Any]) -> list[str]:
    return [str(record["benchmark"]), str(record["method"]), str(record["dataset"]), str(record["profile"]),
            f"{float(record['lightning_epoch_s']):.3f}", f"{float(record['plain_epoch_s']):.3f}",
            _ratio_text(record, "ratio"), str(record.get("goal", "—")),
            _ratio_text(record, "cpu_ratio"), str(record.get("cpu_goal", "—")), "yes" if record["losses_equal_5_decimals"] else "NO",
            str(int(record["steps"])), str(record.get("measured_at", ""))[:16]]


def _ratio_text(record: dict[str, Any], key: str) -> str:
    if record.get(key) is None:  # records before CPU time was measured have no cpu_ratio
        return "—"
    interval = record.get(f"{key}_ci")  # nor (older still) an interval
    text = f"{float(record[key]):.3f}"
    return f"{text} [{float(interval[0]):.3f}, {float(interval[1]):.3f}]" if interval else text


def _before_after_row(record: dict[str, Any]) -> list[str]:
    interval = record.get("speedup_ci")
    speedup = f"{float(record['speedup']):.3f}" + (f" [{float(interval[0]):.3f}, {float(interval[1]):.3f}]" if interval else "")
    return [str(record["benchmark"]), str(record["method"]), str(record["dataset"]), str(record["profile"]),
            str(record["module"]), str(record["revision"])[:10], f"{float(record['before_epoch_s']):.3f}",
            f"{float(record['after_epoch_s']):.3f}", speedup, str(record["faster"]), f"{float(record['max_rel_loss_diff']):.1e}",
            str(record.get("measured_at", ""))[:16]]


def _threads_column(environment: dict[str, str]) -> int:
    """Which THREADS_HEADER setting column a setting's environment belongs to (0-3)."""
    if environment.get("OMP_NUM_THREADS") == "1":
        return 0
    if environment.get("OMP_WAIT_POLICY") == "ACTIVE":
        return 1
    return 3 if environment.get("LITBENCH_MALLOC") == "kept" else 2


def _threads_row(record: dict[str, Any]) -> list[str]:
    # Placed by each setting's environment, not its position: settings were added over time.
    cells = ["—"] * 4
    for name, setting in record["settings"].items():
        cells[_threads_column(setting["environment"])] = (
            f"{float(setting['median_run_s']):.1f} s ({float(record['slowdown_vs_fastest'][name]):.2f}×)")
    return [str(record["benchmark"]), str(record["method"]), str(record["dataset"]), str(record["profile"]), *cells,
            str(int(record["threads"])), " / ".join(f"{float(x):.1f}" for x in record["load_before"]),
            str(record.get("measured_at", ""))[:16]]


def _wall_text(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def _suite_cells(names: str, profile: str, part: dict[str, Any], part_of: str, record: dict[str, Any]) -> list[str]:
    return [names, profile, _wall_text(float(part["wall_s"])),
            f"{int(part['ran'])} / {int(part['skipped'])} / {int(part['failed'])}", str(part["workers"]),
            f"{int(part['stages_built'])} / {int(part['stages_reused'])}", part_of,
            f"{float(record['load_before'][0]):.1f} → {float(record['load_after'][0]):.1f}",
            str(record.get("measured_at", ""))[:16]]


def _suite_rows(record: dict[str, Any]) -> list[list[str]]:
    """One row for the whole ``litbench run``; when it ran several benchmarks, one row per benchmark
    before it (its span inside that run, first run's start to last run's end)."""
    profile = str(record["profile"])
    per_benchmark = record.get("per_benchmark") or {}
    if len(per_benchmark) <= 1:
        return [_suite_cells(", ".join(record["benchmarks"]), profile, record, "—", record)]
    total = f"a run of {len(per_benchmark)} ({_wall_text(float(record['wall_s']))})"
    rows = [_suite_cells(str(name), profile, part, total, record) for name, part in per_benchmark.items()]
    return rows + [_suite_cells(f"all {len(per_benchmark)}", profile, record, "—", record)]


def suite_run_rows(results_dir: str, problems: list[str]) -> list[list[str]]:
    """SUITE_RUNS_HEADER rows, one per recorded ``litbench run`` (oldest first)."""
    groups = _rows(results_dir, "suite", _suite_rows, problems)
    return [row for group in sorted(groups, key=lambda group: group[-1][-1]) for row in group]


def parity_rows(results_dir: str, problems: list[str]) -> list[list[str]]:
    """PARITY_HEADER rows (``litbench perf parity``); unreadable records become problems."""
    return _rows(results_dir, "parity", _parity_row, problems)


def before_after_rows(results_dir: str, problems: list[str]) -> list[list[str]]:
    """BEFORE_AFTER_HEADER rows (``litbench perf before-after``); unreadable records become problems."""
    return _rows(results_dir, "before_after", _before_after_row, problems)


def threads_rows(results_dir: str, problems: list[str]) -> list[list[str]]:
    """THREADS_HEADER rows (``litbench perf threads``): median run time per setting (× the fastest)."""
    return _rows(results_dir, "threads", _threads_row, problems)
