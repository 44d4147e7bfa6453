"""Log the leaderboard to Weights & Biases as one run named "leaderboard".

The run carries one ``wandb.Table`` per benchmark (key = benchmark name; one row per method,
dataset and profile with the aggregates of the ok runs), a ``claims`` table, and one bar chart
(``wandb.plot.bar``: method vs mean of the primary metric) per benchmark, dataset and profile under
``<benchmark>/<dataset>/<profile>/<primary>`` — its data is a two-column table saved the same way. In offline mode the
tables land as ``<dir>/wandb/offline-run-*/files/media/table/<key>_<step>_<hash>.table.json``;
``wandb sync`` uploads them later. wandb is imported only here, so a ``disabled`` build never
pays for it.
"""

from __future__ import annotations

import os

import math
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard.forest import forest_svg
from leaderboard.claims import CLAIM_COLUMNS, CLAIM_EXTRA_COLUMNS, VERDICTS
from leaderboard.report import LeaderboardReport

WANDB_MODES = ("online", "offline", "disabled")
CLAIMS_KEY = "claims"
FOREST_KEY = "claims_forest"


def _json_value(value: Any) -> Any:
    """Tables are JSON: NaN is not valid JSON, numpy scalars are not serialisable."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def table_payload(frame: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    columns = [str(column) for column in frame.columns]
    rows = [[_json_value(value) for value in row] for row in frame.itertuples(index=False, name=None)]
    return columns, rows


def aggregate_table_frame(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Per-benchmark aggregates without the constant benchmark column and without empty metrics."""
    frame = aggregates.drop(columns=["benchmark"])
    empty = [column for column in frame.columns if column.endswith("/mean") and frame[column].isna().all()]
    stems = {column.removesuffix("/mean") for column in empty}
    return frame.drop(columns=[column for column in frame.columns if column.rsplit("/", 1)[0] in stems])


def primary_metric_bars(report: LeaderboardReport) -> list[tuple[str, str, list[list[Any]]]]:
    """(wandb key, chart title, [[method, mean], ...]) for each benchmark/dataset/profile's primary metric."""
    charts = []
    for benchmark in report.benchmarks:
        for table in benchmark.tables:
            column = f"metric/{table.primary}/mean"
            if not table.primary or column not in benchmark.aggregates:
                continue
            rows = benchmark.aggregates[(benchmark.aggregates["dataset"] == table.dataset)
                                        & (benchmark.aggregates["profile"] == table.profile)]
            bars = [[str(method), _json_value(value)] for method, value in zip(rows["method"], rows[column])
                    if _json_value(value) is not None]
            if bars:
                charts.append((f"{benchmark.name}/{table.dataset}/{table.profile}/{table.primary}",
                               f"{benchmark.name} · {table.dataset} · {table.profile}: {table.primary} (mean over seeds)",
                               bars))
    return charts


def log_leaderboard(report: LeaderboardReport, *, mode: str, project: str, save_dir: Path) -> Path | None:
    """Log one "leaderboard" run; returns its local run folder (None when mode is disabled)."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode == "disabled":
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")  # the CLI prints where the run went
    run = wandb.init(
        project=project, name="leaderboard", job_type="leaderboard", dir=str(save_dir), mode=mode,
        config={"results_dir": report.results_dir, "benchmarks": [b.name for b in report.benchmarks]})
    try:
        payload: dict[str, Any] = {}
        for benchmark in report.benchmarks:
            columns, rows = table_payload(aggregate_table_frame(benchmark.aggregates))
            payload[benchmark.name] = wandb.Table(columns=columns, data=rows)
        claims = pd.concat([benchmark.claims for benchmark in report.benchmarks], ignore_index=True) \
            if report.benchmarks else pd.DataFrame(columns=[*CLAIM_COLUMNS, *CLAIM_EXTRA_COLUMNS])
        columns, rows = table_payload(claims)
        payload[CLAIMS_KEY] = wandb.Table(columns=columns, data=rows)
        if len(claims):  # the page's forest plot, so the wandb view shows what the page shows
            payload[FOREST_KEY] = wandb.Html(forest_svg(claims, title="every claim", with_benchmark=True))
        for key, title, bars in primary_metric_bars(report):
            chart_table = wandb.Table(columns=["method", "mean"], data=bars)
            payload[key] = wandb.plot.bar(chart_table, "method", "mean", title=title)
        run.log(payload)
        run.summary["runs_ok"] = report.runs_ok
        run.summary["runs_failed"] = report.runs_failed
        run.summary["claims_judged"] = int(len(claims))
        for verdict in VERDICTS:  # claims_reproduced, claims_not_reproduced, claims_inconclusive, claims_invalid
            run.summary[f"claims_{verdict.replace(' ', '_')}"] = int((claims["verdict"] == verdict).sum()) if len(claims) else 0
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    return run_dir
