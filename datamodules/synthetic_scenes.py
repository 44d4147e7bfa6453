"""Seeded synthetic driving scenes (ray-cast LiDAR + rendered cameras + 3D boxes) for CMT.

The generator follows the CMT paper spec's small-scale profile (``../shared/papers/cmt.md``):

* **Scene.** Range [-16, 16]^2 x [-2, 2] m (LiDAR frame, sensor at the origin), flat ground at
  z = -1.8. 1-8 static objects with random yaw, placed uniformly (centres in [-14, 14]^2, at least
  2.5 m from the sensor) and rejected when their bounding circles overlap. Classes use nuScenes
  names (``car`` 4.2x1.8x1.6, ``pedestrian`` 0.7x0.7x1.75, ``traffic_cone`` 0.4x0.4x0.9 m as
  l x w x h, each side jittered by U(-10%, 10%)), so the nuScenes devkit can score them.
* **LiDAR.** A 16-beam spinning sensor (elevations -15..+5 deg, 360 azimuth steps) ray-cast
  analytically against the box volumes (slab test in each box frame) and the ground; max range 20 m,
  N(0, 2 cm) range noise, 10% of returns dropped, class-dependent intensity (ground 0.1, car 0.6,
  pedestrian 0.3, cone 0.9, +-0.05). About 2.5-4k points of (x, y, z, intensity).
* **Cameras.** 4 pinhole views at the sensor origin looking front/left/back/right (90 deg HFOV,
  64 x 96 px). Sky/ground gradient, then every box face flat-shaded in its class colour (brightness
  by face normal), drawn far-to-near (painter's algorithm); faces with a corner closer than 0.2 m
  to the image plane are skipped instead of clipped (objects start 2.5 m away, so this only drops
  faces of objects beside the camera that are barely visible anyway). ``lidar2img`` (4 x 4) per
  view = K4x4 @ lidar2cam, as in the nuScenes reader (``datamodules/nuscenes.py``).

Scene ``i`` of a split is drawn from ``numpy.random.default_rng([split_seed, split_code, i])``, so a
scene depends only on (split_seed, split, index): deterministic, order-free, and the same on every
DDP rank. ``split_seed`` does not follow the run seed: every seed sees the same scenes.

Batches (``collate_scenes``) are dicts: ``images`` float32 [B, V, 3, H, W] in [0, 1], ``points``
float32 [B, N_max, 4] zero-padded with ``point_mask`` bool [B, N_max], ``lidar2img`` float32
[B, V, 4, 4], ``gt_boxes`` float32 [B, M_max, 9] = (x, y, z_centre, l, w, h, yaw, vx, vy) with
``gt_labels`` int64 [B, M_max] (-1 = padding), and ``scene_index`` int64 [B] (a unique id of the
scene within its split; the detection metric uses it as the sample token).

The real nuScenes datasets (``nuscenes``, ``nuscenes-mini``, ``nuscenes-one-sample``) are routed to
``datamodules.nuscenes.NuScenesDataModule`` (its options in ``nuscenes``; the synthetic sizes do
not apply to them), so the CMT spec has one data class for synthetic and real scenes.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.loaders import loader_options
from datamodules.nuscenes import NUSCENES_DATASETS as NUSCENES_VERSIONS, box_corners, lidar_to_image_matrix

CLASS_NAMES = ("car", "pedestrian", "traffic_cone")
CLASS_SIZES = {"car": (4.2, 1.8, 1.6), "pedestrian": (0.7, 0.7, 1.75), "traffic_cone": (0.4, 0.4, 0.9)}
CLASS_INTENSITY = {"car": 0.6, "pedestrian": 0.3, "traffic_cone": 0.9}
CLASS_COLOURS = {"car": (200, 40, 40), "pedestrian": (40, 160, 40), "traffic_cone": (250, 150, 20)}
POINT_CLOUD_RANGE = (-16.0, -16.0, -2.0, 16.0, 16.0, 2.0)
GROUND_Z = -1.8
DATASETS = ("synthetic-scenes",)
NUSCENES_DATASETS = tuple(NUSCENES_VERSIONS)  # read by datamodules.nuscenes.NuScenesDataModule
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def camera_rigs(*, height: int = 64, width: int = 96, fov_deg: float = 90.0,
                yaws_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (V x 3 x 3) and lidar2cam (V x 4 x 4) of cameras at the origin looking at ``yaws_deg``."""
    focal = width / 2 / math.tan(math.radians(fov_deg) / 2)
    intrinsic = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    extrinsics = []
    for yaw in np.radians(yaws_deg):
        forward, right, down = (np.cos(yaw), np.sin(yaw), 0.0), (np.sin(yaw), -np.cos(yaw), 0.0), (0.0, 0.0, -1.0)
        lidar2cam = np.eye(4)
        lidar2cam[:3, :3] = np.array([right, down, forward])
        extrinsics.append(lidar2cam)
    return np.repeat(intrinsic[None], len(yaws_deg), axis=0), np.stack(extrinsics)


