"""The RELIANT benchmark through the real CLI: the smoke profile in one process and under 2-process
DDP (teacher stage cached once per seed, manual optimisation with the proxy step), a real-data
run of the German teacher read from ../shared/data, and the cpu profile's size-scaled alpha."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_ddp_cli, shared_data_root

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--methods", "teacher_gcn,kd_plp,reliant_sp_plp"]
METRICS = {"acc", "auroc", "f1", "sp", "eo"}


@pytest.mark.ddp
def test_smoke_end_to_end_and_ddp_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "reliant", *SMOKE, "--results", str(single)]) == 0
    teacher_folders = list((single / "cache" / "stages").glob("teacher-*"))
    assert len(teacher_folders) == 1  # one teacher per (config, seed), shared by the three methods
    run_ddp_cli("reliant", SMOKE, results=ddp, timeout=600)
    for method in ("teacher_gcn", "kd_plp", "reliant_sp_plp"):
        one = read_record(single / f"reliant/fair-sbm-synthetic/{method}/smoke/seed-0.json")
        two = read_record(ddp / f"reliant/fair-sbm-synthetic/{method}/smoke/seed-0.json")
        assert one.ok and METRICS <= set(one.metrics), method
        assert two.hardware["world_size"] == 2 and one.hardware["world_size"] == 1
        # Both ranks train on the same full graph with the same seed, so the averaged gradient is the
        # single-process one: metrics agree up to floating-point noise (stated tolerance 0.02).
        for name in ("acc", "sp", "eo"):
            assert two.metrics[name] == pytest.approx(one.metrics[name], abs=0.02), (method, name)
    teacher = read_record(single / "reliant/fair-sbm-synthetic/teacher_gcn/smoke/seed-0.json")
    vanilla = read_record(single / "reliant/fair-sbm-synthetic/kd_plp/smoke/seed-0.json")
    assert teacher.metrics["acc"] > 0.7 and teacher.metrics["sp"] > 0.3  # the generated graph is biased
    assert vanilla.metrics["teacher_agreement"] > 0.7


def test_real_german_teacher_through_the_cli(tmp_path: Path) -> None:
    data_root = shared_data_root("fair_german/german.csv")
    results = tmp_path / "results"
    assert main(["run", "reliant", "--profile", "cpu", "--methods", "teacher_gcn", "--datasets", "German",
                 "--seeds", "1", "--data-dir", str(data_root),
                 "--results", str(results), "--wandb", "disabled"]) == 0
    record = read_record(results / "reliant/German/teacher_gcn/cpu/seed-0.json")
    assert record.ok and METRICS <= set(record.metrics)
    assert 0.6 < record.metrics["acc"] < 0.8  # 70 % of German's test nodes are positive
    assert not any((data_root / "fair_german").glob("*.pt"))  # nothing written beside the read-only data


def test_cpu_alpha_keeps_the_official_balance_of_kd_and_fairness(tmp_path: Path) -> None:
    """The cpu profile's alpha is 1e3 * sqrt(|U_cpu| / |U_full|), U = the non-train nodes (spec comment),
    recomputed here from the real Bail graph and its cpu subgraph, and from Credit's split rule."""
    from benchmarks.resolve import resolve_run
    from benchmarks.spec import load_all_specs
    from datamodules.fairness_graphs import FairGraphDataModule

    spec = load_all_specs()["reliant"]
    data_root = shared_data_root("fair_bail/bail.csv")
    non_train = {}
    for max_nodes in (None, 5000):
        config = resolve_run(spec, method="reliant_sp_plp", profile="cpu", dataset="Bail", seed=0).config
        data_args = {**config["data"]["init_args"], "max_nodes": max_nodes}
        datamodule = FairGraphDataModule(**data_args, data_dir=str(data_root), cache_dir=str(tmp_path))
        datamodule.setup()
        non_train[max_nodes] = int((~datamodule.graph.train_mask).sum())
    assert non_train == {None: 18876 - 5662, 5000: 5000 - 1499}
    alpha = {dataset: resolve_run(spec, method="reliant_sp_plp", profile="cpu", dataset=dataset, seed=0).config["model"]["init_args"]["alpha"]
             for dataset in ("Bail", "Credit")}
    assert alpha["Bail"] == round(1000 * (non_train[5000] / non_train[None]) ** 0.5)
    # Credit's rule trains on 500 + 500 nodes at any size with >= 1,000 nodes per class: U = n - 1,000.
    assert alpha["Credit"] == round(1000 * ((5000 - 1000) / (30000 - 1000)) ** 0.5)
    for method in ("reliant_eo_plp", "fixed_proxy_sp_plp", "reliant_sp_plp_train_only", "reliant_sp_mlp"):
        for dataset in ("Bail", "Credit"):
            assert resolve_run(spec, method=method, profile="cpu", dataset=dataset, seed=0).config["model"]["init_args"]["alpha"] == alpha[dataset]
    assert resolve_run(spec, method="reliant_sp_plp", profile="full", dataset="Credit", seed=0).config["model"]["init_args"]["alpha"] == 1000.0
