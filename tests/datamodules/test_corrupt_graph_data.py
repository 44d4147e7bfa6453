"""Corrupt Planetoid files: one line naming the file and the fix, from prepare_data (the pre-run
check), and through the CLI exit 2 with the results folder untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.cli import main
from datamodules.graphs import AttributedGraphDataModule, planetoid_raw_file_names
from datamodules.integrity import VERIFIED_FILE
from tests_support import damage_file, writable_copy

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("LITBENCH_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
CORA_RAW = DATA_DIR / "planetoid" / "Cora" / "raw"
pytestmark = pytest.mark.skipif(not CORA_RAW.is_dir(), reason=f"shared Cora files not found at {CORA_RAW}")


def corrupted_copy(root: Path, file_name: str, how: str, where: float) -> Path:
    """A data root whose Cora folder holds the real files except one truncated, emptied or garbled."""
    raw = writable_copy(CORA_RAW, root / "planetoid" / "Cora" / "raw")
    damage_file(raw / file_name, how, where, garble_bytes=16)
    return root


@settings(max_examples=int(os.environ.get("LITBENCH_HYPOTHESIS_EXAMPLES", 40)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_name=st.sampled_from(planetoid_raw_file_names("Cora")), how=st.sampled_from(["truncate", "empty", "garble"]),
       where=st.floats(0.0, 0.99))
def test_any_corrupt_raw_file_is_one_line_naming_it(tmp_path_factory, file_name: str, how: str, where: float) -> None:
    root = corrupted_copy(tmp_path_factory.mktemp("data"), file_name, how, where)
    datamodule = AttributedGraphDataModule(dataset="Cora", data_dir=str(root), cache_dir=str(root / "cache"))
    with pytest.raises(ValueError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert "\n" not in message and file_name in message and "kimiyoung/planetoid" in message
    assert str(root / "planetoid" / "Cora" / "raw") in message  # the user's file, not the cache's link


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    root = corrupted_copy(tmp_path / "data", "ind.cora.y", "garble", 1.0)  # garbling past the end: unchanged
    cache = tmp_path / "cache"
    AttributedGraphDataModule(dataset="Cora", data_dir=str(root), cache_dir=str(cache)).prepare_data()
    assert len(__import__("json").loads((cache / VERIFIED_FILE).read_text())) == 8
    hashed = []
    monkeypatch.setattr("datamodules.integrity.calculate_md5", lambda path: hashed.append(path) or "0" * 32)
    AttributedGraphDataModule(dataset="Cora", data_dir=str(root), cache_dir=str(cache)).prepare_data()
    assert hashed == []
    graph_file = root / "planetoid" / "Cora" / "raw" / "ind.cora.graph"
    os.utime(graph_file, ns=(1, 1))  # a new version of one file: only that one is hashed, and fails here
    with pytest.raises(ValueError, match="ind.cora.graph is not the published file"):
        AttributedGraphDataModule(dataset="Cora", data_dir=str(root), cache_dir=str(cache)).prepare_data()
    assert [Path(p).name for p in hashed] == ["ind.cora.graph"]


def test_cli_stops_with_exit_2_and_leaves_results_untouched(tmp_path: Path, capsys) -> None:
    root = corrupted_copy(tmp_path / "data", "ind.cora.graph", "truncate", 0.5)
    results = tmp_path / "results"
    (results / "kept").mkdir(parents=True)
    (results / "kept" / "seed-0.json").write_text("{}")
    code = main(["run", "dcagc", "--profile", "smoke", "--datasets", "Cora", "--methods", "kmeans_features",
                 "--data-dir", str(root), "--results", str(results), "--cache-dir", str(tmp_path / "cache"),
                 "--wandb", "disabled"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    # The md5 check names the file before anything unpickles it (a damaged pickle can ask for any memory).
    assert "planetoid/Cora/raw/" in err and "is truncated or modified" in err and "kimiyoung/planetoid" in err and "\n" not in err
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()) == ["kept/seed-0.json"]


def test_a_bad_dataset_stops_only_the_runs_that_need_it(tmp_path: Path, capsys) -> None:
    root = corrupted_copy(tmp_path / "data", "ind.cora.x", "garble", 0.5)
    results = tmp_path / "results"
    code = main(["run", "dcagc", "--profile", "smoke", "--datasets", "sbm-synthetic,Cora", "--methods", "kmeans_features",
                 "--data-dir", str(root), "--results", str(results), "--cache-dir", str(tmp_path / "cache"),
                 "--wandb", "disabled"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "dcagc/Cora" in err and "ind.cora.x" in err and "the others did" in err and "\n" not in err
    ran = sorted(p.relative_to(results).as_posix() for p in results.glob("dcagc/*/*/*/seed-*.json"))
    assert ran == ["dcagc/sbm-synthetic/kmeans_features/smoke/seed-0.json"]
