"""index.html: one self-contained static page (inline CSS, JS and SVG; no network or file URL).

It opens from disk with no server and no network: nothing is fetched (run artifacts — distilled
images, BEV plots, generated MIDI — are embedded as ``data:`` URIs, up to a size cap), every text is escaped with
``html.escape``, tables sort by clicking a header (numbers by their mean via ``data-sort``), and the
metric-vs-cost plots are SVG drawn here in Python.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import re
from pathlib import Path

import pandas as pd

from leaderboard.formatting import MISSING
from leaderboard.forest import forest_svg
from leaderboard.scatter import scatter_svg
from leaderboard.markdown import (CLAIM_HEADER, COST_NOTE, SUMMARY_HEADER, VERDICT_INDEX, VERDICT_RULE, claim_cells, paper_line,
                                  summary_cells)
from leaderboard.report import ArtifactGroup, BenchmarkReport, Cell, GroupTable, LeaderboardReport

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
MAX_EMBEDDED_SVG_BYTES = 50_000
MAX_FILES_PER_RUN = 8
THUMBNAIL_PIXELS = 128  # raster images are embedded as a JPEG thumbnail of at most this size

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
.paper { color: #777; } .muted { color: #777; } .failed { color: #b00020; }
.verdict-reproduced { color: #1b7f3b; font-weight: 600; }
.verdict-not-reproduced { color: #b00020; font-weight: 600; }
.verdict-inconclusive { color: #a36b00; font-weight: 600; }
.verdict-invalid { color: #5a5a5a; background: #ececec; font-weight: 600; font-style: italic; }
tr.claim-invalid td { color: #666; }
.scroll { overflow-x: auto; max-width: 100%; } svg.forest text { font: 11px system-ui, sans-serif; }
.gallery { display: flex; flex-wrap: wrap; gap: .75rem; } figure { margin: 0; }
figure img { max-width: 360px; image-rendering: pixelated; border: 1px solid #ddd; }
.group { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
svg text { font: 11px system-ui, sans-serif; }
"""

# Click a header: sort that column; numbers (data-sort) numerically, empty cells always last.
SCRIPT = """
(function () {
  function key(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null || raw === "") { return null; }
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }
  function sortBy(table, index, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      header.addEventListener("click", function () { sortBy(table, index, header); });
    });
  });
})();
"""



