"""LEADERBOARD.md: summary, per-benchmark tables and claim verdicts (GitHub-flavoured Markdown)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from leaderboard.claims import CONFIDENCE, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from leaderboard.formatting import MISSING, decimals_for, format_number, format_signed, is_missing
from leaderboard.perf_tables import BEFORE_AFTER_HEADER, PARITY_HEADER, SUITE_RUNS_HEADER, THREADS_HEADER
from leaderboard.report import SUITE_TIME_HEADER, BenchmarkReport, Cell, GroupTable, LeaderboardReport

VERDICT_RULE = (
    f"Verdicts pair the ok runs of method and baseline by seed (n pairs) and take the "
    f"{CONFIDENCE:.0%} Student-t interval of the mean improvement (positive = the method is better): "
    f"n < 2 → {INCONCLUSIVE}; interval above the claim's margin → {REPRODUCED}; "
    f"mean ≤ margin → {NOT_REPRODUCED}; otherwise {INCONCLUSIVE} (more seeds needed).")


def escape_markdown(text: Any) -> str:
    """Keep user text (method names, claim text, error types) from breaking a table row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("*", "\\*")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_cell(cell: Cell) -> str:
    text = escape_markdown(cell.text)
    if cell.bold and cell.text != MISSING:
        text = f"**{text}**"
    if cell.note:
        text = f"{text} · {escape_markdown(cell.note)}"
    return text


def paper_line(benchmark: BenchmarkReport) -> str:
    paper = benchmark.paper
    parts = [str(paper[key]) for key in ("title", "venue") if paper.get(key)]
    if paper.get("arxiv"):
        parts.append(f"arXiv {paper['arxiv']}")
    if paper.get("code"):
        parts.append(f"code {paper['code']}")
    return " · ".join(parts)


def claim_counts(benchmark: BenchmarkReport) -> str:
    counts = benchmark.verdict_counts()
    return f"{counts.get(REPRODUCED, 0)} / {len(benchmark.claims)}"


def format_interval(low: float, high: float, *, reference: float) -> str:
    if is_missing(low) or is_missing(high):
        return MISSING
    digits = decimals_for(reference if not is_missing(reference) else high)
    return f"[{format_signed(low, decimals=digits)}, {format_signed(high, decimals=digits)}]"


def claim_rows(claims: pd.DataFrame) -> list[list[str]]:
    rows = []
    for claim in claims.itertuples(index=False):
        claim_label = f"{claim.claim}: {claim.text}" if claim.text else str(claim.claim)
        margin = f" (margin {format_number(claim.margin)})" if claim.margin else ""
        rows.append([
            escape_markdown(claim_label), escape_markdown(claim.dataset), escape_markdown(claim.profile),
            escape_markdown(f"{claim.method} vs {claim.baseline}"), escape_markdown(claim.metric + margin),
            str(claim.n), format_signed(claim.diff_mean),
            format_interval(claim.ci_low, claim.ci_high, reference=claim.diff_mean), f"**{claim.verdict}**",
        ])
    return rows


CLAIM_HEADER = ["claim", "dataset", "profile", "comparison", "metric", "n", "mean diff",
                f"{CONFIDENCE:.0%} CI", "verdict"]


def render_group(table: GroupTable) -> list[str]:
    lines = [f"### {escape_markdown(table.dataset)} · profile `{table.profile}`", ""]
    lines.append(markdown_table([escape_markdown(column) for column in table.columns],
                                [[render_cell(cell) for cell in row] for row in table.rows]))
    lines.append("")
    return lines


