"""`litbench sweep`: a hyper-parameter chosen on the validation split, with its runs recorded apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.build import build_leaderboard
from leaderboard.calibration import CALIBRATION_SCHEMA, MalformedSweepError, validate_summary
from leaderboard.records import RecordStore


def _sweep(results: Path, *extra: str) -> int:
    return main(["sweep", "toy", "linear", "--param", "model.init_args.lr", "--values", "0.001,0.3",
                 "--profile", "smoke", "--seeds", "2", "--results", str(results), *extra])


def test_a_sweep_scores_the_validation_split_and_chooses_by_the_metrics_direction(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert _sweep(results) == 0
    summary_path = results / "calibration" / "toy" / "linear-linear-smoke-model.init_args.lr.json"
    summary = json.loads(summary_path.read_text())
    assert summary["schema"] == CALIBRATION_SCHEMA and summary["split"] == "val"
    assert (summary["metric"], summary["higher_is_better"], summary["seeds"]) == ("mse", False, 2)
    by_value = {entry["value"]: entry for entry in summary["values"]}
    assert set(by_value) == {0.001, 0.3} and all(entry["n"] == 2 for entry in by_value.values())
    # lr 0.001 barely moves in 2 epochs: its validation MSE is the higher one, so 0.3 is chosen (mse: lower is better)
    assert by_value[0.001]["mean"] > by_value[0.3]["mean"]
    assert summary["chosen"] == 0.3 and summary["profile_value"] == 0.1  # the toy spec's lr
    assert summary["command"].startswith("litbench sweep toy linear --param model.init_args.lr --values 0.001,0.3")

    record_path = results / by_value[0.3]["runs"][0]
    record = json.loads(record_path.read_text())
    assert record["config"]["litbench"]["evaluate_on"] == "val"
    assert record["config"]["model"]["init_args"]["lr"] == 0.3
    assert record["metrics"]["samples"] == 48  # the toy validation split; the test split has 128
    # the calibration runs are not leaderboard runs, nor suite wall times
    assert RecordStore(results).paths() == []
    assert not list(results.rglob("perf"))


def test_sweep_records_stay_out_of_the_leaderboard_which_shows_the_choice(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert _sweep(results) == 0
    assert main(["run", "toy", "--profile", "smoke", "--methods", "linear,mean", "--results", str(results),
                 "--wandb", "disabled"]) == 0
    paths = build_leaderboard(results, tmp_path / "board")
    markdown = paths["markdown"].read_text()
    assert "**Calibration sweeps**" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| toy | linear | linear | smoke | model.init_args.lr"))
    assert "mse ↓ on val: 0.001:" in row and "| 0.3 | 0.1 (differs from the chosen value) |" in row
    results_csv = paths["results"].read_text().splitlines()
    assert len(results_csv) == 1 + 4  # the 4 test-split runs only (2 methods x 2 seeds)
    assert "Calibration sweeps" in paths["html"].read_text()


def _sweep_row(board: Path) -> str:
    markdown = (board / "LEADERBOARD.md").read_text()
    return next(line for line in markdown.splitlines() if line.startswith("| toy | linear | linear | smoke | model.init_args.lr"))


def test_the_sweep_row_says_what_the_committed_records_ran_with(toy_env, tmp_path: Path) -> None:
    """The sweep stores the profile's value at sweep time; a profile changed to the chosen value
    afterwards must not read as "differs": the row reads the records' configs."""
    results = tmp_path / "results"
    assert _sweep(results) == 0
    build_leaderboard(results, tmp_path / "none")
    assert "| 0.3 | no smoke records (the profile had 0.1 when swept) |" in _sweep_row(tmp_path / "none")
    assert main(["run", "toy", "--profile", "smoke", "--methods", "linear", "--set", "model.init_args.lr=0.3",
                 "--results", str(results), "--wandb", "disabled"]) == 0
    build_leaderboard(results, tmp_path / "chosen")
    assert "| 0.3 | 0.3 (= chosen) |" in _sweep_row(tmp_path / "chosen")
    # one seed re-run at another value: the row says the records are mixed
    record_path = results / "toy" / "linear" / "linear" / "smoke" / "seed-1.json"
    record = json.loads(record_path.read_text())
    record["config"]["model"]["init_args"]["lr"] = 0.1
    record_path.write_text(json.dumps(record))
    build_leaderboard(results, tmp_path / "mixed")
    assert "| 0.3 | mixed: 0.3, 0.1 |" in _sweep_row(tmp_path / "mixed")


