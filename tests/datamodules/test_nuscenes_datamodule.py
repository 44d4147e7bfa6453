"""NuScenesDataModule on a nuScenes install made of the one real keyframe of
../shared/data/nuscenes_one_sample (its v1.0-mini info pickle as both train and val infos): batch
shapes, boxes projected into the resized cameras, LiDAR sweeps, one CMT training step, the devkit's
official detection config (ground truth scores perfect, a shifted copy lower), and the
missing-file / wrong-version errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.nuscenes import (ATTRIBUTE_NAMES, CAMERA_NAMES, INFO_FILES, NUSCENES_CLASSES, NuScenesDataModule,
                                  load_info_file, project_to_image, read_one_sample)
from datamodules.nuscenes.datamodule import load_points
from tests_support import shared_data_root

ONE_SAMPLE = "nuscenes_one_sample/n015-2018-07-24-11-22-45+0800.pkl"
HEIGHT, WIDTH = 144, 256  # 1600x900 resized by 0.16
VALID_BOXES = 65  # 68 boxes of the ten classes, 3 without LiDAR or radar points
POINTS = 34688


def make_one_sample_install(shared_root: Path, destination: Path) -> Path:
    """``destination/nuscenes/{samples/<CHANNEL>/<file>, nuscenes_infos_{train,val}.pkl}`` as symlinks."""
    source = shared_root / ONE_SAMPLE
    install = destination / "nuscenes"
    for channel in ("LIDAR_TOP",) + CAMERA_NAMES:
        folder = install / "samples" / channel
        folder.mkdir(parents=True, exist_ok=True)
        for file in source.parent.glob(f"*__{channel}__*"):
            (folder / file.name).symlink_to(file)
    for name in INFO_FILES.values():
        (install / name).symlink_to(source)
    return destination


@pytest.fixture(scope="module")
def shared_root() -> Path:
    return shared_data_root(ONE_SAMPLE)


@pytest.fixture(scope="module")
def install(shared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_one_sample_install(shared_root, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def batch(install: Path) -> dict:
    module = NuScenesDataModule(dataset="nuscenes-mini", data_dir=str(install), batch_size=1, num_workers=0,
                                image_height=HEIGHT, image_width=WIDTH, sweeps=10)
    module.prepare_data()
    module.setup("fit")
    return next(iter(module.train_dataloader()))


def test_batch_has_the_documented_shapes(batch: dict) -> None:
    assert batch["images"].shape == (1, 6, 3, HEIGHT, WIDTH) and batch["images"].dtype == torch.float32
    assert 0.0 <= float(batch["images"].min()) and float(batch["images"].max()) <= 1.0
    # One keyframe, no sweeps listed in the demo info: the keyframe's points, time lag 0.
    assert batch["points"].shape == (1, POINTS, 5) and bool(batch["point_mask"].all())
    assert float(batch["points"][0, :, 3].max()) <= 1.0 and float(batch["points"][0, :, 4].abs().max()) == 0.0
    assert batch["lidar2img"].shape == (1, 6, 4, 4)
    assert batch["gt_boxes"].shape == (1, VALID_BOXES, 9) and batch["gt_labels"].shape == (1, VALID_BOXES)
    labels = batch["gt_labels"][0].tolist()
    assert labels.count(NUSCENES_CLASSES.index("pedestrian")) + labels.count(NUSCENES_CLASSES.index("barrier")) > 40
    # Attributes are known for the classes that have them (matched from cam_instances), never for cones/barriers.
    no_attribute = torch.isin(batch["gt_labels"][0], torch.tensor([NUSCENES_CLASSES.index("traffic_cone"),
                                                                   NUSCENES_CLASSES.index("barrier")]))
    assert bool((batch["gt_attributes"][0][no_attribute] == -1).all())
    assert int((batch["gt_attributes"][0] >= 0).sum()) >= 35
    # Each matched attribute belongs to its box's class family (the match is by projected centre).
    family = {"pedestrian": "pedestrian.", "bicycle": "cycle.", "motorcycle": "cycle."}
    for label, attribute in zip(batch["gt_labels"][0].tolist(), batch["gt_attributes"][0].tolist()):
        if attribute >= 0:
            name = NUSCENES_CLASSES[label]
            assert ATTRIBUTE_NAMES[attribute].startswith(family.get(name, "vehicle.")), (name, ATTRIBUTE_NAMES[attribute])
    assert batch["scene_index"].tolist() == [0]


def test_boxes_project_where_the_sample_says_they_are_visible(batch: dict, shared_root: Path) -> None:
    keyframe = read_one_sample(shared_root)
    boxes = batch["gt_boxes"][0, :, :3].double().numpy()
    scale = np.array([WIDTH / 1600, HEIGHT / 900])
    checked = 0
    for view, camera in enumerate(CAMERA_NAMES):
        pixels, depth = project_to_image(boxes, batch["lidar2img"][0, view].double().numpy())
        inside = (depth > 0) & (pixels[:, 0] >= 0) & (pixels[:, 0] < WIDTH) & (pixels[:, 1] >= 0) & (pixels[:, 1] < HEIGHT)
        full_pixels, _ = project_to_image(keyframe.boxes[:, :3], keyframe.cameras[camera].lidar2img)
        for item in keyframe.extra["cam_instances"][camera]:
            centre = np.asarray(item["center_2d"])
            if not (0 <= centre[0] < 1600 and 0 <= centre[1] < 900):
                continue
            box = int(np.argmin(np.linalg.norm(full_pixels - centre, axis=1)))
            distance = np.linalg.norm(pixels - centre * scale, axis=1) + np.where(inside, 0, np.inf)
            # A box the sample annotates as visible in this camera lands inside the resized image at the
            # scaled annotated pixel; the boxes without LiDAR/radar points are not in the batch at all.
            assert bool(distance.min() < 0.2) == bool(keyframe.valid[box]), (camera, box)
            checked += 1
        assert inside.sum() <= len(keyframe.extra["cam_instances"][camera]), camera
    assert checked == 79  # 84 cam_instances, 5 of them with the centre outside the image


def test_sweeps_move_into_the_keyframe_frame(shared_root: Path, tmp_path: Path) -> None:
    keyframe = read_one_sample(shared_root)
    info = load_info_file(shared_root / ONE_SAMPLE)
    record = dict(info.records[0])
    shift = np.eye(4)
    shift[:3, 3] = [10.0, 0.0, 0.0]  # lidar2sensor of a sweep whose sensor sat 10 m behind
    record["lidar_sweeps"] = [{"lidar_points": {"lidar_path": str(keyframe.lidar_path), "lidar2sensor": shift.tolist()},
                               "timestamp": record["timestamp"] - 0.05}]
    path = tmp_path / "with_sweep.pkl"
    path.write_bytes(pickle.dumps({"metainfo": {"version": "v1.0-mini"}, "data_list": [record]}))
    swept = load_info_file(path).keyframe(0, data_root=shared_root / "nuscenes_one_sample")
    points = load_points(swept, sweeps=2)
    raw = keyframe.load_points()
    far = raw[np.hypot(raw[:, 0], raw[:, 1]) >= 1.0]
    assert len(points) == len(raw) + len(far)
    np.testing.assert_allclose(points[len(raw):, 0], far[:, 0] - 10.0, atol=1e-4)
    np.testing.assert_allclose(points[len(raw):, 4], 0.05, atol=1e-6)
    assert len(load_points(swept, sweeps=1)) == len(raw)


def tiny_nuscenes_cmt(**overrides):
    from modules.cmt import CMT

    config = dict(modalities="fusion", class_names=NUSCENES_CLASSES, point_cloud_range=(-54.0, -54.0, -5.0, 54.0, 54.0, 3.0),
                  pillar_size=1.5, depth_max=54.0, point_features=5, eval_config="detection_cvpr_2019", embed_dim=32,
                  num_layers=2, num_heads=2, ffn_dim=64, num_queries=40, depth_num=4, image_widths=(8, 8, 8, 8),
                  bev_widths=(8, 8, 8), max_detections=50)
    return CMT(**{**config, **overrides})


def test_one_training_step_on_the_real_keyframe(batch: dict) -> None:
    torch.manual_seed(0)
    model = tiny_nuscenes_cmt()
    assert model.network.pillar_backbone.cnn[0][0].in_channels == 8  # 7 pillar features + the time lag
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and float(loss) > 0
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(old, new) for old, new in zip(before, model.parameters())]
    assert sum(changed) > 0.9 * len(changed)


def test_test_step_scores_all_five_tp_metrics(batch: dict) -> None:
    model = tiny_nuscenes_cmt().eval()
    model.test_step(batch, 0)
    scores = model.metrics["condition"].compute()
    assert {"map", "nds", "ate", "ase", "aoe", "ave", "aae", "ap_car", "ap_barrier"} <= set(scores)
    assert 0.0 <= scores["map"] <= 1.0 and 0.0 <= scores["nds"] <= 1.0 and scores["scenes"] == 1.0


def ground_truth_rows(batch: dict) -> torch.Tensor:
    valid = batch["gt_labels"][0] >= 0
    count = int(valid.sum())
    return torch.cat([torch.zeros(count, 1), batch["gt_labels"][0][valid, None].float(), batch["gt_boxes"][0][valid],
                      batch["gt_attributes"][0][valid, None].float()], dim=1)


def official_scores(predictions: torch.Tensor, ground_truth: torch.Tensor) -> dict[str, float]:
    from modules.cmt.detection_metrics import NuScenesDetectionMetric

    metric = NuScenesDetectionMetric(class_names=NUSCENES_CLASSES, config="detection_cvpr_2019")
    metric.update(predictions, ground_truth, torch.zeros(1))
    return metric.compute()


def test_official_evaluation_scores_the_ground_truth_perfect_and_a_shifted_copy_lower(batch: dict) -> None:
    ground_truth = ground_truth_rows(batch)
    # Predictions = the GT boxes with score 1 and the GT attribute (13th column).
    as_predictions = lambda rows: torch.cat([rows[:, :11], torch.ones(len(rows), 1), rows[:, 11:]], dim=1)  # noqa: E731
    scores = official_scores(as_predictions(ground_truth), ground_truth)
    # The real keyframe has GT of 5 classes within their class range (car, truck, pedestrian, cone,
    # barrier): those score AP 1; the devkit gives the 5 absent classes AP 0 and TP errors 1.
    present = ("car", "truck", "pedestrian", "traffic_cone", "barrier")
    assert all(scores[f"ap_{name}"] == pytest.approx(1.0) for name in present)
    assert all(scores[f"ap_{name}"] == 0.0 for name in NUSCENES_CLASSES if name not in present)
    assert scores["map"] == pytest.approx(0.5)
    # Add one box 20 m away for each absent class (attribute: vehicle.parked / cycle.without_rider):
    # now every class has GT and the ground truth scores mAP 1 and NDS 1.
    extra = ground_truth[:5].clone()
    for row, name in enumerate(name for name in NUSCENES_CLASSES if name not in present):
        extra[row, 1] = NUSCENES_CLASSES.index(name)
        extra[row, 2:4] = torch.tensor([-20.0, -20.0 + 8 * row])
        extra[row, 11] = 1 if name in ("bicycle", "motorcycle") else 6
    complete = torch.cat([ground_truth, extra])
    scores = official_scores(as_predictions(complete), complete)
    assert scores["map"] == pytest.approx(1.0) and scores["nds"] == pytest.approx(1.0)
    assert all(scores[name] == pytest.approx(0.0, abs=1e-9) for name in ("ate", "ase", "aoe", "ave", "aae"))
    # Shifted 1.5 m along x: matched at 2 and 4 m only (AP about 0.5; a shifted pedestrian can land
    # near a neighbour's GT or leave its class range), ATE about 1.5 (its NDS term clipped to 0).
    shifted = as_predictions(complete)
    shifted[:, 2] += 1.5
    moved = official_scores(shifted, complete)
    assert moved["map"] == pytest.approx(0.5, abs=0.02) and moved["ate"] == pytest.approx(1.5, abs=0.1)
    assert moved["nds"] == pytest.approx((5 * moved["map"] + 4 - moved["ase"] - moved["aoe"] - moved["ave"]
                                          - moved["aae"]) / 10) and moved["nds"] < 0.7
    # Without an attribute column the predictions get mmdetection3d's velocity rule: static
    # pedestrians become 'standing', so the annotated 'moving' ones count as attribute errors.
    by_rule = official_scores(as_predictions(complete)[:, :12], complete)
    assert by_rule["map"] == pytest.approx(1.0) and 0.0 < by_rule["aae"] < 1.0


def test_official_config_refuses_other_classes() -> None:
    from modules.cmt.detection_metrics import NuScenesDetectionMetric

    metric = NuScenesDetectionMetric(class_names=("car", "pedestrian", "traffic_cone"), config="detection_cvpr_2019")
    metric.update(torch.zeros(0, 12), torch.zeros(0, 11), torch.zeros(1))
    with pytest.raises(ValueError, match="ten nuScenes detection classes"):
        metric.compute()
    with pytest.raises(ValueError, match="eval config"):
        NuScenesDetectionMetric(class_names=NUSCENES_CLASSES, config="detection_cvpr_2020")


def test_the_cmt_spec_data_class_routes_nuscenes_to_this_datamodule(install: Path, batch: dict) -> None:
    from datamodules.synthetic_scenes import SyntheticScenesDataModule

    module = SyntheticScenesDataModule(dataset="nuscenes-mini", data_dir=str(install), batch_size=1, train_size=5,
                                       nuscenes={"image_height": HEIGHT, "image_width": WIDTH, "sweeps": 10})
    assert isinstance(module.real, NuScenesDataModule) and module.real.sizes == {"train": None, "val": None}
    module.prepare_data()
    routed = next(iter(module.test_dataloader()))
    for key in ("images", "points", "lidar2img", "gt_boxes", "gt_labels", "gt_attributes", "scene_index"):
        assert torch.equal(routed[key], batch[key]), key
    with pytest.raises(ValueError, match="unknown nuscenes option 'sweep' in data.init_args.nuscenes: choose from .*sweeps"):
        SyntheticScenesDataModule(dataset="nuscenes-mini", data_dir=str(install), nuscenes={"sweep": 10})


def test_the_one_sample_dataset_reads_the_shared_folder_as_both_splits(shared_root: Path, batch: dict,
                                                                       tmp_path: Path) -> None:
    module = NuScenesDataModule(dataset="nuscenes-one-sample", data_dir=str(shared_root), batch_size=1, num_workers=0,
                                image_height=HEIGHT, image_width=WIDTH)
    module.prepare_data()
    for loader in (module.train_dataloader(), module.test_dataloader()):
        (one,) = list(loader)
        for key in ("images", "points", "lidar2img", "gt_boxes", "gt_labels", "gt_attributes"):
            assert torch.equal(one[key], batch[key]), key
    with pytest.raises(FileNotFoundError, match="no info pickle in .*nuscenes_one_sample"):
        NuScenesDataModule(dataset="nuscenes-one-sample", data_dir=str(tmp_path)).prepare_data()


def test_missing_files_name_the_expected_path_and_the_source(install: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        NuScenesDataModule(dataset="nuscenes", data_dir=str(tmp_path)).prepare_data()
    message = str(error.value)
    assert str(tmp_path / "nuscenes" / "nuscenes_infos_train.pkl") in message and "nuscenes.org" in message
    assert "\n" not in message
    # The one-sample infos are v1.0-mini: asking for full nuScenes is a clear version error.
    with pytest.raises(ValueError, match="v1.0-mini infos, not v1.0-trainval"):
        NuScenesDataModule(dataset="nuscenes", data_dir=str(install)).prepare_data()
    # A missing camera image under samples/ is named at prepare_data.
    broken = make_one_sample_install(shared_data_root(ONE_SAMPLE), tmp_path / "broken")
    (next((broken / "nuscenes" / "samples" / "CAM_BACK").iterdir())).unlink()
    with pytest.raises(FileNotFoundError, match="samples/CAM_BACK/.*not found"):
        NuScenesDataModule(dataset="nuscenes-mini", data_dir=str(broken)).prepare_data()


TINY_MODEL = {"embed_dim": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64, "num_queries": 40, "depth_num": 4,
              "image_widths": "[8,8,8,8]", "bev_widths": "[8,8,8]", "pillar_size": 1.5, "max_detections": 50, "dn_groups": 2}


def test_full_profile_without_nuscenes_is_a_one_line_usage_error(tmp_path: Path, capsys) -> None:
    from benchmarks.cli import main

    code = main(["run", "cmt", "--profile", "full", "--datasets", "nuscenes-mini", "--data-dir", str(tmp_path),
                 "--methods", "cmt_l", "--results", str(tmp_path / "results"), "--wandb", "disabled"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert str(tmp_path / "nuscenes" / "nuscenes_infos_train.pkl") in error and "nuscenes.org" in error
    assert not (tmp_path / "results" / "cmt").exists()


@pytest.mark.slow
def test_full_profile_runs_nuscenes_mini_through_the_cli(install: Path, tmp_path: Path) -> None:
    """`litbench run cmt --profile full --datasets nuscenes-mini --data-dir ROOT` on the one-keyframe
    install, the network shrunk with --set (the profile's own sizes are for a GPU)."""
    from benchmarks.cli import main
    from leaderboard.records import read_record

    sets = ["trainer.max_epochs=1", "stages.fused.trainer.max_epochs=1", "data.init_args.num_workers=0",
            "data.init_args.nuscenes.image_height=64", "data.init_args.nuscenes.image_width=128"]
    sets += [f"{prefix}model.init_args.{key}={value}" for key, value in TINY_MODEL.items()
             for prefix in ("", "stages.fused.")]
    argv = ["run", "cmt", "--profile", "full", "--datasets", "nuscenes-mini", "--data-dir", str(install),
            "--methods", "cmt,cmt_l", "--seeds", "1", "--results", str(tmp_path), "--wandb", "disabled"]
    assert main(argv + [item for assignment in sets for item in ("--set", assignment)]) == 0
    for method in ("cmt", "cmt_l"):
        record = read_record(tmp_path / f"cmt/nuscenes-mini/{method}/full/seed-0.json")
        assert record.ok and record.dataset == "nuscenes-mini" and record.metrics["scenes"] == 1.0
        # The official config: ten per-class APs and all five TP errors.
        assert {f"ap_{name}" for name in NUSCENES_CLASSES} | {"ate", "ase", "aoe", "ave", "aae"} <= set(record.metrics)
        assert 0.0 <= record.metrics["nds"] <= 1.0
        assert record.config["model"]["init_args"]["eval_config"] == "detection_cvpr_2019"
        assert record.config["data"]["init_args"]["nuscenes"]["sweeps"] == 10
