"""README results excerpt: regenerated from records between the markers, nothing else touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.build import build_leaderboard
from leaderboard.readme import BEGIN, END, ReadmeMarkersError

SPEC = {"metrics": {"primary": "acc", "higher_is_better": {"acc": True}},
        "claims": [{"id": "a-beats-b", "text": "a beats b", "metric": "acc", "method": "a", "baseline": "b"},
                   {"id": "a-beats-b-above-floor", "text": "a beats b", "metric": "acc", "method": "a", "baseline": "b",
                    "datasets": ["Cora"]}],
        "gates": []}


def populate(write_run) -> None:
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.82, 0.61), (0.84, 0.62)]):
        write_run(benchmark="alpha", method="a", role="proposed", seed=seed, metrics={"acc": a}, spec=SPEC)
        write_run(benchmark="alpha", method="b", role="baseline", seed=seed, metrics={"acc": b}, spec=SPEC)
    write_run(benchmark="alpha", method="a", role="proposed", seed=0, profile="smoke", metrics={"acc": 0.1}, spec=SPEC)


def test_excerpt_is_generated_from_records_between_the_markers(write_run, results_dir: Path, tmp_path: Path) -> None:
    populate(write_run)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{BEGIN}\nstale numbers\n{END}\n\n## After\ntext\n")
    paths = build_leaderboard(results_dir, tmp_path / "out", readme=readme)
    text = paths["readme"].read_text()
    assert text.startswith("# Title\n\nintro\n\n" + BEGIN) and text.endswith(END + "\n\n## After\ntext\n")
    excerpt = text[text.index(BEGIN):text.index(END)]
    assert "stale numbers" not in excerpt
    assert "litbench run alpha --profile cpu --seeds 3 --datasets Cora --methods a,b --data-dir ../shared/data" in excerpt
    assert "cpu ×1 on Test CPU (6 runs)" in excerpt  # the machine of the cpu-profile records only
    assert "| alpha | Cora | a | proposed | acc | **0.820 ± 0.020 (3)** |" in excerpt
    assert "| alpha | Cora | b | baseline | acc | 0.610 ± 0.010 (3) |" in excerpt
    assert "| alpha | a-beats-b | Cora | +0.210 | [+0.185, +0.235] | 0.025 | **reproduced** |  |" in excerpt
    assert "2 claim rows: 2 reproduced, 0 not reproduced, 0 inconclusive, 0 invalid." in excerpt
    assert "0.1" not in excerpt.split("```")[-1].split("| acc |")[0]  # the smoke record is not shown


def test_excerpt_shows_invalid_verdicts_with_their_reason(write_run, results_dir: Path, tmp_path: Path) -> None:
    populate(write_run)
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    gated = {**SPEC, "gates": [{"id": "b-learned", "metric": "acc", "min": 0.615, "methods": ["b"]}]}
    text = build_leaderboard(results_dir, tmp_path / "out", specs={"alpha": gated}, readme=readme)["readme"].read_text()
    assert ("| alpha | a-beats-b | Cora | +0.210 | [+0.185, +0.235] | 0.025 | **invalid** | "
            "b on Cora fails gate b-learned (acc >= 0.615): 0.600, 0.610 on 2/3 seeds |") in text
    assert "2 claim rows: 0 reproduced, 0 not reproduced, 0 inconclusive, 2 invalid." in text


def test_cli_refuses_a_readme_without_markers_and_writes_nothing(write_run, results_dir: Path, tmp_path: Path) -> None:
    populate(write_run)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    out = tmp_path / "out"
    assert main(["leaderboard", "--results", str(results_dir), "--out", str(out), "--wandb", "disabled",
                 "--readme", str(readme)]) == 2
    assert readme.read_text() == "# no markers here\n" and not out.exists()
    with pytest.raises(ReadmeMarkersError, match="needs one line"):
        build_leaderboard(results_dir, out, readme=readme)
