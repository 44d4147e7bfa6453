"""The leaderboard built from hand-made records: tables, files, claims, HTML and wandb offline."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from leaderboard.build import build_leaderboard, load_frame

ALPHA_SPEC = {
    "metrics": {"primary": "acc", "higher_is_better": {"acc": True, "loss": False}},
    "claims": [
        {"id": "beats-linear", "text": "ours beats a linear probe", "metric": "acc", "method": "ours",
         "baseline": "linear"},
        {"id": "lower-loss", "text": "ours has lower loss than k-means", "metric": "loss", "method": "ours",
         "baseline": "kmeans", "note": "k-means is run for 3 iterations only"},
        {"id": "linear-beats-ours", "text": "the linear probe beats ours", "metric": "acc", "method": "linear",
         "baseline": "ours"},
    ],
    # k-means reaches 0.50, 0.52, 0.54: below the floor on 2 of 3 seeds, so its claim is invalid
    "gates": [{"id": "kmeans-learned", "metric": "acc", "min": 0.53, "methods": ["kmeans"]}],
    "paper_results": {"Cora": {"ours": {"acc": 0.7}}},
    "paper": {"title": "Alpha Networks", "venue": "NeurIPS 2099", "arxiv": "9901.00001", "code": "alpha/alpha"},
}
# beta's spec is not passed to build_leaderboard: it comes from the newest record's snapshot.
BETA_SPEC = {
    "metrics": {"primary": "fid", "higher_is_better": {"fid": False}},
    "claims": [{"id": "gen-beats-base", "text": "gen has lower FID", "metric": "fid", "method": "gen",
                "baseline": "base"}],
    "paper": {"title": "Beta GAN", "venue": "ICML 2098"},
}
STALE_BETA_SPEC = {"metrics": {"primary": "fid", "higher_is_better": {"fid": True}}, "claims": []}

ALPHA_COST = {"params": 1_234_567, "flops": 3.4e9, "fit_s": 12.0, "train_samples_per_s": 1500.0,
              "peak_rss_mb": 512.0, "eval_s": 1.0, "peak_gpu_mb": None}
ALPHA_RUNS = {  # method: (role, acc per seed, loss per seed, fit seconds)
    "ours": ("proposed", [0.60, 0.62, 0.64], [0.30, 0.32, 0.34], 12.0),
    "kmeans": ("baseline", [0.50, 0.52, 0.54], [0.20, 0.20, 0.20], 0.5),
    "linear": ("baseline", [0.55, 0.56, 0.57], [0.40, 0.41, 0.42], 3.0),
}


@pytest.fixture
def populated(write_run, results_dir: Path) -> Path:
    for method, (role, accs, losses, fit_s) in ALPHA_RUNS.items():
        for seed, (acc, loss) in enumerate(zip(accs, losses)):
            write_run(benchmark="alpha", method=method, role=role, seed=seed, metrics={"acc": acc, "loss": loss},
                      cost={**ALPHA_COST, "fit_s": fit_s})
    write_run(benchmark="alpha", method="linear", role="baseline", seed=3, error_type="RuntimeError")
    write_run(benchmark="beta", method="gen", role="proposed", dataset="synthetic", profile="smoke", seed=0,
              metrics={"fid": 20.0}, cost={"fit_s": 2.0}, spec=BETA_SPEC, finished_at="2026-02-01T00:00:00+00:00")
    write_run(benchmark="beta", method="base", role="baseline", dataset="synthetic", profile="smoke", seed=0,
              metrics={"fid": 35.5}, cost={"fit_s": 1.0}, spec=STALE_BETA_SPEC,
              finished_at="2026-01-01T00:00:00+00:00")
    for seed in (0, 1):
        write_run(benchmark="beta", method="broken", role="baseline", dataset="synthetic", profile="smoke",
                  seed=seed, error_type="ValueError", spec=STALE_BETA_SPEC)
    (results_dir / "alpha" / "Cora" / "ghost" / "cpu").mkdir(parents=True)
    (results_dir / "alpha" / "Cora" / "ghost" / "cpu" / "seed-0.json").write_text("{not json")
    (results_dir / "alpha" / "Cora" / "ghost" / "cpu" / "seed-1.json").write_text(json.dumps({"schema": "old/0"}))
    return results_dir


def _table_row(markdown: str, method: str, *, after: str) -> list[str]:
    """Cells of ``method``'s row in the first table after the heading ``after``."""
    section = markdown[markdown.index(after):]
    for line in section.splitlines():
        if line.startswith(f"| {method} |"):
            return [cell.strip() for cell in line.strip("|").split(" | ")]
    raise AssertionError(f"no row for {method} after {after!r}")


