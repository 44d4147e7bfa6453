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


def _cmt_plan(*sets: str):
    specs = load_all_specs()
    return plan_runs(specs, benchmarks=["cmt"], profile="cpu", methods=["cmt_no_lidar"], seeds=1, sets=list(sets),
                     cache_dir="/tmp/litbench-check")[0]


def test_a_stage_built_unlike_the_method_that_loads_it_is_caught_before_it_trains() -> None:
    """CMTFromStage loads the fused stage's checkpoint only if both were built alike; a sweep of the
    stage's key alone used to train the stage and fail at load. Default values count: the stage's
    embed_dim (CMT's default 128) against the method's explicit 64."""
    assert config_problems(_cmt_plan().config) == []
    stage_only = config_problems(_cmt_plan("stages.fused.model.init_args.embed_dim=64").config)
    assert stage_only == ["stages.fused.model.init_args.embed_dim is 64 but model.init_args.embed_dim is 128, and "
                          "CMTFromStage loads that stage's checkpoint only if they are equal: set both "
                          "(--set stages.fused.model.init_args.embed_dim=V --set model.init_args.embed_dim=V, "
                          "or one --param each in a sweep)"]
    assert "model.init_args.bev_pe" in config_problems(_cmt_plan("model.init_args.bev_pe=multiscale").config)[0]
    assert config_problems(_cmt_plan("stages.fused.model.init_args.embed_dim=64",
                                     "model.init_args.embed_dim=64").config) == []
    # keys the method does not share with its stage (training options) may differ
    assert config_problems(_cmt_plan("stages.fused.model.init_args.lr=1e-3").config) == []


def test_the_cli_stops_a_stage_only_architecture_sweep_before_training(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    code = main(["sweep", "reft", "reft_5shot", "--param", "stages.base.model.init_args.num_layers", "--values", "3,6",
                 "--profile", "cpu", "--seeds", "1", "--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "stages.base.model.init_args.num_layers is 3 but model.init_args.num_layers is 6" in err
    assert "\n" not in err and not results.exists()


def test_cmt_cpu_profile_gives_every_trained_network_the_val_chosen_settings() -> None:
    """The CMT rules (issue 24's BEV PE, issue 27's keys' balance, cyclic peak and lengths, all in
    benchmarks/specs/cmt.yaml) each give their outcome to every trained network: the fused stage,
    CMT-C, CMT-L and the no-masking fusion train alike, so the claims compare like with like."""
    plans = plan_runs(load_all_specs(), benchmarks=["cmt"], profile="cpu", methods=None, seeds=1, sets=[],
                      cache_dir="/tmp/litbench-check")
    trained = {plan.method: (plan.config["model"]["init_args"], plan.config["trainer"]) for plan in plans
               if plan.method in ("cmt_c", "cmt_l", "cmt_no_modal_mask")}
    for plan in plans:
        for stage in plan.config["litbench"]["stages"]:
            trained[f"{plan.method}/{stage['name']}"] = (stage["model"]["init_args"], stage["trainer"])
    assert sorted(trained) == ["cmt/fused", "cmt_c", "cmt_l", "cmt_no_lidar/fused", "cmt_no_modal_mask"]
    for name, (init_args, trainer) in trained.items():
        chosen = {key: init_args.get(key) for key in ("bev_pe", "token_norm", "cyclic_peak")}
        assert chosen == {"bev_pe": "official", "token_norm": True, "cyclic_peak": 2.0}, name
        assert trainer["max_epochs"] == 8, name
