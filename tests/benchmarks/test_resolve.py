"""Config resolution: precedence, --set overrides, and what the config hash covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.resolve import resolve_run, stage_config
from benchmarks.spec import SpecError, load_spec

TOY_SPEC = Path(__file__).resolve().parents[1] / "toy" / "specs" / "toy.yaml"


@pytest.fixture
def spec():
    return load_spec(TOY_SPEC)


def test_profile_overrides_spec_and_is_lightningcli_shaped(spec) -> None:
    plan = resolve_run(spec, method="linear", dataset="linear", profile="cpu", seed=2)
    assert plan.run_id == "toy/linear/linear/cpu/seed-2"
    assert plan.config["trainer"]["max_epochs"] == 5
    assert plan.config["seed_everything"] == 2
    assert plan.config["model"] == {"class_path": "toy_modules.ToyLinear", "init_args": {"lr": 0.1}}
    assert plan.config["data"]["init_args"]["dataset"] == "linear"
    assert plan.config["litbench"]["role"] == "proposed"


def test_set_and_hardware_flags_win_and_change_the_hash(spec) -> None:
    base = resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0)
    overridden = resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0,
                             sets=["trainer.max_epochs=7", "model.init_args.lr=0.5"], hardware={"devices": 2, "strategy": None})
    assert overridden.config["trainer"]["max_epochs"] == 7
    assert overridden.config["model"]["init_args"]["lr"] == 0.5
    assert overridden.config["trainer"]["devices"] == 2
    assert overridden.config["trainer"]["strategy"] == "auto"  # None flags leave the default
    assert overridden.config_hash != base.config_hash


def test_data_location_is_not_part_of_the_hash(spec) -> None:
    here = resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0, data_dir="/a", cache_dir="/c")
    there = resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0, data_dir="/b", cache_dir="/d")
    assert here.config["data"]["init_args"]["data_dir"] == "/a"
    assert here.config_hash == there.config_hash


def test_stage_config_is_shared_across_seeds(spec) -> None:
    seed0 = resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=0)
    seed1 = resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=1)
    stage0, stage1 = seed0.config["litbench"]["stages"][0], seed1.config["litbench"]["stages"][0]
    assert stage0["trainer"]["max_epochs"] == 2  # the stage's own trainer beats the profile's
    assert stage_config(seed0.config, stage0) == stage_config(seed1.config, stage1)


def test_bad_set_and_unknown_method_are_errors(spec) -> None:
    with pytest.raises(SpecError, match="expected key.path=value"):
        resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0, sets=["trainer.max_epochs"])
    with pytest.raises(SpecError, match="must start with trainer"):
        resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0, sets=["epochs=3"])
    with pytest.raises(SpecError, match="has no method 'nosuch'"):
        resolve_run(spec, method="nosuch", dataset="linear", profile="smoke", seed=0)
