"""The leaderboard's content, computed once and laid out by markdown.py, html.py and wandb_export.py.

Aggregation is over ``ok`` runs only: mean, sample std (ddof=1) and count per (benchmark, dataset,
profile, method). Failed runs are counted per method with their error types. The best mean per
metric (by the spec's direction; metrics without a direction are not ranked) is marked bold, the
delta of the primary metric is ``method mean - best baseline mean`` in raw metric units, and the
paper's reported number is attached to the cell when the spec's ``paper_results`` has one.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from leaderboard.formatting import (MISSING, decimals_for, format_count, format_flops, format_megabytes,
                                    format_mean_std, format_number, format_rate, format_seconds, format_share, format_signed,
                                    is_missing)
from leaderboard.frame import cost_column, metric_column
from leaderboard.calibration import CALIBRATION_CAPTION, CALIBRATION_HEADER, CALIBRATION_TITLE, sweep_rows
from leaderboard.perf_tables import PARITY_HEADER, STEP_HEADER, SUITE_RUNS_HEADER, parity_rows, step_rows, suite_run_rows
from leaderboard.records import STATUS_FAILED, STATUS_OK, RunRecord

GROUP_KEYS = ["benchmark", "dataset", "profile", "method"]
BASELINE_ROLE = "baseline"

# (cost key, column header, formatter); peak GPU memory only appears where some run measured it.
COST_DISPLAY = (
    ("params", "params", format_count),
    ("flops", "FLOPs", format_flops),
    ("fit_s", "fit s", format_seconds),
    ("train_samples_per_s", "train samples/s", format_rate),
    ("achieved_gflops", "train GFLOP/s", format_rate),
    ("mfu", "of ceiling", format_share),
    ("peak_rss_mb", "peak RSS MB", format_megabytes),
    ("peak_gpu_mb", "peak GPU MB", format_megabytes),
)
# Shown only where some run measured them (GPU memory; FLOP rates of records made before they were).
OPTIONAL_COSTS = {"peak_gpu_mb", "achieved_gflops", "mfu"}


@dataclass
class Cell:
    """One table cell as plain text; renderers add the markup (bold, paper note)."""
    text: str
    sort_key: float | str | None = None
    bold: bool = False
    note: str = ""


@dataclass
class ScatterPoint:
    method: str
    role: str
    metric_mean: float
    fit_s_mean: float


@dataclass
class GroupTable:
    """Methods x metrics for one (dataset, profile) of a benchmark."""
    dataset: str
    profile: str
    primary: str | None
    best_baseline: str | None
    columns: list[str]
    rows: list[list[Cell]]
    points: list[ScatterPoint]
    failed_runs: int


@dataclass
class ArtifactGroup:
    """The files one run wrote for readers (the lowest ok seed of a method), paths relative to results."""
    dataset: str
    profile: str
    method: str
    role: str
    seed: int
    paths: list[str]


@dataclass
class BenchmarkReport:
    name: str
    spec: dict[str, Any]
    tables: list[GroupTable]
    claims: pd.DataFrame
    aggregates: pd.DataFrame
    runs_ok: int
    runs_failed: int
    artifacts: list[ArtifactGroup] = field(default_factory=list)

    @property
    def paper(self) -> dict[str, Any]:
        return dict(self.spec.get("paper") or {})

    def verdict_counts(self) -> Counter:
        return Counter(self.claims["verdict"])


@dataclass
class Section:
    """One titled table of the summary (wall time, perf, calibration): plain-text cells."""
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class LeaderboardReport:
    results_dir: str
    generated_at: str
    benchmarks: list[BenchmarkReport]
    hardware: list[tuple[str, int]]
    software: list[tuple[str, int]]
    problems: list[str] = field(default_factory=list)
    # the tables between the summary and the benchmarks, in order; Markdown and HTML render each alike
    sections: list["Section"] = field(default_factory=list)

    @property
    def runs_ok(self) -> int:
        return sum(benchmark.runs_ok for benchmark in self.benchmarks)

    @property
    def runs_failed(self) -> int:
        return sum(benchmark.runs_failed for benchmark in self.benchmarks)


def resolve_specs(records: list[RunRecord], specs: dict[str, dict] | None) -> dict[str, dict[str, Any]]:
    """Given specs win; otherwise the ``spec`` snapshot of the benchmark's newest record that has one."""
    resolved: dict[str, dict[str, Any]] = {}
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for record in records:
        if not isinstance(record.spec, dict) or not record.spec:
            continue
        stamp = str(record.finished_at or record.started_at or "")
        if record.benchmark not in newest or stamp >= newest[record.benchmark][0]:
            newest[record.benchmark] = (stamp, record.spec)
    for benchmark, (_, snapshot) in newest.items():
        resolved[benchmark] = snapshot
    resolved.update(specs or {})
    return resolved


