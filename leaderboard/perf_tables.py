"""Tables of the perf records (``<results>/perf/<kind>/*.json``, schema ``records.PERF_SCHEMA``):
``litbench perf parity``, ``litbench perf step``, and ``suite``, which every ``litbench run`` that ran something writes (its
wall time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from leaderboard.records import PERF_SCHEMA

PARITY_HEADER = ["benchmark", "method", "dataset", "profile", "Lightning s/epoch", "plain loop s/epoch",
                 "ratio [95% CI]", "goal ≤ 1.05", "CPU-time ratio [95% CI]", "CPU-time goal", "losses equal (5 dp)",
                 "steps", "measured"]
SUITE_RUNS_HEADER = ["benchmarks", "profile", "wall", "runs ran / skipped / failed", "workers",
                     "stages built / reused", "part of", "load before → after (1 min)", "measured"]
STEP_HEADER = ["benchmark", "measured", "profile", "threads", "eager ms/step", "compiled ms/step (warm-up)",
               "compiled / eager", "eager GFLOP/s (matmul probe)", "top operators (eager, share of self time)", "measured at"]


def _rows(results_dir: str, kind: str, row: Callable[[dict[str, Any]], Any], problems: list[str]) -> list[Any]:
    rows = []
    for path in sorted((Path(results_dir) / "perf" / kind).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if record.get("schema") != PERF_SCHEMA:
                raise ValueError(f"schema {record.get('schema')!r} is not {PERF_SCHEMA!r}")
            rows.append(row(record))
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


def _step_row(record: dict[str, Any]) -> list[str]:
    modes = record["modes"]
    eager, compiled = modes.get("eager"), modes.get("compiled")
    probe = record.get("probe_gflops")
    rate = (f"{float(eager['achieved_gflops']):.1f}" + (f" ({float(probe):.0f})" if probe else "")
            if eager and eager.get("achieved_gflops") else "—")
    ops = ", ".join(f"{name.removeprefix('aten::')} {100 * float(share):.0f}%" for name, share in (eager or {}).get("top_ops", [])[:4])
    speedup = record.get("compile_speedup")
    return [str(record["benchmark"]), str(record["measured"]), str(record["profile"]), str(record["torch_threads"]),
            f"{float(eager['ms_per_step']):.1f}" if eager else "—",
            f"{float(compiled['ms_per_step']):.1f} ({float(compiled['first_steps_s']):.0f} s)" if compiled else "—",
            f"{float(speedup):.2f}x" if speedup else "—", rate, ops or "—", str(record.get("measured_at", ""))[:16]]


def step_rows(results_dir: str, problems: list[str]) -> list[list[str]]:
    """STEP_HEADER rows (``litbench perf step``); unreadable records become problems."""
    return _rows(results_dir, "step", _step_row, problems)
