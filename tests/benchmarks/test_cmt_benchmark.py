"""The CMT benchmark through the real CLI: the smoke profile in one process (the fused stage is trained
once and serves the all-sensors and LiDAR-removed arms; the BEV visual is published) and under
2-process DDP (the detection metric gathers every test scene across ranks). The readers are checked
in tests/datamodules/test_nuscenes.py; the cpu profile's records are the end-to-end check."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled"]
RECORD = "cmt/synthetic-scenes/{method}/smoke/seed-0.json"
TEST_SCENES = 8  # smoke profile test_size


@pytest.mark.ddp
def test_smoke_one_process_then_ddp(tmp_path: Path) -> None:
    import matplotlib.image

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "cmt", *SMOKE, "--methods", "cmt,cmt_no_lidar,cmt_l", "--results", str(single)]) == 0
    fused, no_lidar, lidar = (read_record(single / RECORD.format(method=method)) for method in ("cmt", "cmt_no_lidar", "cmt_l"))
    # One cached fused stage: trained for the first arm, reused by the second.
    assert fused.stages["fused"]["key"] == no_lidar.stages["fused"]["key"]
    assert [fused.stages["fused"]["cache_hit"], no_lidar.stages["fused"]["cache_hit"]] == [False, True]
    # The LiDAR-removed arm is the same network tested with the points zeroed: its headline mAP/NDS are
    # the fused arm's *_no_lidar numbers, bit for bit (same scenes, eval mode).
    assert no_lidar.metrics["map"] == fused.metrics["map_no_lidar"] and no_lidar.metrics["nds"] == fused.metrics["nds_no_lidar"]
    assert no_lidar.metrics["map_no_lidar"] == no_lidar.metrics["map"]
    # CMT-L never sees the cameras: zeroing them changes nothing.
    assert lidar.metrics["map_no_camera"] == lidar.metrics["map"] and lidar.metrics["nds_no_camera"] == lidar.metrics["nds"]
    expected = {"map", "nds", "ate", "ase", "aoe", "ap_car", "ap_pedestrian", "ap_traffic_cone", "scenes", "map_no_lidar",
                "nds_no_lidar", "map_no_camera", "nds_no_camera", "map_retained_no_lidar", "map_retained_no_camera"}
    for record in (fused, no_lidar, lidar):
        assert set(record.metrics) == expected and record.metrics["scenes"] == TEST_SCENES
        assert 0.0 <= record.metrics["map"] <= 1.0 and 0.0 <= record.metrics["nds"] <= 1.0
        (png,) = [path for path in record.artifacts if path.endswith("bev_scene0.png")]
        assert matplotlib.image.imread(single / png).shape[:2] == (600, 600)

    # DDP, half the per-device batch (the same 4 scenes per optimiser step): the fused stage is built
    # under DDP and the metric gathers both ranks' halves of the test split.
    run_ddp_cli("cmt", [*SMOKE, "--methods", "cmt", "--set", "data.init_args.batch_size=2",
                        "--set", "data.init_args.eval_batch_size=4"], results=ddp, timeout=600)
    fused_ddp = read_record(ddp / RECORD.format(method="cmt"))
    assert fused.hardware["world_size"] == 1 and fused_ddp.hardware["world_size"] == 2
    assert set(fused_ddp.metrics) == expected and fused_ddp.metrics["scenes"] == TEST_SCENES
    # Different shuffles and BN batches over 4 steps of a tiny net: mAP agrees only loosely (both ~0).
    assert fused_ddp.metrics["map"] == pytest.approx(fused.metrics["map"], abs=0.1)
    assert fused_ddp.cost["params"] == fused.cost["params"]