def place_objects(rng: np.random.Generator, *, max_objects: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping boxes (M x 7: x, y, z_centre, l, w, h, yaw) and their class indices (M)."""
    count = int(rng.integers(1, max_objects + 1))
    boxes, labels = [], []
    for _ in range(50 * count):
        if len(boxes) == count:
            break
        label = int(rng.integers(len(CLASS_NAMES)))
        size = np.array(CLASS_SIZES[CLASS_NAMES[label]]) * rng.uniform(0.9, 1.1, size=3)
        centre = rng.uniform(-14.0, 14.0, size=2)
        radius = 0.5 * math.hypot(size[0], size[1])
        if np.hypot(*centre) < 2.5 + radius:
            continue
        if any(np.hypot(*(centre - other[:2])) < radius + 0.5 * math.hypot(other[3], other[4]) + 0.2 for other in boxes):
            continue
        boxes.append(np.array([centre[0], centre[1], GROUND_Z + size[2] / 2, *size, rng.uniform(-math.pi, math.pi)]))
        labels.append(label)
    return np.array(boxes).reshape(-1, 7), np.array(labels, dtype=np.int64)


def ray_cast_lidar(rng: np.random.Generator, boxes: np.ndarray, labels: np.ndarray, *, beams: int = 16,
                   azimuth_steps: int = 360, elevation_deg: tuple[float, float] = (-15.0, 5.0), max_range: float = 20.0,
                   range_noise: float = 0.02, dropout: float = 0.1) -> np.ndarray:
    """Points (N x 4: x, y, z, intensity) of a spinning LiDAR at the origin hitting boxes and ground."""
    elevation = np.radians(np.linspace(*elevation_deg, beams))
    azimuth = np.linspace(-math.pi, math.pi, azimuth_steps, endpoint=False)
    elevation, azimuth = np.meshgrid(elevation, azimuth, indexing="ij")
    directions = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                           np.sin(elevation)], axis=-1).reshape(-1, 3)
    distance = np.full(len(directions), np.inf)
    intensity = np.full(len(directions), 0.1)
    downward = directions[:, 2] < -1e-6
    distance[downward] = GROUND_Z / directions[downward, 2]
    for box, label in zip(boxes, labels):
        cos, sin = math.cos(-box[6]), math.sin(-box[6])
        origin = np.array([cos * -box[0] - sin * -box[1], sin * -box[0] + cos * -box[1], -box[2]])
        local = np.stack([cos * directions[:, 0] - sin * directions[:, 1],
                          sin * directions[:, 0] + cos * directions[:, 1], directions[:, 2]], axis=-1)
        half = box[3:6] / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t_low = (-half - origin) / local
            t_high = (half - origin) / local
        t_enter = np.nanmax(np.minimum(t_low, t_high), axis=1)
        t_exit = np.nanmin(np.maximum(t_low, t_high), axis=1)
        hit = (t_enter <= t_exit) & (t_enter > 0) & (t_enter < distance)
        distance[hit] = t_enter[hit]
        intensity[hit] = CLASS_INTENSITY[CLASS_NAMES[label]]
    keep = (distance <= max_range) & (rng.random(len(directions)) >= dropout)
    ranges = distance[keep] + rng.normal(0.0, range_noise, size=int(keep.sum()))
    points = directions[keep] * ranges[:, None]
    values = np.clip(intensity[keep] + rng.uniform(-0.05, 0.05, size=len(ranges)), 0.0, 1.0)
    return np.concatenate([points, values[:, None]], axis=1).astype(np.float32)


FACES = ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5))  # box_corners order


def render_cameras(boxes: np.ndarray, labels: np.ndarray, *, intrinsics: np.ndarray, lidar2cams: np.ndarray,
                   height: int, width: int) -> np.ndarray:
    """uint8 images (V x 3 x H x W): sky/ground gradient + flat-shaded cuboids, painter's algorithm."""
    import cv2

    rows = (np.arange(height) - intrinsics[0, 1, 2]) / intrinsics[0, 1, 1]  # tan of the ray's depression
    sky = np.array([135, 185, 235]) + np.outer(np.clip(-rows, 0, 1), [60, 50, 20])
    ground_distance = np.clip(-GROUND_Z / np.maximum(rows, 1e-3), 0, 40) / 40
    ground = np.array([70, 70, 70]) + np.outer(ground_distance, [80, 80, 70])
    background = np.where((rows > 0)[:, None], ground, np.clip(sky, 0, 255)).astype(np.uint8)
    corners = box_corners(boxes)  # M x 8 x 3
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    images = []
    for intrinsic, lidar2cam in zip(intrinsics, lidar2cams):
        image = np.repeat(background[:, None, :], width, axis=1).copy()
        lidar2img = lidar_to_image_matrix(intrinsic, lidar2cam)
        faces = []
        for box_index, label in enumerate(labels):
            homogeneous = np.concatenate([corners[box_index], np.ones((8, 1))], axis=1) @ lidar2img.T
            centre = corners[box_index].mean(0)
            for face in FACES:
                depth = homogeneous[list(face), 2]
                if depth.min() < 0.2:
                    continue
                normal = corners[box_index][list(face)].mean(0) - centre
                normal /= np.linalg.norm(normal)
                shade = 0.55 + 0.45 * abs(float(normal @ light))
                pixels = homogeneous[list(face), :2] / depth[:, None]
                faces.append((float(depth.mean()), pixels, np.array(CLASS_COLOURS[CLASS_NAMES[label]]) * shade))
        for _, pixels, colour in sorted(faces, key=lambda item: -item[0]):
            polygon = np.round(np.clip(pixels, -4 * width, 4 * width) * 16).astype(np.int32)
            cv2.fillConvexPoly(image, polygon, tuple(int(c) for c in colour), lineType=cv2.LINE_AA, shift=4)
        images.append(image.transpose(2, 0, 1))
    return np.stack(images)


def generate_scene(*, split_seed: int, split: str, index: int, height: int = 64, width: int = 96,
                   max_objects: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([split_seed, SPLIT_CODES[split], index])
    boxes, labels = place_objects(rng, max_objects=max_objects)
    intrinsics, lidar2cams = camera_rigs(height=height, width=width)
    return {"images": render_cameras(boxes, labels, intrinsics=intrinsics, lidar2cams=lidar2cams, height=height, width=width),
            "points": ray_cast_lidar(rng, boxes, labels),
            "lidar2img": np.stack([lidar_to_image_matrix(k, e) for k, e in zip(intrinsics, lidar2cams)]).astype(np.float32),
            "gt_boxes": np.concatenate([boxes, np.zeros((len(boxes), 2))], axis=1).astype(np.float32),
            "gt_labels": labels, "scene_index": np.int64(index)}


class SceneDataset(Dataset):
    def __init__(self, scenes: list[dict[str, np.ndarray]]) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.scenes[index]


def collate_scenes(scenes: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    batch = len(scenes)
    max_points = max(len(scene["points"]) for scene in scenes)
    max_boxes = max(1, max(len(scene["gt_labels"]) for scene in scenes))
    points = torch.zeros(batch, max_points, 4)
    point_mask = torch.zeros(batch, max_points, dtype=torch.bool)
    gt_boxes = torch.zeros(batch, max_boxes, 9)
    gt_labels = torch.full((batch, max_boxes), -1, dtype=torch.long)
    for row, scene in enumerate(scenes):
        count, boxes = len(scene["points"]), len(scene["gt_labels"])
        points[row, :count] = torch.from_numpy(scene["points"])
        point_mask[row, :count] = True
        gt_boxes[row, :boxes] = torch.from_numpy(scene["gt_boxes"])
        gt_labels[row, :boxes] = torch.from_numpy(scene["gt_labels"])
    return {"images": torch.from_numpy(np.stack([scene["images"] for scene in scenes])).float() / 255.0,
            "points": points, "point_mask": point_mask,
            "lidar2img": torch.from_numpy(np.stack([scene["lidar2img"] for scene in scenes])),
            "gt_boxes": gt_boxes, "gt_labels": gt_labels,
            "scene_index": torch.tensor([int(scene["scene_index"]) for scene in scenes], dtype=torch.long)}


class SyntheticScenesDataModule(L.LightningDataModule):
    """Seeded synthetic camera + LiDAR scenes (see the module docstring). train, val and test are
    disjoint: each split draws its scenes from its own seed sequence (``SPLIT_CODES``), so val
    (for calibration sweeps) never shares a scene with test."""

    class_names = CLASS_NAMES
    point_cloud_range = POINT_CLOUD_RANGE

    def __init__(self, *, dataset: str = "synthetic-scenes", data_dir: str | None = None, cache_dir: str | None = None,
                 train_size: int = 2000, val_size: int = 300, test_size: int = 300, batch_size: int = 8, eval_batch_size: int = 16,
                 split_seed: int = 0, image_height: int = 64, image_width: int = 96, max_objects: int = 8,
                 num_workers: int = 0, nuscenes: dict | None = None) -> None:
        super().__init__()
        if dataset not in DATASETS + NUSCENES_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r} for SyntheticScenesDataModule: choose one of "
                             f"{DATASETS + NUSCENES_DATASETS}")
        self.dataset, self.data_dir, self.cache_dir = dataset, data_dir, cache_dir
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.split_seed, self.max_objects, self.num_workers = split_seed, max_objects, num_workers
        self.image_height, self.image_width = image_height, image_width
        self.splits: dict[str, SceneDataset] = {}
        if dataset in NUSCENES_DATASETS:  # its hooks serve the real data (``nuscenes``: NuScenesDataModule options)
            from datamodules.nuscenes import nuscenes_from_options

            self.real = nuscenes_from_options(dataset=dataset, options=nuscenes, data_dir=data_dir, cache_dir=cache_dir,
                                              batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
            for hook in ("prepare_data", "setup", "train_dataloader", "val_dataloader", "test_dataloader"):
                setattr(self, hook, getattr(self.real, hook))

    def scenes(self, split: str, size: int) -> SceneDataset:
        if split not in self.splits:
            self.splits[split] = SceneDataset([
                generate_scene(split_seed=self.split_seed, split=split, index=index, height=self.image_height,
                               width=self.image_width, max_objects=self.max_objects) for index in range(size)])
        return self.splits[split]

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_scenes,
                          **loader_options(self.num_workers))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.scenes("train", self.train_size), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.scenes("val", self.val_size), batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.scenes("test", self.test_size), batch_size=self.eval_batch_size, shuffle=False)
