"""Preflight config checks: a typo or a wrong type is one line and exit 2, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.config_check import config_problems, init_args_problem
from benchmarks.launch import plan_runs
from benchmarks.spec import load_all_specs

FAST = ["--wandb", "disabled", "--profile", "smoke"]


def test_unknown_argument_names_the_closest_valid_one() -> None:
    problem = init_args_problem("modules.dcagc.DCAGC", {"hiden": 64}, where="model.init_args")
    assert problem == "model.init_args: DCAGC has no argument 'hiden'; did you mean 'hidden'?"


def test_wrong_type_names_the_expected_type() -> None:
    problem = init_args_problem("lightning.pytorch.Trainer", {"max_epochs": "ten"}, where="trainer")
    assert problem == "trainer: Trainer argument 'max_epochs' = 'ten' has the wrong type; expected int or null"
    assert init_args_problem("modules.dcagc.DCAGC", {"hidden": 64, "lr": 1e-3}, where="model.init_args") is None


def test_a_missing_argument_that_a_stage_injects_is_not_a_problem() -> None:
    # RELIANT students get teacher_path from their teacher stage at run time.
    assert init_args_problem("modules.reliant.FairDistillationStudent", {"student": "mlp"}, where="model.init_args") is None


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
def test_every_committed_config_passes_the_check(profile: str) -> None:
    """No false alarms: every run the specs plan constructs as configured (stages included)."""
    specs = load_all_specs()
    plans = plan_runs(specs, benchmarks=sorted(specs), profile=profile, seeds=1, cache_dir="/tmp/litbench-check")
    problems = {f"{plan.benchmark}/{plan.method}": config_problems(plan.config) for plan in plans}
    assert {run: found for run, found in problems.items() if found} == {}


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_epochs=notanumber", "trainer: Trainer argument 'max_epochs' = 'notanumber' has the wrong type"),
    ("model.init_args.lrr=0.1", "model.init_args: ToyLinear has no argument 'lrr'; did you mean 'lr'?"),
])
def test_cli_stops_before_any_run_and_writes_no_record(toy_env, tmp_path: Path, capsys, override: str, message: str) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear", "--results", str(results), "--set", override, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "nothing was run" in err and "\n" not in err
    assert not results.exists() or not list(results.rglob("seed-*.json"))