def _header(markdown: str, *, after: str) -> list[str]:
    section = markdown[markdown.index(after):]
    line = next(line for line in section.splitlines() if line.startswith("| method |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_load_frame_is_tidy_and_reports_corrupt_records(populated: Path) -> None:
    frame, problems = load_frame(populated)
    assert len(frame) == 9 + 1 + 2 + 2  # alpha ok + alpha failed + beta ok + beta failed
    assert list(frame.columns[:7]) == ["benchmark", "method", "role", "dataset", "profile", "seed", "status"]
    assert {"metric/acc", "metric/loss", "metric/fid", "cost/params", "cost/fit_s", "run_id", "error_type",
            "torch_version", "accelerator", "world_size", "git_sha", "finished_at"} <= set(frame.columns)
    failed = frame[frame["status"] == "failed"]
    assert sorted(failed["error_type"]) == ["RuntimeError", "ValueError", "ValueError"]
    assert frame.loc[frame["run_id"] == "alpha/Cora/ours/cpu/seed-1", "metric/acc"].item() == pytest.approx(0.62)
    assert len(problems) == 2
    assert any("ghost/cpu/seed-0.json" in line and "not valid JSON" in line for line in problems)
    assert any("ghost/cpu/seed-1.json" in line and "schema" in line for line in problems)
    assert all("\n" not in line for line in problems)


def test_a_stage_label_in_cost_is_a_text_column_not_a_problem(write_run, results_dir: Path) -> None:
    """A run that trained nothing names the cached stage whose speed it reports (`metered_stage`)."""
    write_run(benchmark="b", method="tested", role="proposed", seed=0, cost={"fit_s": 0.0, "metered_stage": "base",
                                                                            "train_samples_per_s": 120.0})
    write_run(benchmark="b", method="trained", role="baseline", seed=0, cost={"fit_s": 3.0, "metered_stage": None})
    frame, problems = load_frame(results_dir)
    assert problems == []
    rows = frame.set_index("method")
    assert rows.loc["tested", "metered_stage"] == "base" and rows.loc["trained", "metered_stage"] == ""
    assert rows.loc["tested", "cost/train_samples_per_s"] == 120.0 and "cost/metered_stage" not in frame.columns


def test_markdown_tables(populated: Path, tmp_path: Path) -> None:
    paths = build_leaderboard(populated, tmp_path / "out", specs={"alpha": ALPHA_SPEC})
    markdown = paths["markdown"].read_text()
    alpha = "### Cora · profile `cpu`"
    header = _header(markdown, after=alpha)
    assert header[:5] == ["method", "role", "acc ↑", "loss ↓", "Δ acc vs linear"]
    assert header[5:10] == ["params", "FLOPs", "fit s", "train samples/s", "peak RSS MB"]
    assert "peak GPU MB" not in header  # no run measured it

    ours = dict(zip(header, _table_row(markdown, "ours", after=alpha)))
    assert ours["acc ↑"] == "**0.620 ± 0.020 (3)** · paper 0.700 (paper scale: compare the full profile)"  # best acc, paper number beside ours
    assert ours["loss ↓"] == "0.320 ± 0.020 (3)"
    assert ours["Δ acc vs linear"] == "+0.060"
    assert (ours["params"], ours["FLOPs"], ours["fit s"], ours["train samples/s"], ours["peak RSS MB"]) == \
        ("1.2M", "3.4 GFLOP", "12.0", "1,500", "512")
    kmeans = dict(zip(header, _table_row(markdown, "kmeans", after=alpha)))
    assert kmeans["loss ↓"] == "**0.200 ± 0.000 (3)**"  # lowest loss is the best loss
    assert kmeans["acc ↑"] == "0.520 ± 0.020 (3)"
    assert kmeans["Δ acc vs linear"] == "-0.040"
    linear = dict(zip(header, _table_row(markdown, "linear", after=alpha)))
    assert linear["Δ acc vs linear"] == "ref"
    assert (linear["runs"], linear["failed"]) == ("3", "1 (RuntimeError ×1)")
    # leaderboard order: best primary metric first
    rows = [line.split(" | ")[0] for line in markdown[markdown.index(alpha):].split("### Claims")[0].splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert rows == ["| ours", "| linear", "| kmeans"]

    beta = "### synthetic · profile `smoke`"
    beta_header = _header(markdown, after=beta)
    assert beta_header[2:4] == ["fid ↓", "Δ fid vs base"]  # direction from the newest snapshot, not the stale one
    gen = dict(zip(beta_header, _table_row(markdown, "gen", after=beta)))
    assert gen["fid ↓"] == "**20.00 (1)**"  # one run: no ±
    assert gen["Δ fid vs base"] == "-15.50"
    broken = dict(zip(beta_header, _table_row(markdown, "broken", after=beta)))
    assert (broken["fid ↓"], broken["runs"], broken["failed"]) == ("—", "0", "2 (ValueError ×2)")

    summary = markdown[markdown.index("## Summary"):markdown.index("## Problems")]
    assert summary.splitlines()[2] == ("| benchmark | paper | claims reproduced / judged | not reproduced | inconclusive "
                                       "| invalid | ok runs | failed runs |")
    assert "| alpha | Alpha Networks · NeurIPS 2099 · arXiv 9901.00001 · code alpha/alpha | 1 / 3 | 1 | 0 | 1 | 9 | 1 |" \
        in summary
    assert "| beta | Beta GAN · ICML 2098 | 0 / 1 | 0 | 1 | 0 | 2 | 2 |" in summary
    invalid_row = next(line for line in markdown.splitlines() if line.startswith("| lower-loss:"))
    assert "| **invalid** | kmeans on Cora fails gate kmeans-learned (acc >= 0.53): 0.500, 0.520 on 2/3 seeds " \
           "— k-means is run for 3 iterations only |" in invalid_row
    # machines and versions come after the benchmarks' results, with the wall-time and perf tables
    costs = markdown[markdown.index("## Calibration, wall time and performance"):]
    assert markdown.index("## alpha") < markdown.index("## Calibration, wall time and performance")
    assert "accelerator cpu; devices 1; world_size 1; num_nodes 1; cpu Test CPU (14 runs)" in costs
    # Versions with a run count; the commits are counted, not listed (each record keeps its own sha).
    assert "python 3.11.9; torch 2.14.1; lightning 2.6.6; torchmetrics 1.9.0 (1 commit) (14 runs)" in costs
    assert "ghost/cpu/seed-0.json" in markdown[markdown.index("## Problems"):]


def test_metrics_the_spec_names_show_their_median_too(write_run, results_dir: Path, tmp_path: Path) -> None:
    """PMT-IQA's paper reports the median over random splits: a metric listed under metrics.median
    shows it beside the mean; the others do not."""
    spec = {**ALPHA_SPEC, "metrics": {**ALPHA_SPEC["metrics"], "median": ["acc"]}, "claims": [], "gates": []}
    for seed, acc in enumerate([0.50, 0.52, 0.90]):
        write_run(benchmark="alpha", method="ours", role="proposed", seed=seed, metrics={"acc": acc, "loss": 0.3})
    markdown = build_leaderboard(results_dir, tmp_path / "out", specs={"alpha": spec})["markdown"].read_text()
    row = dict(zip(_header(markdown, after="### Cora"), _table_row(markdown, "ours", after="### Cora")))
    assert row["acc ↑"].startswith("**0.640 ± 0.225 (3), median 0.520**")
    assert row["loss ↓"] == "**0.300 ± 0.000 (3)**"


def test_csv_files(populated: Path, tmp_path: Path) -> None:
    paths = build_leaderboard(populated, tmp_path / "out", specs={"alpha": ALPHA_SPEC})
    with paths["results"].open() as handle:
        results = list(csv.DictReader(handle))
    columns = list(results[0])
    assert columns[:7] == ["benchmark", "method", "role", "dataset", "profile", "seed", "status"]
    assert columns[7:10] == ["metric/acc", "metric/fid", "metric/loss"]
    assert columns[10:24] == ["cost/fit_s", "cost/eval_s", "cost/stage_s", "cost/run_s", "cost/cpu_s", "cost/train_samples_per_s", "cost/data_share",
                              "cost/peak_rss_mb", "cost/peak_gpu_mb", "cost/params", "cost/flops", "cost/achieved_gflops",
                              "cost/probe_gflops", "cost/mfu"]
    assert len(results) == 14
    assert sum(row["status"] == "failed" for row in results) == 3

    with paths["claims"].open() as handle:
        claims = {row["claim"]: row for row in csv.DictReader(handle)}
    assert list(next(iter(claims.values()))) == [
        "benchmark", "dataset", "profile", "claim", "metric", "method", "baseline", "n", "diff_mean", "ci_low",
        "ci_high", "verdict", "margin", "relative", "min_effect", "detectable", "reason"]
    # ours - linear on acc: diffs 0.05, 0.06, 0.07 -> 0.06, interval [0.0352, 0.0848]
    assert claims["beats-linear"]["verdict"] == "reproduced"
    assert claims["beats-linear"]["n"] == "3"
    assert float(claims["beats-linear"]["diff_mean"]) == pytest.approx(0.06)
    assert float(claims["beats-linear"]["ci_low"]) == pytest.approx(0.035159, abs=1e-6)
    assert float(claims["beats-linear"]["detectable"]) == pytest.approx(0.024841, abs=1e-6)
    assert claims["beats-linear"]["reason"] == "" and claims["beats-linear"]["min_effect"] == ""
    # loss (lower is better): ours 0.32 vs k-means 0.20 -> improvement -0.12, but k-means failed its gate
    assert claims["lower-loss"]["verdict"] == "invalid"
    assert claims["lower-loss"]["reason"] == "kmeans on Cora fails gate kmeans-learned (acc >= 0.53): 0.500, 0.520 on 2/3 seeds"
    assert float(claims["lower-loss"]["diff_mean"]) == pytest.approx(-0.12)
    assert claims["linear-beats-ours"]["verdict"] == "not reproduced"  # interval [-0.0848, -0.0352]
    # beta: one seed each, judged with the snapshot's lower-is-better direction
    assert claims["gen-beats-base"]["verdict"] == "inconclusive"
    assert float(claims["gen-beats-base"]["diff_mean"]) == pytest.approx(15.5)
    assert claims["gen-beats-base"]["ci_low"] == ""


def test_index_html_is_self_contained(populated: Path, tmp_path: Path) -> None:
    paths = build_leaderboard(populated, tmp_path / "out", specs={"alpha": ALPHA_SPEC})
    page = paths["html"].read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", page)  # in-page anchors and embedded data only
    # (run artifacts, when there are any, link to their files by relative paths: see the test below)
    assert page.count('<section class="benchmark"') == 2
    assert 'id="bench-alpha"' in page and 'id="bench-beta"' in page
    assert page.count('<table class="sortable">') >= 5  # summary, 2 result tables, 2 claims tables
    assert "<script>" in page and "addEventListener" in page
    assert '<td data-sort="0.62"><strong>0.620 ± 0.020 (3)</strong> <span class="paper">· paper 0.700 (paper scale: compare the full profile)</span></td>' in page
    forests = page.count('<svg class="forest"')
    assert forests == 3  # every claim in the summary, and one per benchmark
    assert page.count("<svg") - forests == 2  # the metric-vs-cost plots
    # one point per method with a fit time (3 + 2), one per claim row in the benchmarks' forest plots (3 + 1)
    # and in the overall one, which leaves out the smoke profile's beta claim (3)
    assert page.count('<circle cx="') == (3 + 2) + (3 + 1) + 3
    # results first: the first benchmark's section comes before the wall-time and perf tables
    assert page.index('id="bench-alpha"') < page.index('id="costs"')
    # the forest row of the invalid claim: grey, and its reason on hover
    row = next(part for part in page.split('<g class="forest-row') if "lower-loss · Cora" in part)
    assert row.startswith(' verdict-invalid">') and "kmeans on Cora fails gate kmeans-learned" in row
    assert 'class="verdict-reproduced">reproduced<' in page
    invalid_row = next(row for row in page.split("<tr") if row.startswith(' class="claim-') and "lower-loss" in row)
    assert invalid_row.startswith(' class="claim-invalid">')
    assert 'class="verdict-invalid">invalid</td>' in invalid_row
    assert "kmeans on Cora fails gate kmeans-learned (acc &gt;= 0.53)" in invalid_row
    assert ".verdict-invalid {" in page  # its own colour
    # hovering a results row shows the command that remakes it
    assert 'title="litbench run alpha --profile cpu --datasets Cora --methods ours --data-dir ../shared/data">ours' in page


def test_run_artifacts_are_thumbnails_linking_to_their_files_and_listed_in_markdown(write_run, results_dir: Path,
                                                                                   tmp_path: Path) -> None:
    from PIL import Image

    folder = results_dir / "doorping/mnist/doorping/cpu/seed-0.artifacts"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(folder / "distilled.png")
    (folder / "groove.mid").write_bytes(b"MThd\x00\x00\x00\x06" + bytes(6))
    relative = [str((folder / name).relative_to(results_dir)) for name in ("distilled.png", "groove.mid", "gone.png")]
    for seed in (1, 0):  # the lowest seed's files are shown
        write_run(benchmark="doorping", method="doorping", role="proposed", dataset="mnist", seed=seed,
                  metrics={"asr": 0.9}, artifacts=relative if seed == 0 else ["doorping/other.png"])
    paths = build_leaderboard(results_dir, tmp_path / "out",
                              specs={"doorping": {"metrics": {"primary": "asr", "higher_is_better": {"asr": True}}}})
    page = paths["html"].read_text()
    # links are relative to the page's folder (out/), so they open from disk
    link = "../results/doorping/mnist/doorping/cpu/seed-0.artifacts"
    assert f'<a href="{link}/distilled.png"><img src="data:image/jpeg;base64,' in page
    assert f'<a href="{link}/groove.mid">groove.mid</a>' in page and "data:audio/midi" not in page
    for href in (f"{link}/distilled.png", f"{link}/groove.mid"):
        assert (paths["html"].parent / href).resolve().is_file()
    assert "gone.png: missing" in page and "other.png" not in page
    markdown = paths["markdown"].read_text()
    assert "### Run artifacts" in markdown and "`doorping/mnist/doorping/cpu/seed-0.artifacts/distilled.png`" in markdown


def test_html_escapes_record_text(write_run, results_dir: Path, tmp_path: Path) -> None:
    write_run(benchmark="esc", method="<b>m</b>", role="proposed", seed=0, metrics={"acc": 0.5}, cost={"fit_s": 1.0})
    paths = build_leaderboard(results_dir, tmp_path / "out",
                              specs={"esc": {"metrics": {"primary": "acc", "higher_is_better": {"acc": True}}}})
    page = paths["html"].read_text()
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page


def test_empty_results_folder(tmp_path: Path) -> None:
    paths = build_leaderboard(tmp_path / "nothing", tmp_path / "out")
    assert "No run records found" in paths["markdown"].read_text()
    assert paths["results"].read_text().startswith("benchmark,method,role,dataset,profile,seed,status")
    assert "no such results folder" in paths["html"].read_text()


def test_wandb_offline_tables(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    paths = build_leaderboard(populated, tmp_path / "out", specs={"alpha": ALPHA_SPEC}, wandb_mode="offline",
                              wandb_project="litbench-test")
    run_dir = paths["wandb"]
    assert run_dir.parent == tmp_path / "out" / "wandb" and run_dir.name.startswith("offline-run-")

    def table(key: str) -> dict:
        files = sorted((run_dir / "files" / "media" / "table").glob(f"{key}_0_*.table.json"))
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    alpha = table("alpha")
    rows = [dict(zip(alpha["columns"], row)) for row in alpha["data"]]
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"ours", "kmeans", "linear"}
    assert by_method["ours"]["metric/acc/mean"] == pytest.approx(0.62)
    assert by_method["ours"]["metric/acc/std"] == pytest.approx(0.02)
    assert by_method["ours"]["metric/acc/n"] == 3
    assert (by_method["linear"]["runs_ok"], by_method["linear"]["runs_failed"]) == (3, 1)
    assert "metric/fid/mean" not in alpha["columns"]  # beta's metric does not leak into alpha's table
    beta = table("beta")
    assert {row[beta["columns"].index("method")] for row in beta["data"]} == {"gen", "base", "broken"}
    bars = table("alpha/Cora/cpu/acc_table")  # wandb.plot.bar keeps its data as "<key>_table"
    assert bars["columns"] == ["method", "mean"]
    assert dict(map(tuple, bars["data"])) == pytest.approx({"ours": 0.62, "kmeans": 0.52, "linear": 0.56})
    claims = table("claims")
    verdicts = {row[claims["columns"].index("claim")]: row[claims["columns"].index("verdict")] for row in claims["data"]}
    assert verdicts == {"beats-linear": "reproduced", "lower-loss": "invalid", "linear-beats-ours": "not reproduced",
                        "gen-beats-base": "inconclusive"}
    reasons = {row[claims["columns"].index("claim")]: row[claims["columns"].index("reason")] for row in claims["data"]}
    assert reasons["lower-loss"].startswith("kmeans on Cora fails gate kmeans-learned")
    assert {"ci_low", "ci_high", "detectable", "note"} <= set(claims["columns"])
    forest = list((run_dir / "files" / "media" / "html").glob("claims_forest_0_*.html"))
    assert len(forest) == 1 and forest[0].read_text().count('<g class="forest-row') == 4
    import subprocess

    inspected = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                               capture_output=True, text=True, timeout=120)
    summary = json.loads(inspected.stdout)
    assert summary["name"] == "leaderboard" and summary["project"] == "litbench-test"
    assert summary["summary"]["claims_reproduced"] == 1 and summary["summary"]["claims_judged"] == 4
    assert summary["summary"]["claims_invalid"] == 1 and summary["summary"]["claims_not_reproduced"] == 1
    assert summary["summary"]["runs_failed"] == 3


def test_leaderboard_reads_records_only() -> None:
    """DESIGN.md: leaderboard imports nothing of benchmarks, modules or datamodules."""
    import ast

    import leaderboard

    package = Path(leaderboard.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"benchmarks", "modules", "datamodules"}, f"{source.name} imports {roots}"


def test_wall_time_overhead_and_data_share_per_benchmark_and_profile(write_run, results_dir: Path, tmp_path: Path) -> None:
    for seed, (run_s, stage_s, fit_s, eval_s, share) in enumerate([(10.0, 0.0, 8.0, 1.0, 0.04), (20.0, 5.0, 12.0, 1.0, 0.06)]):
        cpu = {"cpu_s": 9.0} if seed == 0 else {}  # a record from before cpu_s was recorded has none
        write_run(benchmark="alpha", method="ours", role="proposed", seed=seed, metrics={"acc": 0.5},
                  cost={"run_s": run_s, "stage_s": stage_s, "fit_s": fit_s, "eval_s": eval_s, "data_share": share, **cpu})
    write_run(benchmark="alpha", method="ours", role="proposed", seed=2, error_type="RuntimeError")
    paths = build_leaderboard(results_dir, tmp_path / "out", specs={"alpha": ALPHA_SPEC})
    markdown = paths["markdown"].read_text()
    # wall 30 s, inside stages+fit+test 27 s -> 10% overhead; data share mean of 4% and 6%
    row = next(line for line in markdown.splitlines() if line.startswith("| alpha | cpu |"))
    assert [cell.strip() for cell in row.strip("|").split("|")] == ["alpha", "cpu", "2", "30.0", "9.0 (1 of 2 runs)", "10.0%", "5.0%"]
    assert "<h3>Wall time</h3>" in paths["html"].read_text()


def test_a_reference_row_is_shown_but_never_the_best_baseline(write_run, results_dir: Path, tmp_path: Path) -> None:
    for seed in range(2):
        write_run(benchmark="gen", method="model", role="proposed", seed=seed, metrics={"acc": 0.6})
        write_run(benchmark="gen", method="weak", role="baseline", seed=seed, metrics={"acc": 0.5})
        write_run(benchmark="gen", method="human", role="reference", seed=seed, metrics={"acc": 0.9})
    paths = build_leaderboard(results_dir, tmp_path / "out",
                              specs={"gen": {"metrics": {"primary": "acc", "higher_is_better": {"acc": True}}}})
    markdown = paths["markdown"].read_text()
    assert "Δ acc vs weak" in _header(markdown, after="## gen")
    assert _table_row(markdown, "human", after="## gen")[1] == "reference"


def test_artifact_images_are_embedded_as_small_thumbnails(write_run, results_dir: Path, tmp_path: Path) -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    folder = results_dir / "doorping/mnist/doorping/cpu/seed-0.artifacts"
    folder.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)  # incompressible, ~1 MB
    Image.fromarray(noise).save(folder / "grid.png")
    write_run(benchmark="doorping", method="doorping", role="proposed", dataset="mnist", seed=0, metrics={"asr": 0.9},
              artifacts=["doorping/mnist/doorping/cpu/seed-0.artifacts/grid.png"])
    page = build_leaderboard(results_dir, tmp_path / "out",
                             specs={"doorping": {"metrics": {"primary": "asr", "higher_is_better": {"asr": True}}}})["html"].read_text()
    embedded = page.split('<img src="data:image/jpeg;base64,')[1].split('"')[0]
    with Image.open(io.BytesIO(base64.b64decode(embedded))) as thumbnail:
        assert thumbnail.size == (128, 128)
    assert len(page) < 200_000  # a ~1 MB image costs the page a few kB
    assert (folder / "grid.png").stat().st_size > 1_000_000  # the file itself keeps full size


def test_software_summary_counts_commits_and_uncommitted_trees() -> None:
    import pandas as pd

    from leaderboard.report import _software_counts

    versions = {"python_version": "3.11", "torch_version": "2.14", "lightning_version": "2.6", "torchmetrics_version": "1.9"}
    frame = pd.DataFrame([{**versions, "git_sha": "a", "git_dirty": False}, {**versions, "git_sha": "b", "git_dirty": True},
                          {**versions, "git_sha": "b", "git_dirty": False},
                          {**versions, "torch_version": "2.15", "git_sha": "c", "git_dirty": False}])
    assert _software_counts(frame) == [
        ("python 3.11; torch 2.14; lightning 2.6; torchmetrics 1.9 (2 commits, 1 run from an uncommitted tree)", 3),
        ("python 3.11; torch 2.15; lightning 2.6; torchmetrics 1.9 (1 commit)", 1)]


def test_scatter_labels_never_overlap_and_stay_in_the_plot() -> None:
    from leaderboard.scatter import spread_labels

    # three dots at nearly the same height: labels 13 px apart, in the dots' order
    assert spread_labels([100.0, 101.0, 99.0], gap=13, low=0, high=300) == [112.0, 125.0, 99.0]
    # a column that would run past the bottom is pushed up as a whole, gaps kept
    placed = spread_labels([295.0, 296.0, 297.0], gap=13, low=0, high=300)
    assert sorted(placed) == [274.0, 287.0, 300.0]
    assert all(abs(a - b) >= 13 for i, a in enumerate(placed) for b in placed[i + 1:])
