"""Build the leaderboard from run records alone: results.csv, claims.csv, LEADERBOARD.md, index.html.

``build_leaderboard`` reads ``<results_dir>/**/seed-*.json`` (see ``leaderboard.records``), judges
the benchmarks' claims (``leaderboard.claims``, whose docstring states the verdict rule), and
writes the four files into ``out_dir``; with ``wandb_mode`` offline/online it also logs one
"leaderboard" run (``leaderboard.wandb_export``).

Specs: ``specs`` maps a benchmark name to ``{metrics: {primary, higher_is_better}, claims: [...], gates: [...],
paper_results: {dataset: {method: {metric: value}}}, paper: {title, venue, arxiv, code}}``. A
benchmark missing from it is read with the ``spec`` snapshot of its newest record, so a results
folder is readable without the spec files that produced it.

Unreadable records and malformed claims never stop the build: they are listed under "Problems" in
LEADERBOARD.md and index.html, logged as warnings, and returned by ``load_frame``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from leaderboard.claims import CLAIMS_CSV_COLUMNS, claims_frame, judge_claims
from leaderboard.frame import (COST_PREFIX, IDENTITY_COLUMNS, METRIC_PREFIX, RUN_COLUMNS, load_frame,
                               load_records, records_to_frame)
from leaderboard.html import render_html
from leaderboard.markdown import render_markdown
from leaderboard.records import utc_now
from leaderboard.readme import check_markers, render_excerpt, update_readme
from leaderboard.report import Section, build_report, resolve_specs
from leaderboard.verification import (VERIFY_CAPTION, VERIFY_HEADER, VERIFY_TITLE, annotate_claims,
                                      latest_verifications, verification_rows)
from leaderboard.wandb_export import WANDB_MODES, log_leaderboard

__all__ = ["build_leaderboard", "load_frame", "results_columns", "OUTPUT_FILES"]

log = logging.getLogger("litbench.leaderboard")

OUTPUT_FILES = {
    "results": "results.csv",
    "claims": "claims.csv",
    "markdown": "LEADERBOARD.md",
    "html": "index.html",
}


def results_columns(frame: pd.DataFrame) -> list[str]:
    """results.csv: the CLI contract's columns first, then run_id and the error of failed runs."""
    values = [column for column in frame.columns if column.startswith((METRIC_PREFIX, COST_PREFIX))]
    return [*IDENTITY_COLUMNS, *values, *RUN_COLUMNS]


def build_leaderboard(results_dir: str | Path, out_dir: str | Path, specs: dict[str, dict] | None = None,
                      wandb_mode: str = "disabled", wandb_project: str = "litbench",
                      readme: str | Path | None = None, readme_profile: str = "cpu") -> dict[str, Path]:
    """Write results.csv, claims.csv, LEADERBOARD.md and index.html into ``out_dir``.

    Returns ``{"results", "claims", "markdown", "html"}`` -> path, plus ``"wandb"`` -> the local
    run folder when ``wandb_mode`` is ``offline`` or ``online``, and ``"readme"`` when ``readme``
    names a README whose results excerpt (``leaderboard.readme``) was regenerated.
    """
    if wandb_mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {wandb_mode!r}")
    if readme is not None:
        check_markers(Path(readme))  # before any file is written: a bad README changes nothing
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    records, problems = load_records(results_dir)
    frame = records_to_frame(records, problems=problems)
    resolved_specs = resolve_specs(records, specs)

    verdicts = []
    for benchmark in sorted(frame["benchmark"].unique()):
        spec = resolved_specs.get(benchmark)
        if not spec:
            problems.append(f"{benchmark}: no spec given and no record carries a spec snapshot; "
                            "metrics are not ranked and claims are not judged")
            continue
        verdicts.append(judge_claims(frame, benchmark=benchmark, metrics=dict(spec.get("metrics") or {}),
                                     claims=list(spec.get("claims") or []), gates=spec.get("gates"),
                                     problems=problems))
    claims = pd.concat(verdicts, ignore_index=True) if verdicts else claims_frame([])
    verifications = latest_verifications(results_dir, problems)
    claims = annotate_claims(claims, verifications)  # a `verification` note beside each claim's reason
    for problem in problems:
        log.warning("%s", problem)

    report = build_report(frame, specs=resolved_specs, claims=claims, problems=problems,
                          results_dir=str(results_dir),
                          generated_at=utc_now("%Y-%m-%d %H:%M UTC"))
    if verifications:
        report.sections.append(Section(VERIFY_TITLE, VERIFY_CAPTION, VERIFY_HEADER, verification_rows(verifications)))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / filename for name, filename in OUTPUT_FILES.items()}
    frame[results_columns(frame)].to_csv(paths["results"], index=False)
    claims[list(CLAIMS_CSV_COLUMNS)].to_csv(paths["claims"], index=False)
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    link_base = os.path.relpath(results_dir.resolve(), out_dir.resolve()).replace(os.sep, "/")
    paths["html"].write_text(render_html(report, link_base=link_base), encoding="utf-8")

    if readme is not None:
        update_readme(Path(readme), render_excerpt(report, frame, profile=readme_profile))
        paths["readme"] = Path(readme)
    run_dir = log_leaderboard(report, mode=wandb_mode, project=wandb_project, save_dir=out_dir)
    if run_dir is not None:
        paths["wandb"] = run_dir
    return paths
