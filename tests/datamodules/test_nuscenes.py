"""The nuScenes info reader on the real keyframe of ../shared/data/nuscenes_one_sample (counts from
its SOURCE.md; box centres projected into the cameras against the pickle's own cam_instances), the
legacy info layout, bad input, and the seeded synthetic scenes."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest

from datamodules.nuscenes import (CAMERA_NAMES, box_corners, project_to_image, read_info_file, read_one_sample,
                                  render_keyframe)
from datamodules.synthetic_scenes import (CLASS_INTENSITY, CLASS_NAMES, SyntheticScenesDataModule, collate_scenes,
                                          generate_scene)
from tests_support import shared_data_root

ONE_SAMPLE = "nuscenes_one_sample/n015-2018-07-24-11-22-45+0800.pkl"
IMAGE_WIDTH, IMAGE_HEIGHT = 1600, 900


@pytest.fixture(scope="module")
def keyframe():
    return read_one_sample(shared_data_root(ONE_SAMPLE))


def test_real_keyframe_counts_match_source(keyframe) -> None:
    assert keyframe.token == "ca9a282c9e77460f8360f564131a8af5"
    assert set(keyframe.cameras) == set(CAMERA_NAMES)
    # 69 instances, one of them ignored (label -1): 68 boxes in the 10 detection classes.
    assert len(keyframe.boxes) + keyframe.extra["ignored_instances"] == 69 and keyframe.extra["ignored_instances"] == 1
    assert Counter(keyframe.names) == {"pedestrian": 30, "barrier": 22, "car": 8, "traffic_cone": 3, "truck": 2,
                                       "bus": 1, "bicycle": 1, "construction_vehicle": 1}
    assert keyframe.load_points().shape == (34688, 5)
    for camera in CAMERA_NAMES:
        assert keyframe.load_image(camera).shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)


def test_projected_box_centres_land_on_the_annotated_image_centres(keyframe) -> None:
    cam_instances = keyframe.extra["cam_instances"]
    for camera in CAMERA_NAMES:
        pixels, depth = project_to_image(keyframe.boxes[:, :3], keyframe.cameras[camera].lidar2img)
        visible = (depth > 0) & (pixels[:, 0] >= 0) & (pixels[:, 0] < IMAGE_WIDTH) & (pixels[:, 1] >= 0) & (pixels[:, 1] < IMAGE_HEIGHT)
        annotated = np.array([item["center_2d"] for item in cam_instances[camera]])
        annotated_depth = np.array([item["depth"] for item in cam_instances[camera]])
        # Every visible centre is one of the camera's annotated 3D-box centres (pixel and depth), and
        # the annotations hold at most two more boxes (visible boxes whose centre is outside the image).
        assert len(annotated) - 2 <= visible.sum() <= len(annotated), camera
        for pixel, distance in zip(pixels[visible], depth[visible]):
            nearest = np.argmin(np.linalg.norm(annotated - pixel, axis=1))
            assert np.linalg.norm(annotated[nearest] - pixel) < 0.5 and abs(annotated_depth[nearest] - distance) < 0.05
    assert int(((project_to_image(keyframe.boxes[:, :3], keyframe.cameras["CAM_FRONT"].lidar2img)[1]) > 0).sum()) >= 46


def test_lidar_points_fill_the_boxes(keyframe) -> None:
    points = keyframe.load_points()
    car = keyframe.boxes[[i for i, name in enumerate(keyframe.names) if name == "car"]]
    nearest_car = car[np.argmin(np.hypot(car[:, 0], car[:, 1]))]
    corners = box_corners(nearest_car[None])[0]
    inside = np.all((points[:, :3] >= corners.min(0)) & (points[:, :3] <= corners.max(0)), axis=1)
    assert inside.sum() > 20  # an axis-aligned hull of the nearest car holds its returns


def test_render_keyframe_writes_the_six_views(keyframe, tmp_path) -> None:
    import matplotlib.image

    path = render_keyframe(keyframe, tmp_path / "keyframe.png")
    assert matplotlib.image.imread(path).shape[:2] == (480, 1200)


def test_legacy_info_layout_gives_the_same_geometry(keyframe, tmp_path) -> None:
    cams = {}
    for name, view in keyframe.cameras.items():
        cam2lidar = np.linalg.inv(view.lidar2cam)
        cams[name] = {"data_path": str(view.image_path), "cam_intrinsic": view.intrinsic,
                      "sensor2lidar_rotation": cam2lidar[:3, :3], "sensor2lidar_translation": cam2lidar[:3, 3]}
    info = {"token": "t", "lidar_path": str(keyframe.lidar_path), "cams": cams, "gt_boxes": keyframe.boxes,
            "gt_names": np.array(keyframe.names), "gt_velocity": keyframe.velocities,
            "num_lidar_pts": keyframe.num_lidar_points}
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps({"infos": [info], "metadata": {"version": "v1.0-mini"}}))
    legacy = read_info_file(path)[0]
    for name in CAMERA_NAMES:
        np.testing.assert_allclose(legacy.cameras[name].lidar2img, keyframe.cameras[name].lidar2img, atol=1e-6)
    np.testing.assert_allclose(legacy.boxes, keyframe.boxes)


def test_bad_input_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no info pickle"):
        read_one_sample(tmp_path)
    (tmp_path / "broken.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable info pickle"):
        read_info_file(tmp_path / "broken.pkl")
    with pytest.raises(ValueError, match="unknown dataset"):
        SyntheticScenesDataModule(dataset="kitti")


def test_synthetic_scenes_are_deterministic_by_seed() -> None:
    first, again = generate_scene(split_seed=3, split="train", index=5), generate_scene(split_seed=3, split="train", index=5)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other = generate_scene(split_seed=4, split="train", index=5)
    assert not np.array_equal(first["points"], other["points"])
    test_scene = generate_scene(split_seed=3, split="test", index=5)
    assert not np.array_equal(first["gt_boxes"], test_scene["gt_boxes"])


def test_synthetic_scene_contents() -> None:
    scene = generate_scene(split_seed=0, split="train", index=0)
    assert scene["images"].shape == (4, 3, 64, 96) and scene["images"].dtype == np.uint8
    assert 2000 < len(scene["points"]) < 5000 and 1 <= len(scene["gt_labels"]) <= 8
    # Returns inside a box carry that class's intensity (+-0.05); boxes stand on the ground.
    corners = box_corners(scene["gt_boxes"][:, :7].astype(np.float64))
    for box, label, box_corner in zip(scene["gt_boxes"], scene["gt_labels"], corners):
        local = scene["points"][:, :2] - box[:2]
        cos, sin = np.cos(-box[6]), np.sin(-box[6])
        along, across = local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos
        inside = (np.abs(along) < box[3] / 2 + 0.05) & (np.abs(across) < box[4] / 2 + 0.05) & (scene["points"][:, 2] > -1.7)
        if inside.any():
            assert np.all(np.abs(scene["points"][inside, 3] - CLASS_INTENSITY[CLASS_NAMES[label]]) <= 0.05 + 1e-6)
        assert box_corner[:, 2].min() == pytest.approx(-1.8, abs=1e-5)
    batch = collate_scenes([scene, generate_scene(split_seed=0, split="train", index=1)])
    assert batch["images"].shape == (2, 4, 3, 64, 96) and batch["points"].shape[2] == 4
    assert batch["point_mask"].sum(1).tolist() == [len(scene["points"]), len(generate_scene(split_seed=0, split="train", index=1)["points"])]
    assert (batch["gt_labels"] >= 0).sum(1)[0] == len(scene["gt_labels"])