def aggregate_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, dataset, profile, method): role, runs_ok, runs_failed, failures, and
    ``<column>/mean``, ``<column>/std``, ``<column>/median``, ``<column>/n`` for every metric/ and
    cost/ column (ok runs)."""
    value_columns = [column for column in frame.columns if column.startswith(("metric/", "cost/"))]
    everything = frame.groupby(GROUP_KEYS, sort=True)
    aggregates = pd.DataFrame(index=everything.size().index)
    aggregates["role"] = everything["role"].first()
    aggregates["runs_ok"] = everything["status"].agg(lambda status: int((status == STATUS_OK).sum()))
    aggregates["runs_failed"] = everything["status"].agg(lambda status: int((status == STATUS_FAILED).sum()))
    failed = frame[frame["status"] == STATUS_FAILED]
    aggregates["failures"] = failed.groupby(GROUP_KEYS)["error_type"].agg(_describe_failures)
    aggregates["failures"] = aggregates["failures"].fillna("")
    ok = frame[frame["status"] == STATUS_OK]
    if value_columns and not ok.empty:
        stats = ok.groupby(GROUP_KEYS)[value_columns].agg(["mean", "std", "median", "count"])
        stats.columns = [f"{column}/{'n' if stat == 'count' else stat}" for column, stat in stats.columns]
        aggregates = aggregates.join(stats)
    for column in value_columns:
        for stat in ("mean", "std", "median", "n"):
            if f"{column}/{stat}" not in aggregates:
                aggregates[f"{column}/{stat}"] = math.nan
        aggregates[f"{column}/n"] = aggregates[f"{column}/n"].fillna(0).astype(int)
    return aggregates.reset_index()


def _describe_failures(error_types: pd.Series) -> str:
    counts = Counter(error_types)
    return ", ".join(f"{name} ×{count}" for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def build_report(frame: pd.DataFrame, *, specs: dict[str, dict[str, Any]], claims: pd.DataFrame,
                 problems: list[str], results_dir: str, generated_at: str) -> LeaderboardReport:
    aggregates = aggregate_runs(frame)
    benchmarks = []
    for name in sorted(frame["benchmark"].unique()):
        spec = dict(specs.get(name) or {})
        runs = frame[frame["benchmark"] == name]
        bench_aggregates = aggregates[aggregates["benchmark"] == name]
        tables = [group_table(group, spec=spec, dataset=dataset, profile=profile)
                  for (dataset, profile), group in bench_aggregates.groupby(["dataset", "profile"], sort=True)]
        benchmarks.append(BenchmarkReport(
            name=name, spec=spec, tables=tables,
            claims=claims[claims["benchmark"] == name].reset_index(drop=True),
            aggregates=bench_aggregates.reset_index(drop=True),
            runs_ok=int((runs["status"] == STATUS_OK).sum()),
            runs_failed=int((runs["status"] == STATUS_FAILED).sum()),
            artifacts=artifact_groups(runs)))
    return LeaderboardReport(
        results_dir=results_dir, generated_at=generated_at, benchmarks=benchmarks, problems=problems,
        hardware=_run_counts(frame, columns=["accelerator", "devices", "world_size", "num_nodes", "gpu_names", "cpu"]),
        software=_software_counts(frame),
        sections=summary_sections(frame, results_dir=results_dir, problems=problems))


def summary_sections(frame: pd.DataFrame, *, results_dir: str, problems: list[str]) -> list[Section]:
    """The summary's tables that have rows: calibration sweeps, wall times, Lightning-vs-plain parity,
    training-step measurements."""
    sections = [
        Section(CALIBRATION_TITLE, CALIBRATION_CAPTION, CALIBRATION_HEADER, sweep_rows(results_dir, problems)),
        Section("Wall time", "ok runs run one after another; CPU time = the run processes' own (load inflates it least); "
                "overhead = time outside stages, fit and test",
                SUITE_TIME_HEADER, suite_time_rows(frame)),
        Section("Suite wall time", "each `litbench run`, as it ran: parallel workers, stages built or reused",
                SUITE_RUNS_HEADER, suite_run_rows(results_dir, problems)),
        Section("Lightning vs a hand-written loop",
                "`litbench perf parity`; same model, data and seed; ratio = geometric mean of the per-pair ratios "
                "of counterbalanced Lightning/plain pairs, 95% bootstrap interval over pairs",
                PARITY_HEADER, parity_rows(results_dir, problems)),
        Section("Training step", "`litbench perf step`: one process, the method's (or stage's) own step, optimiser and "
                "precision; mean of the timed steps after warm-up (compilation happens in warm-up); operators by "
                "self time over profiled steps; GFLOP/s = counted FLOPs per step / step time, beside the "
                "process's fp32 matmul probe",
                STEP_HEADER, step_rows(results_dir, problems)),
    ]
    return [section for section in sections if section.rows]


SUITE_TIME_HEADER = ["benchmark", "profile", "ok runs", "wall (sum of runs)", "CPU time (sum of runs)", "harness overhead",
                     "data share"]


def suite_time_rows(frame: pd.DataFrame) -> list[list[str]]:
    """Per benchmark and profile, from the ok records: the sequential wall time of its runs
    (``cost.run_s``), their process CPU time (``cost.cpu_s``: what load on a shared machine inflates
    least), the share of wall time outside stages, fit and test (harness overhead: setup, logger,
    record) and the mean share of training time spent waiting for data."""
    needed = [cost_column(name) for name in ("run_s", "fit_s", "eval_s", "data_share")]
    if any(column not in frame for column in needed):
        return []
    ok = frame[(frame["status"] == STATUS_OK) & frame[cost_column("run_s")].notna()]
    rows = []
    for (benchmark, profile), runs in ok.groupby(["benchmark", "profile"], sort=True):
        wall = runs[cost_column("run_s")].sum()
        stage = runs[cost_column("stage_s")].fillna(0) if cost_column("stage_s") in runs else 0.0
        inside = (runs[cost_column("fit_s")].fillna(0) + runs[cost_column("eval_s")].fillna(0) + stage).sum()
        data_share = runs[cost_column("data_share")].mean()
        rows.append([str(benchmark), str(profile), str(len(runs)), format_seconds(wall), _cpu_time_cell(runs),
                     f"{100 * (wall - inside) / wall:.1f}%" if wall > 0 else MISSING,
                     MISSING if is_missing(data_share) else f"{100 * data_share:.1f}%"])
    return rows


def _cpu_time_cell(runs: pd.DataFrame) -> str:
    """Sum of the runs' process CPU time; "(n of N runs)" when older records lack it."""
    if cost_column("cpu_s") not in runs:
        return MISSING
    measured = runs[cost_column("cpu_s")].dropna()
    if measured.empty:
        return MISSING
    total = format_seconds(measured.sum())
    return total if len(measured) == len(runs) else f"{total} ({len(measured)} of {len(runs)} runs)"


