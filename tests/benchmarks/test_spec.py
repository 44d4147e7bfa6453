"""Spec loading: valid specs become dataclasses; every malformed input is a one-line SpecError."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.spec import SpecError, load_all_specs, load_spec
from benchmarks.suite_spec import load_suite

TOY_SPEC = Path(__file__).resolve().parents[1] / "toy" / "specs" / "toy.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_toy_spec_loads_into_dataclasses() -> None:
    spec = load_spec(TOY_SPEC)
    assert spec.name == "toy"
    assert spec.methods["mean"].role == "baseline"
    assert spec.methods["finetuned"].stages[0].pass_as == "pretrained"
    assert spec.higher_is_better == {"mse": False}
    assert spec.profiles["smoke"].seeds == 2
    assert spec.claims[0].baseline == "mean"
    assert spec.snapshot()["roles"]["linear"] == "proposed"


def test_shipped_specs_and_suites_are_valid() -> None:
    specs = load_all_specs(Path(__file__).resolve().parents[2] / "benchmarks" / "specs")
    assert "dcagc" in specs
    assert {"smoke", "cpu", "full"} <= set(specs["dcagc"].profiles)


def test_every_shipped_benchmark_has_every_profile_and_the_suites_do_not_enumerate_them() -> None:
    from benchmarks.suite_spec import load_all_suites

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    specs, suites = load_all_specs(root / "specs"), load_all_suites(root / "suites")
    for name, spec in specs.items():
        assert {"smoke", "cpu", "full"} <= set(spec.profiles), name
    for suite_name in ("smoke", "cpu", "full"):
        # no list: a suite is a profile and covers every spec found, so a new spec needs no suite edit
        assert suites[suite_name].benchmarks == {} and suites[suite_name].profile == suite_name


def test_a_new_spec_runs_in_the_shipped_smoke_suite_without_a_suite_edit(toy_env, tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.cli import main

    # the shipped suites, the toy specs (a twelfth benchmark and a thirteenth): both are selected
    monkeypatch.delenv("LITBENCH_SUITES_DIR")
    results = tmp_path / "results"
    code = main(["run", "--suite", "smoke", "--methods", "mean,slow", "--results", str(results), "--wandb", "disabled"])
    assert code == 0
    assert sorted(path.relative_to(results).parts[0] for path in results.glob("*/*/*/smoke/seed-0.json")) == ["toy", "toy2"]
    assert "2 runs planned (smoke profile)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("mutation, message", [
    (("task: linear regression", "task: linear regression\nmethodz: {}"), "unknown key 'methodz'"),
    (("role: proposed", "role: champion"), "'champion' is not one of proposed, baseline, ablation"),
    (("baseline: mean}", "baseline: nosuch}"), "claims[0].baseline: unknown method 'nosuch'"),
    (("smoke: {seeds: 2,", "smoke: {seeds: 0,"), "profiles.smoke.seeds: expected a positive integer"),
    (("smoke: {seeds: 2,", "fast: {seeds: 2,"), "unknown profile 'fast'"),
    (("workers: 2}", "workers: two}"), "profiles.full.workers: expected a positive integer"),
    (("primary: mse", "primary: acc"), "metrics.primary 'acc' has no entry"),
    (("include_methods: [linear, mean]", "include_methods: [linear, nosuch]"), "include_methods: unknown method 'nosuch'"),
    (("include_methods: [linear, mean]", "include_methods: [linear, mean], compile: yes please"), "cpu.compile: expected true or false"),
    (("class_path: toy_modules.ToyMeanBaseline", "class_path: ToyMeanBaseline"), "must be a dotted path"),
])
def test_malformed_spec_is_one_line_error(tmp_path: Path, mutation: tuple[str, str], message: str) -> None:
    old, new = mutation
    text = TOY_SPEC.read_text()
    assert old in text
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, text.replace(old, new, 1)))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmethods: {a: [1, 2}\n")
    with pytest.raises(SpecError, match=r"spec.yaml: malformed YAML at line 2"):
        load_spec(path)


def test_suite_accepts_list_or_selection(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprofile: smoke\nbenchmarks: [a, b]\n")
    assert load_suite(path).benchmarks == {"a": {"methods": [], "datasets": []}, "b": {"methods": [], "datasets": []}}
    path.write_text("name: s\nprofile: tiny\nbenchmarks: [a]\n")
    with pytest.raises(SpecError, match="profile 'tiny' is not one of"):
        load_suite(path)


def test_reference_is_a_role(tmp_path: Path) -> None:
    text = TOY_SPEC.read_text().replace("mean: {role: baseline", "mean: {role: reference")
    assert "role: reference" in text
    assert load_spec(write(tmp_path, text)).methods["mean"].role == "reference"


def test_gates_and_claim_keys_load_and_reach_the_leaderboard_snapshot(tmp_path: Path) -> None:
    text = TOY_SPEC.read_text().replace(
        "metric: mse, method: linear, baseline: mean}",
        'metric: mse, method: linear, baseline: mean, margin: -0.05, relative: true, min_effect: 0.1,\n'
        '     note: "the mean cannot fit a slope"}')
    text += ('gates:\n'
             '  - {id: fits, metric: mse, max: 1.0, methods: [linear], why: "below the variance of y"}\n'
             '  - {id: beats-mean, metric: mse, reference_method: mean, methods: [linear]}\n')
    spec = load_spec(write(tmp_path, text))
    claim = spec.claims[0]
    assert (claim.margin, claim.relative, claim.min_effect, claim.note) == (-0.05, True, 0.1, "the mean cannot fit a slope")
    snapshot = spec.snapshot()
    assert snapshot["claims"][0]["relative"] is True and snapshot["claims"][0]["min_effect"] == 0.1
    assert [gate["id"] for gate in snapshot["gates"]] == ["fits", "beats-mean"]
    # defaults stay out of the snapshot, so it reads like the spec that was written
    assert set(load_spec(TOY_SPEC).snapshot()["claims"][0]) == {"id", "text", "metric", "method", "baseline", "margin"}


@pytest.mark.parametrize("gates, message", [
    ("  - {id: g, metric: mse}\n", "gates[0]: gate 'g': give exactly one of"),
    ("  - {id: g, metric: mse, max: 1, methods: [nosuch]}\n", "gates[0]: gate 'g': unknown method 'nosuch'"),
    ("  - {id: g, metric: mse, reference_method: ghost}\n", "unknown method 'ghost'"),
    ("  - {id: g, metric: r2, reference_metric: mse}\n", "metric 'r2' has no direction"),
    ("  - {id: g, metric: mse, max: 1}\n  - {id: g, metric: mse, max: 2}\n", "gates[1]: gate id 'g' is used twice"),
    ("  - {id: g, metric: mse, max: 1, floor: 2}\n", "unknown key 'floor'"),
])
def test_malformed_gate_is_a_one_line_spec_error(tmp_path: Path, gates: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, TOY_SPEC.read_text() + "gates:\n" + gates))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("extra, message", [
    ("min_effect: -0.1", "min_effect: expected a number >= 0"),
    ("relative: yes please", "relative: expected true or false"),
])
def test_malformed_claim_keys_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    text = TOY_SPEC.read_text().replace("metric: mse, method: linear, baseline: mean}",
                                        f"metric: mse, method: linear, baseline: mean, {extra}}}")
    with pytest.raises(SpecError, match=message):
        load_spec(write(tmp_path, text))


def test_metrics_median_lists_known_metrics_only(tmp_path: Path) -> None:
    text = TOY_SPEC.read_text().replace("metrics: {primary: mse, higher_is_better: {mse: false}}",
                                        "metrics: {primary: mse, higher_is_better: {mse: false}, median: [mse]}")
    assert load_spec(write(tmp_path, text)).snapshot()["metrics"]["median"] == ["mse"]
    with pytest.raises(SpecError, match="metrics.median: 'mae' has no entry"):
        load_spec(write(tmp_path, text.replace("median: [mse]", "median: [mae]")))