def render_benchmark(benchmark: BenchmarkReport) -> list[str]:
    lines = [f"## {escape_markdown(benchmark.name)}", ""]
    if paper_line(benchmark):
        lines += [escape_markdown(paper_line(benchmark)), ""]
    lines += [f"{benchmark.runs_ok} ok runs, {benchmark.runs_failed} failed. Mean ± sample std over seeds "
              "(n ok runs); best per metric in **bold** (↑ higher / ↓ lower is better); "
              "`paper` is the number the paper reports; costs are means over ok runs.", ""]
    for table in benchmark.tables:
        lines += render_group(table)
    lines += ["### Claims", ""]
    if benchmark.claims.empty:
        lines += ["No claims could be judged (none in the spec, or no records of their methods).", ""]
    else:
        lines += [markdown_table(CLAIM_HEADER, claim_rows(benchmark.claims)), ""]
    if benchmark.artifacts:
        lines += ["### Run artifacts", "", "Files written by one run per method (under the results folder; "
                  "index.html embeds them):", ""]
        for group in benchmark.artifacts:
            files = ", ".join(f"`{escape_markdown(path)}`" for path in group.paths[:6])
            more = f" (+{len(group.paths) - 6} more)" if len(group.paths) > 6 else ""
            lines.append(f"- {escape_markdown(group.method)} · {escape_markdown(group.dataset)} · "
                         f"{escape_markdown(group.profile)} · seed {group.seed}: {files}{more}")
        lines.append("")
    return lines


def render_markdown(report: LeaderboardReport) -> str:
    lines = ["# litbench leaderboard", "",
             f"Generated {report.generated_at} from `{escape_markdown(report.results_dir)}`: "
             f"{report.runs_ok} ok runs, {report.runs_failed} failed.", ""]
    if not report.benchmarks:
        lines += ["No run records found. Run `litbench run` first.", ""]
    lines += ["## Summary", ""]
    summary_rows = []
    for benchmark in report.benchmarks:
        counts = benchmark.verdict_counts()
        summary_rows.append([
            escape_markdown(benchmark.name), escape_markdown(paper_line(benchmark) or MISSING),
            claim_counts(benchmark), str(counts.get(NOT_REPRODUCED, 0)), str(counts.get(INCONCLUSIVE, 0)),
            str(benchmark.runs_ok), str(benchmark.runs_failed)])
    lines += [markdown_table(["benchmark", "paper", "claims reproduced / judged", "not reproduced",
                              "inconclusive", "ok runs", "failed runs"], summary_rows), ""]
    lines += ["Claims are judged per (dataset, profile). " + VERDICT_RULE, ""]
    if report.suite_times:
        lines += ["**Wall time** (ok runs run one after another; overhead = time outside stages, fit and test)", "",
                  markdown_table(SUITE_TIME_HEADER, [[escape_markdown(cell) for cell in row] for row in report.suite_times]), ""]
    if report.suite_runs:
        lines += ["**Suite wall time** (each `litbench run`, as it ran: parallel workers, stages built or reused)", "",
                  markdown_table(SUITE_RUNS_HEADER, [[escape_markdown(cell) for cell in row] for row in report.suite_runs]), ""]
    if report.parity:
        lines += ["**Lightning vs a hand-written loop** (`litbench perf parity`; same model, data and seed; ratio = geometric mean "
                  "of the per-pair ratios of counterbalanced Lightning/plain pairs, 95% bootstrap interval over pairs)", "",
                  markdown_table(PARITY_HEADER, [[escape_markdown(cell) for cell in row] for row in report.parity]), ""]
    if report.threads:
        lines += ["**CPU threads** (`litbench perf threads`; one run's median wall time per setting, × the fastest)", "",
                  markdown_table(THREADS_HEADER, [[escape_markdown(cell) for cell in row] for row in report.threads]), ""]
    if report.before_after:
        lines += ["**Before/after a code change** (`litbench perf before-after`; the model module at an earlier revision "
                  "vs now, counterbalanced pairs in one process; speed-up = before / after)", "",
                  markdown_table(BEFORE_AFTER_HEADER, [[escape_markdown(cell) for cell in row] for row in report.before_after]), ""]
    for title, setups in (("Hardware", report.hardware), ("Software", report.software)):
        lines += [f"**{title}**", ""] + [f"- {escape_markdown(setup)} ({count} runs)" for setup, count in setups] + [""]
    if report.problems:
        lines += ["## Problems", "", "Records or specs that could not be used:", ""]
        lines += [f"- {escape_markdown(problem)}" for problem in report.problems]
        lines.append("")
    for benchmark in report.benchmarks:
        lines += render_benchmark(benchmark)
    return "\n".join(lines).rstrip() + "\n"
