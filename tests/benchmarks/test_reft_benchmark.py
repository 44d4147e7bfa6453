"""The RefT benchmark through the real CLI: the smoke profile in one process (records of the gFSIS
and FSIS arms, ft-head-only and the prototype classifier; the shared per-seed base stage and its
cache hits) and under 2-process DDP (the same numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_cli_in_subprocess, run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled"]
METRICS = {"AP", "AP50", "nAP", "bAP", "images_evaluated", "mean_score"}
FSIS_METRICS = METRICS - {"bAP"}
REFERENCE_METRICS = {"reference_weight_change", "reference_output_change"}  # arms with reference modules
SMOKE_TEST_IMAGES = 20


def _record(results: Path, method: str):
    return read_record(results / f"reft/synthetic-shapes/{method}/smoke/seed-0.json")


def test_smoke_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    results = tmp_path / "results"
    methods = ["reft_5shot", "ft_full_5shot", "reft_fsis_5shot", "ft_head_5shot", "prototype_5shot"]
    assert main(["run", "reft", *SMOKE, "--methods", ",".join(methods), "--results", str(results)]) == 0
    records = {method: _record(results, method) for method in methods}
    reft, baseline = records["reft_5shot"], records["ft_full_5shot"]
    for method, record in records.items():
        # FSIS evaluates the novel classes only: no bAP, and AP is the novel-class average
        expected = (FSIS_METRICS if method == "reft_fsis_5shot" else METRICS) | \
            (REFERENCE_METRICS if method.startswith("reft") else set())
        assert record.ok and set(record.metrics) == expected, method
        assert record.metrics["images_evaluated"] == SMOKE_TEST_IMAGES
        assert 0 <= record.metrics["nAP"] <= 100 and 0 <= record.metrics.get("bAP", 0) <= 100
        assert record.config["model"]["init_args"]["shots"] == 5
        # one base model per seed, trained by the first arm and reused by every other arm and setting
        assert record.stages["base"]["key"] == reft.stages["base"]["key"]
        assert record.stages["base"]["cache_hit"] is (method != "reft_5shot"), method
    assert reft.config["model"]["init_args"]["feature_reference"] == "cross_attention"
    # the zero-initialised reference modules moved in the 3 fine-tuning steps and now change the queries
    assert reft.metrics["reference_weight_change"] > 0 and reft.metrics["reference_output_change"] > 0
    assert "feature_reference" not in baseline.config["model"]["init_args"]
    fsis = records["reft_fsis_5shot"]
    assert fsis.config["model"]["init_args"]["setting"] == "fsis" and fsis.metrics["AP"] == fsis.metrics["nAP"]
    assert records["ft_head_5shot"].config["model"]["init_args"]["trainable"] == "class_head"
    # ft-head-only trains ~1% of the weights; the prototype classifier is not fitted at all
    # (its cost may carry the base stage's training throughput, metered by the runner)
    assert records["ft_head_5shot"].cost["fit_s"] > 0 and records["prototype_5shot"].cost["fit_s"] == 0
    assert main(["run", "reft", *SMOKE, "--methods", "reft_5shot", "--results", str(results), "--force"]) == 0
    again = _record(results, "reft_5shot")
    assert again.stages["base"]["cache_hit"] is True
    assert again.metrics["mean_score"] == pytest.approx(reft.metrics["mean_score"], abs=1e-6)


@pytest.mark.ddp
def test_smoke_ddp_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    # shard_training=false: every rank trains on the same seeded batches, so the 2-process model equals
    # the 1-process one, while the test set is still split over the ranks and gathered for COCOeval.
    args = [*SMOKE, "--methods", "reft_5shot", "--set", "data.init_args.shard_training=false"]
    run_cli_in_subprocess("reft", args, results=single, timeout=400, threads=1)
    run_ddp_cli("reft", args, results=ddp, timeout=400, threads=1)
    one, two = _record(single, "reft_5shot"), _record(ddp, "reft_5shot")
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    assert one.metrics["images_evaluated"] == two.metrics["images_evaluated"] == SMOKE_TEST_IMAGES
    for name in ("AP", "nAP", "bAP", "mean_score"):
        assert two.metrics[name] == pytest.approx(one.metrics[name], abs=1e-4), name


def test_bring_your_own_coco_takes_its_class_count_from_the_json(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A COCO json with 3 classes (the shared fruits & nuts set) runs with no class count given: the
    datamodule's ``model_init_args`` reaches the base stage and the method (issue 32)."""
    from tests_support import shared_data_root

    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    fruits = "coco_fruits_nuts/trainval.json"
    command = ["run", "reft", *SMOKE, "--datasets", "coco-json", "--methods", "reft_1shot",
               "--data-dir", str(shared_data_root(fruits)), "--results", str(tmp_path / "results"),
               "--cache-dir", str(tmp_path / "cache"), "--set", f"data.init_args.train_json={fruits}",
               "--set", f"data.init_args.test_json={fruits}", "--set", "data.init_args.novel_classes=[fig]"]
    assert main(command) == 0
    record = read_record(tmp_path / "results/reft/coco-json/reft_1shot/smoke/seed-0.json")
    assert record.ok
    base = torch.load(record.stages["base"]["artifact"], map_location="cpu", weights_only=True)
    assert base["architecture"]["num_classes"] == 3