def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def sort_attribute(value: float | str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f' data-sort="{esc(value)}"'


def render_cell(cell: Cell, *, hover: str = "") -> str:
    text = esc(cell.text)
    if cell.bold and cell.text != MISSING:
        text = f"<strong>{text}</strong>"
    if cell.note:
        text += f' <span class="paper">· {esc(cell.note)}</span>'
    title = f' title="{esc(hover)}"' if hover else ""
    return f"<td{sort_attribute(cell.sort_key)}{title}>{text}</td>"


def reproduce_command(benchmark: str, *, dataset: str, profile: str, method: str) -> str:
    """The command that remakes a results row (it skips the runs whose records exist)."""
    return (f"litbench run {benchmark} --profile {profile} --datasets {dataset} --methods {method} "
            "--data-dir ../shared/data")


def render_table(header: list[str], rows: list[str], *, sortable: bool = True) -> str:
    head = "".join(f"<th>{esc(column)}</th>" for column in header)
    css = ' class="sortable"' if sortable else ""
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_group(benchmark: str, table: GroupTable) -> str:
    rows = ["<tr>" + render_cell(row[0], hover=reproduce_command(benchmark, dataset=table.dataset, profile=table.profile,
                                                                  method=row[0].text))
            + "".join(render_cell(cell) for cell in row[1:]) + "</tr>" for row in table.rows]
    plot = scatter_svg(table.points, metric=table.primary or "",
                       title=f"{benchmark} · {table.dataset} · {table.profile}")
    return (f'<h3 id="{esc(slug(f"{benchmark}-{table.dataset}-{table.profile}"))}">{esc(table.dataset)} · '
            f'profile <code>{esc(table.profile)}</code></h3><div class="group"><div class="scroll">{render_table(table.columns, rows)}'
            f"</div>{plot}</div>")


def render_claims(benchmark: BenchmarkReport) -> str:
    if benchmark.claims.empty:
        return '<p class="muted">No claims could be judged (none in the spec, or no records of their methods).</p>'
    # data-sort keys: numbers where the column is numeric, so a click sorts them as numbers
    numeric = {"n": "n", "mean diff": "diff_mean", CLAIM_HEADER[7]: "ci_low", "detectable": "detectable"}
    rows = []
    for claim in benchmark.claims.itertuples(index=False):
        cells = []
        for header, text in zip(CLAIM_HEADER, claim_cells(claim)):
            key = float(getattr(claim, numeric[header])) if header in numeric else text
            style = f' class="verdict-{slug(text)}"' if header == CLAIM_HEADER[VERDICT_INDEX] else ""
            cells.append(f"<td{sort_attribute(key)}{style}>{esc(text)}</td>")
        rows.append(f'<tr class="claim-{slug(claim.verdict)}">' + "".join(cells) + "</tr>")
    return render_table(CLAIM_HEADER, rows)


def data_uri(path: Path) -> str:
    # fixed types for what benchmarks write; the platform's mimetypes table differs between systems
    known = {".svg": "image/svg+xml", ".png": "image/png"}
    mime = known.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def thumbnail_uri(path: Path) -> str:
    """A small JPEG of a raster image (an SVG as it is, when it is small), so the page stays light;
    the thumbnail links to the file itself, at full size and quality."""
    if path.suffix.lower() == ".svg":
        return data_uri(path) if path.stat().st_size <= MAX_EMBEDDED_SVG_BYTES else ""
    import io

    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def render_artifact(results_dir: Path, relative: str, *, link_base: str) -> str:
    """A thumbnail (images) or a name (MIDI, JSON, ...) linking to the file under the results folder;
    ``link_base`` is the results folder as seen from the page's folder."""
    path = results_dir / relative
    name = esc(Path(relative).name)
    if not path.is_file():
        return f'<p class="failed">{name}: missing from {esc(results_dir)}</p>'
    href = esc(f"{link_base.rstrip('/')}/{relative}")
    size = path.stat().st_size
    source = thumbnail_uri(path) if path.suffix.lower() in IMAGE_SUFFIXES else ""
    if source:
        return (f'<figure><a href="{href}"><img src="{source}" alt="{esc(relative)}"></a>'
                f"<figcaption>{name}</figcaption></figure>")
    return f'<p><a href="{href}">{name}</a> <span class="muted">({size:,} bytes)</span></p>'


def render_artifacts(groups: list[ArtifactGroup], results_dir: Path, *, link_base: str) -> str:
    parts = ["<h3>Run artifacts</h3>", '<p class="muted">What one run per method wrote (its lowest ok seed).</p>']
    for group in groups:
        shown = "".join(render_artifact(results_dir, path, link_base=link_base) for path in group.paths[:MAX_FILES_PER_RUN])
        more = len(group.paths) - MAX_FILES_PER_RUN
        extra = f'<p class="muted">+{more} more files in the results folder</p>' if more > 0 else ""
        parts.append(f"<h4>{esc(group.method)} <span class=\"muted\">({esc(group.role)}) · {esc(group.dataset)} · "
                     f"{esc(group.profile)} · seed {group.seed}</span></h4><div class=\"gallery\">{shown}</div>{extra}")
    return "\n".join(parts)


def render_benchmark(benchmark: BenchmarkReport, results_dir: Path | None = None, *, link_base: str = "") -> str:
    parts = [f'<section class="benchmark" id="bench-{esc(slug(benchmark.name))}">',
             f"<h2>{esc(benchmark.name)}</h2>"]
    if paper_line(benchmark):
        parts.append(f'<p class="muted">{esc(paper_line(benchmark))}</p>')
    parts.append(f"<p>{benchmark.runs_ok} ok runs, {benchmark.runs_failed} failed. Mean ± sample std over seeds "
                 "(n ok runs); best per metric in <strong>bold</strong> (↑ higher / ↓ lower is better); "
                 '<span class="paper">paper</span> is the number the paper reports. Click a header to sort. '
                 "The plot shows the primary metric against mean fit time, one point per method.</p>")
    parts += [render_group(benchmark.name, table) for table in benchmark.tables]
    parts += ["<h3>Claims</h3>", f'<div class="scroll">{render_claims(benchmark)}</div>']
    if not benchmark.claims.empty:
        parts.append(f'<div class="scroll">{forest_svg(benchmark.claims, title=f"claims of {benchmark.name}")}</div>')
    if benchmark.artifacts and results_dir is not None:
        parts.append(render_artifacts(benchmark.artifacts, results_dir, link_base=link_base or str(results_dir)))
    parts.append("</section>")
    return "\n".join(parts)


def render_summary(report: LeaderboardReport) -> str:
    rows = []
    for benchmark in report.benchmarks:
        anchor = f'<a href="#bench-{esc(slug(benchmark.name))}">{esc(benchmark.name)}</a>'
        counts = summary_cells(benchmark)
        cells = [f'<td data-sort="{esc(benchmark.name)}">{anchor}</td>',
                 f"<td>{esc(paper_line(benchmark) or MISSING)}</td>",
                 f'<td data-sort="{benchmark.verdict_counts().get("reproduced", 0)}">{esc(counts[0])}</td>',
                 *(f'<td data-sort="{esc(count)}">{esc(count)}</td>' for count in counts[1:])]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = SUMMARY_HEADER
    claims = [benchmark.claims for benchmark in report.benchmarks if not benchmark.claims.empty]
    claims = pd.concat(claims, ignore_index=True) if claims else pd.DataFrame()
    if not claims.empty and (claims["profile"] != "smoke").any():
        claims = claims[claims["profile"] != "smoke"]  # smoke runs test the harness, not the papers
    forest = forest_svg(claims, title="every claim", with_benchmark=True) if not claims.empty else ""
    return (f'<section id="summary"><h2>Summary</h2>{render_table(header, rows)}'
            f"<p>Claims are judged per (dataset, profile). {esc(VERDICT_RULE)}</p><p>{esc(COST_NOTE)}</p>"
            + (f'<details id="all-claims" open><summary>Every claim at a glance</summary>'
               f'<div class="scroll">{forest}</div></details>' if forest else "")
            + "</section>")


def render_costs(report: LeaderboardReport) -> str:
    """After the benchmarks: calibration, wall time and perf tables, then the machines and versions."""
    setups = "".join(f"<li>{esc(setup)} ({count} runs)</li>" for setup, count in report.hardware)
    versions = "".join(f"<li>{esc(setup)} ({count} runs)</li>" for setup, count in report.software)
    return (f'<section id="costs"><h2>Calibration, wall time and performance</h2>{render_sections(report)}'
            f"<h3>Hardware</h3><ul>{setups}</ul><h3>Software</h3><ul>{versions}</ul></section>")


def render_sections(report: LeaderboardReport) -> str:
    parts = []
    for section in report.sections:
        rows = ["<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in section.rows]
        parts.append(f'<h3>{esc(section.title)}</h3><p class="muted">{esc(section.caption)}</p>'
                     f"{render_table(section.header, rows)}")
    return "".join(parts)


def render_html(report: LeaderboardReport, *, link_base: str = "") -> str:
    """The page; ``link_base`` is the results folder relative to where the page is written, so run
    artifacts link to their files from disk (default: the results folder as given)."""
    problems = ""
    if report.problems:
        items = "".join(f"<li>{esc(problem)}</li>" for problem in report.problems)
        problems = f'<section id="problems"><h2>Problems</h2><ul class="failed">{items}</ul></section>'
    empty = "" if report.benchmarks else "<p>No run records found. Run <code>litbench run</code> first.</p>"
    body = "\n".join(render_benchmark(benchmark, Path(report.results_dir), link_base=link_base)
                     for benchmark in report.benchmarks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>litbench leaderboard</title><style>{STYLE}</style></head><body>\n"
        f"<h1>litbench leaderboard</h1><p class=\"muted\">Generated {esc(report.generated_at)} from "
        f"<code>{esc(report.results_dir)}</code>: {report.runs_ok} ok runs, {report.runs_failed} failed.</p>\n"
        f"{empty}{render_summary(report)}\n{problems}\n{body}\n{render_costs(report)}\n"
        f"<script>{SCRIPT}</script></body></html>\n")
