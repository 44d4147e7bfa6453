"""LEADERBOARD.md: summary, per-benchmark tables and claim verdicts (GitHub-flavoured Markdown)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from leaderboard.claims import CONFIDENCE, INCONCLUSIVE, INVALID, NOT_REPRODUCED, REPRODUCED, VERDICTS
from leaderboard.formatting import MISSING, decimals_for, format_number, format_signed, is_missing
from leaderboard.report import BenchmarkReport, Cell, GroupTable, LeaderboardReport

VERDICT_RULE = (
    f"Verdicts pair the ok runs of method and baseline by seed (n pairs) and take the "
    f"{CONFIDENCE:.0%} Student-t interval of the mean improvement (positive = the method is better): "
    f"{INVALID} when an arm fails a validity gate (it did not learn) or the arms do not differ; "
    f"n < 2 → {INCONCLUSIVE}; interval above the claim's margin → {REPRODUCED}; interval at or below the "
    f"margin, or below margin + min effect (the smallest improvement the paper implies) → {NOT_REPRODUCED}; "
    f"otherwise {INCONCLUSIVE}. 'detectable' is the interval's half-width: the smallest effect these seeds "
    f"could show.")
COST_NOTE = (
    "Costs are means over a method's ok runs: 'FLOPs' one training step (forward, backward, optimiser), "
    "'train GFLOP/s' the achieved training rate, 'of ceiling' that rate over the run's ceiling (a GPU's "
    "peak at the run's precision; on CPU the best fp32 1024³ matmul the run's own process reached, which "
    "well-tuned convolution kernels can exceed). A method that trains nothing itself (it tests a network "
    "trained by a cached stage) shows that stage's training speed.")
SUMMARY_HEADER = ["benchmark", "paper", "claims reproduced / judged", "not reproduced", "inconclusive", "invalid",
                  "ok runs", "failed runs"]


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


def summary_cells(benchmark: BenchmarkReport) -> list[str]:
    """The summary row after benchmark and paper: verdict counts, then ok and failed runs."""
    counts = benchmark.verdict_counts()
    return [claim_counts(benchmark), *(str(counts.get(verdict, 0)) for verdict in VERDICTS[1:]),
            str(benchmark.runs_ok), str(benchmark.runs_failed)]


def format_claim_number(value: float, *, relative: bool, signed: bool = True, reference: float | None = None) -> str:
    """A claim's difference in the metric's units, or in percent of the baseline for relative claims."""
    if is_missing(value):
        return MISSING
    if relative:
        return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"
    if signed:
        return format_signed(value, decimals=None if reference is None or is_missing(reference) else decimals_for(reference))
    return format_number(value)


def claim_metric_label(claim: Any) -> str:
    """``metric (relative, margin -5.6%, min effect 1.5)``: how the claim's difference is read."""
    details = ["relative"] if claim.relative else []
    if claim.margin:
        details.append(f"margin {format_claim_number(claim.margin, relative=claim.relative)}")
    if not is_missing(claim.min_effect):
        details.append(f"min effect {format_claim_number(claim.min_effect, relative=claim.relative, signed=False)}")
    return claim.metric + (f" ({', '.join(details)})" if details else "")


def claim_interval(claim: Any) -> str:
    if claim.relative:
        if is_missing(claim.ci_low) or is_missing(claim.ci_high):
            return MISSING
        return (f"[{format_claim_number(claim.ci_low, relative=True)}, "
                f"{format_claim_number(claim.ci_high, relative=True)}]")
    return format_interval(claim.ci_low, claim.ci_high, reference=claim.diff_mean)


def claim_why(claim: Any) -> str:
    """The reason of an invalid (or unpaired) verdict, then the spec's note on the claim, then what
    ``litbench verify`` found when the machine-to-machine spread exceeds the detectable effect."""
    return " — ".join(part for part in (claim.reason, claim.note, getattr(claim, "verification", "")) if part)


def claim_cells(claim: Any) -> list[str]:
    """One claim row as plain text, in CLAIM_HEADER order (renderers escape and style it)."""
    label = f"{claim.claim}: {claim.text}" if claim.text else str(claim.claim)
    return [label, str(claim.dataset), str(claim.profile), f"{claim.method} vs {claim.baseline}",
            claim_metric_label(claim), str(claim.n),
            format_claim_number(claim.diff_mean, relative=claim.relative, reference=claim.diff_mean),
            claim_interval(claim),
            format_claim_number(claim.detectable, relative=claim.relative, signed=False),
            claim.verdict, claim_why(claim)]


def format_interval(low: float, high: float, *, reference: float) -> str:
    if is_missing(low) or is_missing(high):
        return MISSING
    digits = decimals_for(reference if not is_missing(reference) else high)
    return f"[{format_signed(low, decimals=digits)}, {format_signed(high, decimals=digits)}]"


def claim_rows(claims: pd.DataFrame) -> list[list[str]]:
    rows = []
    for claim in claims.itertuples(index=False):
        cells = [escape_markdown(cell) for cell in claim_cells(claim)]
        cells[VERDICT_INDEX] = f"**{cells[VERDICT_INDEX]}**"
        rows.append(cells)
    return rows


CLAIM_HEADER = ["claim", "dataset", "profile", "comparison", "metric", "n", "mean diff",
                f"{CONFIDENCE:.0%} CI", "detectable", "verdict", "why"]
VERDICT_INDEX = CLAIM_HEADER.index("verdict")


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
        summary_rows.append([escape_markdown(benchmark.name), escape_markdown(paper_line(benchmark) or MISSING),
                             *summary_cells(benchmark)])
    lines += [markdown_table(SUMMARY_HEADER, summary_rows), ""]
    lines += ["Claims are judged per (dataset, profile). " + VERDICT_RULE, "", COST_NOTE, ""]
    if report.problems:
        lines += ["## Problems", "", "Records or specs that could not be used:", ""]
        lines += [f"- {escape_markdown(problem)}" for problem in report.problems]
        lines.append("")
    for benchmark in report.benchmarks:
        lines += render_benchmark(benchmark)
    # what a reader came for first; calibration, wall time, perf and the machines after it
    lines += ["## Calibration, wall time and performance", ""]
    for section in report.sections:
        lines += [f"**{section.title}** ({section.caption})", "",
                  markdown_table(section.header, [[escape_markdown(cell) for cell in row] for row in section.rows]), ""]
    for title, setups in (("Hardware", report.hardware), ("Software", report.software)):
        lines += [f"**{title}**", ""] + [f"- {escape_markdown(setup)} ({count} runs)" for setup, count in setups] + [""]
    return "\n".join(lines).rstrip() + "\n"
