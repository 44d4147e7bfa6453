"""`litbench run --compile`: the method's module trains and tests under torch.compile, the option is
part of the config (another hash, another record), and the numbers match the eager run."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import RecordStore

FAST = ["--wandb", "disabled", "--profile", "smoke", "--methods", "linear", "--seeds", "1"]


@pytest.mark.slow
def test_a_compiled_run_records_the_option_and_matches_the_eager_run(toy_env, tmp_path: Path) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert main(["run", "toy", "--results", str(eager), *FAST]) == 0
    assert main(["run", "toy", "--results", str(compiled), "--compile", *FAST]) == 0
    (eager_record,), (compiled_record,) = (list(RecordStore(folder).iter_records()) for folder in (eager, compiled))
    assert compiled_record.ok and compiled_record.config["litbench"]["compile"] is True
    assert "compile" not in eager_record.config["litbench"]  # other runs' hashes unchanged
    assert compiled_record.config_hash != eager_record.config_hash
    assert compiled_record.metrics["mse"] == pytest.approx(eager_record.metrics["mse"], rel=1e-4)
    assert compiled_record.cost["train_samples_per_s"] > 0


def test_a_profile_with_compile_compiles_every_run_and_stage_and_keys_them_apart(tmp_path: Path) -> None:
    from benchmarks.resolve import resolve_run, stage_config
    from benchmarks.spec import load_spec

    toy = Path(__file__).resolve().parents[1] / "toy" / "specs" / "toy.yaml"
    path = tmp_path / "toy.yaml"
    path.write_text(toy.read_text().replace("smoke: {seeds: 2, trainer: {max_epochs: 2}}",
                                            "smoke: {seeds: 2, trainer: {max_epochs: 2}, compile: true}"))
    eager_spec, compiled_spec = load_spec(toy), load_spec(path)
    assert compiled_spec.profiles["smoke"].compile and not eager_spec.profiles["smoke"].compile
    eager = resolve_run(eager_spec, method="finetuned", dataset="linear", profile="smoke", seed=0)
    compiled = resolve_run(compiled_spec, method="finetuned", dataset="linear", profile="smoke", seed=0)
    assert compiled.config["litbench"]["compile"] is True and "compile" not in eager.config["litbench"]
    (eager_stage,), (compiled_stage,) = eager.config["litbench"]["stages"], compiled.config["litbench"]["stages"]
    assert compiled_stage["compile"] is True and "compile" not in eager_stage
    # a compiled stage is another cached artifact; the eager stage's key is what it was
    assert stage_config(compiled.config, compiled_stage) == {**stage_config(eager.config, eager_stage), "compile": True}


@pytest.mark.slow
def test_a_compiled_stage_trains_under_torch_compile(toy_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    compiled_classes = []
    original = torch.compile

    def recording_compile(model, *args, **kwargs):
        compiled_classes.append(type(model).__name__)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    assert main(["run", "toy", "--results", str(tmp_path / "results"), "--wandb", "disabled", "--profile", "smoke",
                 "--methods", "finetuned", "--seeds", "1", "--compile", "--workers", "1"]) == 0
    assert compiled_classes == ["ToyPretrain", "ToyLinear"]  # the stage, then the method's module