def artifact_groups(runs: pd.DataFrame) -> list[ArtifactGroup]:
    """Per (dataset, profile, method): the artifacts of its lowest-seed ok run that wrote any."""
    if "artifacts" not in runs:
        return []
    with_files = runs[(runs["status"] == STATUS_OK) & (runs["artifacts"].fillna("") != "")]
    groups = []
    for (dataset, profile, method), rows in with_files.groupby(["dataset", "profile", "method"], sort=True):
        first = rows.sort_values("seed").iloc[0]
        groups.append(ArtifactGroup(dataset=dataset, profile=profile, method=method, role=str(first["role"]),
                                    seed=int(first["seed"]), paths=str(first["artifacts"]).split("|")))
    return groups


def _run_counts(frame: pd.DataFrame, *, columns: list[str]) -> list[tuple[str, int]]:
    """Distinct hardware/software setups of the runs, as 'name value, ...' with a run count each."""
    counts: Counter = Counter(_setup_of(row, columns) for _, row in frame[columns].iterrows())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _software_counts(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """Library versions with a run count each, and how many commits (and uncommitted trees) made
    those runs; every run's own commit stays in its record and in results.csv."""
    columns = ["python_version", "torch_version", "lightning_version", "torchmetrics_version"]
    if frame.empty or "git_sha" not in frame:
        return _run_counts(frame, columns=columns)
    setups = frame[columns].apply(lambda row: _setup_of(row, columns), axis=1)
    rows = []
    for setup, runs in frame.groupby(setups, sort=False):
        commits = runs["git_sha"].replace("", None).dropna().nunique()
        dirty = int(runs["git_dirty"].eq(True).sum()) if "git_dirty" in runs else 0
        detail = f"{commits} commit{'s' if commits != 1 else ''}" + (f", {dirty} run{'s' if dirty != 1 else ''} from an uncommitted tree" if dirty else "")
        rows.append((f"{setup} ({detail})", len(runs)))
    return sorted(rows, key=lambda item: (-item[1], item[0]))


def _setup_of(row: pd.Series, columns: list[str]) -> str:
    parts = [f"{column.removesuffix('_version')} {row[column]}" for column in columns
             if not is_missing(row[column]) and row[column] != ""]
    return "; ".join(parts) or "unknown"


def metric_order(aggregates: pd.DataFrame, *, primary: str | None, higher_is_better: dict[str, bool]) -> list[str]:
    """Metrics with at least one ok value: primary first, then the spec's order, then the rest."""
    present = [name for name in metric_names_from_aggregates(aggregates)
               if aggregates[f"{metric_column(name)}/n"].sum() > 0]
    ordered = [name for name in [primary, *higher_is_better] if name in present]
    return list(dict.fromkeys([*ordered, *sorted(present)]))


def metric_names_from_aggregates(aggregates: pd.DataFrame) -> list[str]:
    return [column.removeprefix("metric/").removesuffix("/mean") for column in aggregates.columns
            if column.startswith("metric/") and column.endswith("/mean")]


def best_index(means: pd.Series, *, higher_is_better: bool) -> list[Any]:
    """Index labels of the best mean (all of them on a tie); empty when no mean is known."""
    known = means.dropna()
    if known.empty:
        return []
    best = known.max() if higher_is_better else known.min()
    return [label for label, value in known.items() if math.isclose(value, best, rel_tol=1e-12, abs_tol=1e-15)]


def group_table(aggregates: pd.DataFrame, *, spec: dict[str, Any], dataset: str, profile: str) -> GroupTable:
    metrics_spec = dict(spec.get("metrics") or {})
    higher_is_better = {str(k): bool(v) for k, v in dict(metrics_spec.get("higher_is_better") or {}).items()}
    metrics = metric_order(aggregates, primary=metrics_spec.get("primary"), higher_is_better=higher_is_better)
    primary = metrics_spec.get("primary") if metrics_spec.get("primary") in metrics else None
    paper_numbers = dict(dict(spec.get("paper_results") or {}).get(dataset) or {})

    rows = aggregates.set_index("method")
    if primary is not None and primary in higher_is_better:
        primary_means = rows[f"{metric_column(primary)}/mean"]
        # Leaderboard order: best primary mean first, methods without one last.
        ordered = primary_means.sort_values(ascending=not higher_is_better[primary], na_position="last", kind="stable")
        rows = rows.loc[ordered.index]
        baseline_means = rows.loc[rows["role"] == BASELINE_ROLE, f"{metric_column(primary)}/mean"]
        best_baselines = best_index(baseline_means, higher_is_better=higher_is_better[primary])
        best_baseline = best_baselines[0] if best_baselines else None
    else:
        best_baseline = None

    bold = {name: set(best_index(rows[f"{metric_column(name)}/mean"], higher_is_better=higher_is_better[name]))
            for name in metrics if name in higher_is_better}
    costs = [(key, header, formatter) for key, header, formatter in COST_DISPLAY
             if key not in OPTIONAL_COSTS or rows[f"{cost_column(key)}/n"].sum() > 0]

    columns = ["method", "role"]
    columns += [name + {True: " ↑", False: " ↓"}.get(higher_is_better.get(name), "") for name in metrics]
    if best_baseline is not None:
        columns.append(f"Δ {primary} vs {best_baseline}")
    columns += [header for _, header, _ in costs] + ["runs", "failed"]

    table_rows: list[list[Cell]] = []
    points: list[ScatterPoint] = []
    for method, row in rows.iterrows():
        cells = [Cell(text=str(method), sort_key=str(method)),
                 Cell(text=str(row["role"]), sort_key=str(row["role"]))]
        for name in metrics:
            cells.append(_metric_cell(row, metric=name, bold=method in bold.get(name, set()),
                                      median=name in set(metrics_spec.get("median") or []),
                                      paper_value=dict(paper_numbers.get(method) or {}).get(name), profile=profile))
        if best_baseline is not None:
            cells.append(_delta_cell(rows, method=method, primary=primary, best_baseline=best_baseline))
        for key, _, formatter in costs:
            value = row[f"{cost_column(key)}/mean"]
            cells.append(Cell(text=formatter(value), sort_key=None if is_missing(value) else float(value)))
        cells.append(Cell(text=str(int(row["runs_ok"])), sort_key=int(row["runs_ok"])))
        failures = int(row["runs_failed"])
        cells.append(Cell(text=f"{failures} ({row['failures']})" if failures else "", sort_key=failures))
        table_rows.append(cells)
        if primary is not None:
            metric_mean, fit_mean = row[f"{metric_column(primary)}/mean"], row[f"{cost_column('fit_s')}/mean"]
            if not is_missing(metric_mean) and not is_missing(fit_mean):
                points.append(ScatterPoint(method=str(method), role=str(row["role"]),
                                           metric_mean=float(metric_mean), fit_s_mean=float(fit_mean)))
    return GroupTable(dataset=dataset, profile=profile, primary=primary, best_baseline=best_baseline,
                      columns=columns, rows=table_rows, points=points, failed_runs=int(rows["runs_failed"].sum()))


def _metric_cell(row: pd.Series, *, metric: str, bold: bool, paper_value: Any, profile: str = "full",
                 median: bool = False) -> Cell:
    """``mean ± std (n)`` (and ``, median m`` where the spec asks for the paper's statistic), sorted
    by the mean, with the paper's number as a note when it has one (marked as paper-scale beside a
    scaled-down profile's number)."""
    column = metric_column(metric)
    mean, std, n = row[f"{column}/mean"], row[f"{column}/std"], int(row[f"{column}/n"])
    text = format_mean_std(mean, std, n)
    if median and n:
        text += f", median {format_number(row[f'{column}/median'], decimals=decimals_for(mean))}"
    note = ""
    if isinstance(paper_value, (int, float)) and not isinstance(paper_value, bool):
        # Same precision as our number so the two read side by side.
        note = f"paper {format_number(float(paper_value), decimals=None if is_missing(mean) else decimals_for(mean))}"
        if profile != "full":
            note += " (paper scale: compare the full profile)"
    return Cell(text=text, sort_key=None if n == 0 else float(mean), bold=bold, note=note)


def _delta_cell(rows: pd.DataFrame, *, method: str, primary: str, best_baseline: str) -> Cell:
    if method == best_baseline:
        return Cell(text="ref", sort_key=0.0)
    column = f"{metric_column(primary)}/mean"
    delta = rows.at[method, column] - rows.at[best_baseline, column]
    if is_missing(delta):
        return Cell(text=MISSING)
    return Cell(text=format_signed(delta, decimals=decimals_for(rows.at[best_baseline, column])), sort_key=float(delta))