def test_sweep_bad_input_is_a_one_line_error(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["sweep", "toy", "linear", "--param", "model.init_args.lr", "--values", "0.1",
                 "--profile", "smoke", "--results", str(results)]) == 2
    assert "at least two values" in capsys.readouterr().err
    assert main(["sweep", "toy", "nosuch", "--param", "model.init_args.lr", "--values", "0.1,0.2",
                 "--results", str(results)]) == 2
    assert "has no method 'nosuch'" in capsys.readouterr().err
    assert not (results / "calibration").exists()


def test_a_datamodule_without_a_validation_split_fails_the_run_with_a_reason(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    code = _sweep(results, "--set", "data.init_args.val_samples=0")
    assert code == 1  # every run failed, and says why
    record = next((results / "calibration").rglob("seed-0.json"))
    failed = json.loads(record.read_text())
    assert "validation split is empty" in failed["error"]["message"]
    assert not (failed["cost"] or {}).get("fit_s")  # it failed before training, not after
    summary = json.loads(next((results / "calibration" / "toy").glob("*.json")).read_text())
    assert summary["chosen"] is None and all(entry["n"] == 0 for entry in summary["values"])


def test_a_malformed_summary_is_named() -> None:
    with pytest.raises(MalformedSweepError, match="schema"):
        validate_summary({"schema": "other/1"})
    with pytest.raises(MalformedSweepError, match="validation split"):
        validate_summary({"schema": CALIBRATION_SCHEMA, **{key: None for key in (
            "benchmark", "method", "dataset", "profile", "parameter", "metric", "higher_is_better", "seeds",
            "values", "chosen", "profile_value", "command", "finished_at")}, "split": "test"})


def test_several_parameters_move_together(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["sweep", "toy", "linear", "--param", "model.init_args.lr", "--param", "trainer.max_epochs",
                 "--values", "0.05:1,0.05:3", "--profile", "smoke", "--seeds", "2", "--results", str(results)]) == 0
    summary = json.loads(next((results / "calibration" / "toy").glob("*.json")).read_text())
    assert summary["parameter"] == "model.init_args.lr+trainer.max_epochs"
    assert [entry["value"] for entry in summary["values"]] == [[0.05, 1], [0.05, 3]]
    assert summary["profile_value"] == [0.1, 2] and summary["chosen"] == [0.05, 3]  # more epochs, lower val MSE
    record = json.loads((results / summary["values"][1]["runs"][0]).read_text())
    assert record["config"]["trainer"]["max_epochs"] == 3
    assert main(["sweep", "toy", "linear", "--param", "model.init_args.lr", "--param", "trainer.max_epochs",
                 "--values", "0.05,0.1", "--profile", "smoke", "--results", str(results)]) == 2
    assert "give one value per --param (2), joined by ':'" in capsys.readouterr().err


def test_calibration_refuses_a_datamodule_whose_validation_split_is_switched_off() -> None:
    """A graph datamodule with val_fraction = 0 scores every node in test: calibrating on it would
    read test labels, so the run stops before training with the setting that fixes it."""
    from benchmarks.runner import _use_validation_split
    from datamodules.graphs import AttributedGraphDataModule

    with pytest.raises(ValueError, match="val_fraction=0.3"):
        _use_validation_split(AttributedGraphDataModule(sbm_num_nodes=30, sbm_num_features=9))
    held_out = AttributedGraphDataModule(sbm_num_nodes=30, sbm_num_features=9, val_fraction=0.3)
    _use_validation_split(held_out)
    assert next(iter(held_out.test_dataloader())).eval_mask.sum() == 9  # the validation nodes


def test_a_value_left_to_the_class_default_is_not_called_different() -> None:
    from leaderboard.calibration import sweep_row

    summary = {"benchmark": "toy", "method": "linear", "dataset": "linear", "profile": "smoke", "parameter": "a+b",
               "metric": "mse", "higher_is_better": False, "chosen": ["x", True], "profile_value": [None, True],
               "values": [], "command": "litbench sweep ..."}
    assert sweep_row(summary, record_values=[[None, True]])[7] == "[—, true] (— = the class default, not in the records' configs)"
    assert sweep_row(summary, record_values=[["y", True]])[7] == "[y, true] (differs from the chosen value)"
