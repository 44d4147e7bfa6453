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


def test_per_dataset_overrides_sit_below_the_profile(spec) -> None:
    from benchmarks.spec import Override

    linear = spec.methods["linear"]
    linear.datasets = {"other": Override(init_args={"lr": 0.9, "num_features": 8}, trainer={"max_epochs": 9})}
    on_other = resolve_run(spec, method="linear", dataset="other", profile="smoke", seed=0)
    on_linear = resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0)
    assert on_other.config["model"]["init_args"]["lr"] == 0.9 and on_linear.config["model"]["init_args"]["lr"] == 0.1
    # The profile's trainer beats the method's per-dataset trainer (DCAGC's CiteSeer 150 epochs vs cpu's 80) ...
    assert on_other.config["trainer"]["max_epochs"] == 2
    # ... and the profile's own per-dataset block beats everything before it.
    spec.profiles["smoke"].methods["linear"] = Override(init_args={"lr": 0.3},
                                                        datasets={"other": Override(init_args={"lr": 0.7})})
    assert resolve_run(spec, method="linear", dataset="other", profile="smoke", seed=0).config["model"]["init_args"]["lr"] == 0.7
    assert resolve_run(spec, method="linear", dataset="linear", profile="smoke", seed=0).config["model"]["init_args"]["lr"] == 0.3


def test_stage_seed_modes_and_profile_stage_overrides(spec) -> None:
    from benchmarks.spec import Override

    stage = spec.methods["finetuned"].stages[0]

    def stage_of(seed: int) -> dict:
        return resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=seed).config["litbench"]["stages"][0]

    assert [stage_of(s)["seed"] for s in (0, 3)] == [0, 0]  # shared: one artifact for every seed
    stage.per_seed = True
    assert [stage_of(s)["seed"] for s in (0, 3)] == [0, 3]  # one artifact per run seed
    stage.seed = 7
    assert [stage_of(s)["seed"] for s in (0, 3)] == [7, 7]  # an explicit stage seed wins
    spec.profiles["smoke"].methods["finetuned"] = Override(stages={"pretrain": Override(trainer={"max_epochs": 1},
                                                                                        init_args={"lr": 0.5})})
    assert stage_of(0)["trainer"]["max_epochs"] == 1 and stage_of(0)["model"]["init_args"]["lr"] == 0.5


def test_set_overrides_a_stage_and_its_cache_key(spec) -> None:
    base = resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=0)
    shorter = resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=0,
                          sets=["stages.pretrain.trainer.max_epochs=1", "stages.pretrain.model.init_args.lr=0.3"])
    stage, base_stage = shorter.config["litbench"]["stages"][0], base.config["litbench"]["stages"][0]
    assert stage["trainer"]["max_epochs"] == 1 and stage["model"]["init_args"]["lr"] == 0.3
    assert base_stage["trainer"]["max_epochs"] == 2  # the override did not leak into the spec
    assert stage_config(shorter.config, stage) != stage_config(base.config, base_stage)
    assert shorter.config_hash != base.config_hash and shorter.unmatched_stage_sets == []


def test_stage_set_skips_methods_without_the_stage_but_a_typo_is_an_error(spec) -> None:
    from benchmarks.launch import plan_runs

    plans = plan_runs({"toy": spec}, benchmarks=["toy"], profile="smoke", methods=["linear", "finetuned"],
                      sets=["stages.pretrain.trainer.max_epochs=1"])
    by_method = {plan.method: plan for plan in plans}
    assert by_method["linear"].config["litbench"]["stages"] == []
    assert by_method["finetuned"].config["litbench"]["stages"][0]["trainer"]["max_epochs"] == 1
    with pytest.raises(SpecError, match="no selected method has that stage.*pretrain"):
        plan_runs({"toy": spec}, benchmarks=["toy"], profile="smoke", methods=["linear", "finetuned"],
                  sets=["stages.pretrian.trainer.max_epochs=1"])
    with pytest.raises(SpecError, match="stages.NAME.model.init_args.KEY=VALUE"):
        resolve_run(spec, method="finetuned", dataset="linear", profile="smoke", seed=0, sets=["stages.pretrain.lr=1"])


def test_every_committed_record_names_classes_that_still_import() -> None:
    """Papers became packages: a record keeps the class paths it ran with (and so its config hash);
    `litbench fit` reads moved ones through benchmarks.fit.MOVED_MODULES."""
    import json

    from benchmarks.contract import load_class
    from benchmarks.fit import current_class_path
    from leaderboard.records import RecordStore

    assert current_class_path("modules.reft_baselines.PrototypeClassifier") == "modules.reft.baselines.PrototypeClassifier"
    assert current_class_path("modules.reft.FewShotFineTune") == "modules.reft.FewShotFineTune"
    results = Path(__file__).resolve().parents[2] / "results"
    paths = RecordStore(results).paths()
    assert len(paths) > 100
    class_paths = set()
    for path in paths:
        record = json.loads(path.read_text())
        config = record["config"]
        class_paths |= {config["model"]["class_path"], config["data"]["class_path"]}
        class_paths |= {stage["model"]["class_path"] for stage in config["litbench"].get("stages", [])}
    for class_path in sorted(class_paths):
        assert isinstance(load_class(current_class_path(class_path)), type), class_path
    assert "modules.reft_baselines.PrototypeClassifier" in class_paths or \
        "modules.reft.baselines.PrototypeClassifier" in class_paths


def test_a_stage_cache_key_changes_with_the_source_of_the_code_that_trains_it(tmp_path, monkeypatch) -> None:
    """A stage trained by older code must not be served to a run of newer code: editing any file of
    the stage model's package, or the datamodule's file, gives the stage a new key."""
    from benchmarks.resolve import source_fingerprint

    package = tmp_path / "fakebench"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("from fakebench.model.net import Net\n")
    (package / "model" / "__init__.py").write_text("")
    (package / "model" / "net.py").write_text("class Net:\n    width = 8\n")
    (tmp_path / "fakedata.py").write_text("class Data:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_config = {"data": {"class_path": "fakedata.Data", "init_args": {}}}
    stage = {"name": "pre", "seed": 0, "model": {"class_path": "fakebench.Net", "init_args": {}}, "trainer": {}}

    def key() -> dict:
        source_fingerprint.cache_clear()
        return stage_config(run_config, stage)

    first = key()
    assert key() == first  # the same source: the same key
    (package / "model" / "net.py").write_text("class Net:\n    width = 16\n")  # a file deep in the package
    second = key()
    assert second["code"] != first["code"] and {k: v for k, v in second.items() if k != "code"} == \
        {k: v for k, v in first.items() if k != "code"}
    (tmp_path / "fakedata.py").write_text("class Data:\n    size = 3\n")
    assert key()["code"] != second["code"]
