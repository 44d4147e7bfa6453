"""``NuScenesDataModule``: nuScenes keyframes (6 cameras + LiDAR sweeps + 3D boxes) for CMT.

Datasets and where they are read (``data_dir`` defaults to env ``LITBENCH_DATA``):

* ``nuscenes`` (v1.0-trainval) and ``nuscenes-mini`` (v1.0-mini: 8 train / 2 val scenes) read a
  nuScenes install with mmdetection3d info pickles beside it: ``<data_dir>/nuscenes/{samples,
  sweeps}/<CHANNEL>/...`` and ``<data_dir>/nuscenes/nuscenes_infos_{train,val}.pkl``
  (``tools/create_data.py nuscenes --root-path ./data/nuscenes --out-dir ./data/nuscenes
  --extra-tag nuscenes [--version v1.0-mini]`` of mmdetection3d, either info layout; see
  ``datamodules/nuscenes/infos.py``). ``nuscenes-mini`` looks in ``<data_dir>/nuscenes-mini/``
  first; ``<data_dir>`` may also be the install folder itself. The pickles' version
  (``v1.0-trainval`` / ``v1.0-mini``) must match the dataset. The split is the official one the
  pickles were built with: train = ``nuscenes_infos_train.pkl``; val and test both = the official
  val split ``nuscenes_infos_val.pkl`` (the nuScenes test split has no public labels, and the
  paper reports val).
* ``nuscenes-one-sample`` reads ``<data_dir>/nuscenes_one_sample/*.pkl`` (the one real keyframe of
  ``../shared/data``, mmdetection3d's demo) as both train and val: a pipeline check for tests and
  device checks, not a benchmark.

Per keyframe (read in ``Dataset.__getitem__``, i.e. in the loader's workers; ``setup`` holds only
the info records): the six cameras in ``CAMERA_NAMES`` order, resized to ``image_height x
image_width`` with ``lidar2img`` recomputed from the resized intrinsics; the LiDAR keyframe sweep
plus up to ``sweeps - 1`` earlier sweeps moved into the keyframe's LiDAR frame (points within 1 m
of a sweep's sensor dropped, mmdet3d's ``remove_close``), each point (x, y, z, intensity / 255,
time lag in s); GT boxes of the ten detection classes whose mmdet3d valid flag is set (LiDAR +
radar points > 0, the devkit's GT filter and CMT's ``use_valid_flag``), velocities NaN -> 0; in the
train split only, boxes whose centre lies outside ``object_range`` (x/y, mmdet3d's
``ObjectRangeFilter``) are dropped. No augmentation.

Batches (``collate_keyframes``) are what the CMT LightningModule reads from the synthetic scenes
(``datamodules/synthetic_scenes.py``): ``images`` float32 [B, 6, 3, H, W] in [0, 1], ``points``
float32 [B, N_max, 5] zero-padded with ``point_mask`` bool [B, N_max], ``lidar2img`` float32
[B, 6, 4, 4], ``gt_boxes`` float32 [B, M_max, 9] = (x, y, z_centre, l, w, h, yaw, vx, vy) with
``gt_labels`` int64 [B, M_max] (index into ``NUSCENES_CLASSES``; -1 = padding), plus
``gt_attributes`` int64 [B, M_max] (index into ``ATTRIBUTE_NAMES``, -1 unknown) and
``scene_index`` int64 [B] (the keyframe's index in its info file: the metric's sample id).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.loaders import loader_options
from datamodules.nuscenes.geometry import lidar_to_image_matrix, resized_intrinsic
from datamodules.nuscenes.infos import (CAMERA_NAMES, NUSCENES_CLASSES, ONE_SAMPLE_FOLDER, InfoFile, load_info_file,
                                       read_lidar_points)

NUSCENES_DATASETS = {"nuscenes": "v1.0-trainval", "nuscenes-mini": "v1.0-mini", "nuscenes-one-sample": "v1.0-mini"}
INFO_FILES = {"train": "nuscenes_infos_train.pkl", "val": "nuscenes_infos_val.pkl"}
DOWNLOAD_HINT = ("download nuScenes from https://www.nuscenes.org/download and build the info pickles with "
                 "mmdetection3d's tools/create_data.py nuscenes")
SWEEP_REMOVE_RADIUS = 1.0


def find_info_files(data_dir: str | Path | None, dataset: str) -> tuple[Path, dict[str, Path]]:
    """(the folder sensor paths are resolved under, {split: info pickle}) of ``dataset`` under ``data_dir``."""
    if dataset not in NUSCENES_DATASETS:
        raise ValueError(f"unknown nuScenes dataset {dataset!r}: choose one of {sorted(NUSCENES_DATASETS)}")
    if data_dir is None:
        raise FileNotFoundError(f"no data dir for {dataset}: pass --data-dir (or set LITBENCH_DATA) to the folder "
                                f"holding nuscenes/{INFO_FILES['train']}; {DOWNLOAD_HINT}")
    root = Path(data_dir)
    if dataset == "nuscenes-one-sample":  # the shared demo keyframe: one pickle serves both splits
        pickles = sorted((root / ONE_SAMPLE_FOLDER).glob("*.pkl"))
        if not pickles:
            raise FileNotFoundError(f"no info pickle in {root / ONE_SAMPLE_FOLDER}: copy ../shared/data/{ONE_SAMPLE_FOLDER} "
                                    "there (mmdetection3d's demo/data/nuscenes, see its SOURCE.md)")
        return root / ONE_SAMPLE_FOLDER, {"train": pickles[0], "val": pickles[0]}
    folders = ([root / "nuscenes-mini"] if dataset == "nuscenes-mini" else []) + [root / "nuscenes", root]
    for folder in folders:
        if (folder / INFO_FILES["train"]).is_file():
            return folder, {split: folder / name for split, name in INFO_FILES.items()}
    raise FileNotFoundError(f"{root / 'nuscenes' / INFO_FILES['train']} not found: {dataset} reads nuScenes "
                            f"{NUSCENES_DATASETS[dataset]} from <data_dir>/nuscenes (samples/, sweeps/ and the info "
                            f"pickles); {DOWNLOAD_HINT}")


def load_split_infos(paths: dict[str, Path], dataset: str) -> dict[str, InfoFile]:
    """The train and val info files, checked against the dataset's version."""
    infos = {}
    for split, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; {DOWNLOAD_HINT}")
        infos[split] = load_info_file(path)
        expected = NUSCENES_DATASETS[dataset]
        if infos[split].version and infos[split].version != expected:
            raise ValueError(f"{path} holds {infos[split].version} infos, not {expected} ({dataset}); point "
                             f"--data-dir at the {expected} install")
    return infos


def load_points(keyframe, *, sweeps: int) -> np.ndarray:
    """float32 N x 5 (x, y, z, intensity / 255, time lag s) of the keyframe and ``sweeps - 1`` earlier sweeps."""
    raw = read_lidar_points(keyframe.lidar_path)
    clouds = [np.concatenate([raw[:, :3], raw[:, 3:4] / 255.0, np.zeros((len(raw), 1))], axis=1)]
    for sweep in keyframe.sweeps[:max(0, sweeps - 1)]:
        raw = read_lidar_points(sweep.path)
        raw = raw[np.hypot(raw[:, 0], raw[:, 1]) >= SWEEP_REMOVE_RADIUS]  # the ego car's own returns
        xyz = raw[:, :3].astype(np.float64) @ sweep.sensor2lidar[:3, :3].T + sweep.sensor2lidar[:3, 3]
        clouds.append(np.concatenate([xyz, raw[:, 3:4] / 255.0, np.full((len(raw), 1), sweep.time_lag)], axis=1))
    return np.concatenate(clouds).astype(np.float32)


class NuScenesKeyframes(Dataset):
    """One split's keyframes; every file is read in ``__getitem__``."""

    def __init__(self, info: InfoFile, *, data_root: Path, indices: Sequence[int], image_size: tuple[int, int],
                 sweeps: int, object_range: Sequence[float] | None = None) -> None:
        self.info, self.data_root, self.indices = info, data_root, list(indices)
        self.image_size, self.sweeps = tuple(image_size), sweeps
        self.object_range = None if object_range is None else np.asarray(object_range, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, np.ndarray]:
        import cv2

        index = self.indices[item]
        keyframe = self.info.keyframe(index, data_root=self.data_root)
        missing = [name for name in CAMERA_NAMES if name not in keyframe.cameras]
        if missing:
            raise ValueError(f"keyframe {keyframe.token} of {self.info.path} has no {missing[0]}: CMT needs all six cameras")
        height, width = self.image_size
        images, lidar2img = [], []
        for name in CAMERA_NAMES:
            image = keyframe.load_image(name)
            scale_x, scale_y = width / image.shape[1], height / image.shape[0]
            images.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
            intrinsic = resized_intrinsic(keyframe.cameras[name].intrinsic, scale_x=scale_x, scale_y=scale_y)
            lidar2img.append(lidar_to_image_matrix(intrinsic, keyframe.cameras[name].lidar2cam))
        keep = keyframe.valid & np.array([name in NUSCENES_CLASSES for name in keyframe.names], dtype=bool)
        if self.object_range is not None:
            low, high = self.object_range[:2], self.object_range[3:5]
            keep &= np.all((keyframe.boxes[:, :2] >= low) & (keyframe.boxes[:, :2] <= high), axis=1)
        boxes = np.concatenate([keyframe.boxes, keyframe.velocities], axis=1)[keep]
        return {"images": np.stack(images), "points": load_points(keyframe, sweeps=self.sweeps),
                "lidar2img": np.stack(lidar2img).astype(np.float32), "gt_boxes": boxes.astype(np.float32),
                "gt_labels": np.array([NUSCENES_CLASSES.index(name) for name, kept in zip(keyframe.names, keep) if kept],
                                      dtype=np.int64),
                "gt_attributes": keyframe.attributes[keep], "scene_index": np.int64(index)}


def padded(arrays: list[np.ndarray], *, fill: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Arrays of different lengths stacked into [B, L_max, ...] (``fill`` after each) and the bool mask [B, L_max]."""
    length = max(1, max(len(array) for array in arrays))
    stacked = torch.full((len(arrays), length, *arrays[0].shape[1:]), fill, dtype=dtype)
    mask = torch.zeros(len(arrays), length, dtype=torch.bool)
    for row, array in enumerate(arrays):
        stacked[row, :len(array)] = torch.as_tensor(array, dtype=dtype)
        mask[row, :len(array)] = True
    return stacked, mask


def collate_keyframes(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    points, point_mask = padded([sample["points"] for sample in samples], fill=0.0, dtype=torch.float32)
    return {"images": torch.from_numpy(np.stack([sample["images"] for sample in samples])).float() / 255.0,
            "points": points, "point_mask": point_mask,
            "lidar2img": torch.from_numpy(np.stack([sample["lidar2img"] for sample in samples])),
            "gt_boxes": padded([sample["gt_boxes"].reshape(-1, 9) for sample in samples], fill=0.0, dtype=torch.float32)[0],
            "gt_labels": padded([sample["gt_labels"] for sample in samples], fill=-1, dtype=torch.long)[0],
            "gt_attributes": padded([sample["gt_attributes"] for sample in samples], fill=-1, dtype=torch.long)[0],
            "scene_index": torch.tensor([int(sample["scene_index"]) for sample in samples], dtype=torch.long)}


class NuScenesDataModule(L.LightningDataModule):
    """nuScenes / nuScenes-mini keyframes from an mmdetection3d-info install (see the module docstring).

    ``train_size`` / ``test_size`` (None = all) take the first keyframes of the train / val infos
    (a quick look, not the benchmark); ``val`` and ``test`` are both the official val split."""

    class_names = NUSCENES_CLASSES

    def __init__(self, *, dataset: str = "nuscenes-mini", data_dir: str | None = None, cache_dir: str | None = None,
                 batch_size: int = 2, eval_batch_size: int = 2, num_workers: int = 4, image_height: int = 320,
                 image_width: int = 800, sweeps: int = 10, object_range: Sequence[float] | None = None,
                 train_size: int | None = None, test_size: int | None = None) -> None:
        super().__init__()
        if dataset not in NUSCENES_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r} for NuScenesDataModule: choose one of {sorted(NUSCENES_DATASETS)}")
        self.dataset, self.cache_dir = dataset, cache_dir
        self.data_dir = data_dir or os.environ.get("LITBENCH_DATA")
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.image_size, self.sweeps = (image_height, image_width), sweeps
        self.object_range = None if object_range is None else tuple(object_range)
        self.sizes = {"train": train_size, "val": test_size}
        self.install: Path | None = None
        self.infos: dict[str, InfoFile] = {}

    def prepare_data(self) -> None:
        """Find the install, read both info files (version-checked) and check the first keyframe's files."""
        self._load()
        first = self.infos["train"].keyframe(0, data_root=self.install) if self.infos["train"].records else None
        if first is not None:
            for path in [first.lidar_path] + [view.image_path for view in first.cameras.values()]:
                if not path.is_file():
                    raise FileNotFoundError(f"{path} not found (named by {self.infos['train'].path}); {DOWNLOAD_HINT}")

    def _load(self) -> None:
        if not self.infos:  # setup reuses what prepare_data read in this process
            self.install, paths = find_info_files(self.data_dir, self.dataset)
            self.infos = load_split_infos(paths, self.dataset)

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def split(self, split: str) -> NuScenesKeyframes:
        self._load()
        info, size = self.infos[split], self.sizes[split]
        count = len(info.records) if size is None else min(size, len(info.records))
        return NuScenesKeyframes(info, data_root=self.install, indices=range(count), image_size=self.image_size,
                                 sweeps=self.sweeps, object_range=self.object_range if split == "train" else None)

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_keyframes,
                          **loader_options(self.num_workers))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split("train"), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val"), batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def nuscenes_from_options(*, dataset: str, options: dict | None, **common) -> NuScenesDataModule:
    """A ``NuScenesDataModule`` for another datamodule's ``nuscenes`` options (the CMT spec's
    ``data.init_args.nuscenes``) plus the arguments they share; an unknown option is a one-line error."""
    known = [name for name in inspect.signature(NuScenesDataModule).parameters if name not in common and name != "dataset"]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(f"unknown nuscenes option {unknown[0]!r} in data.init_args.nuscenes: choose from {', '.join(known)}")
    return NuScenesDataModule(dataset=dataset, **common, **(options or {}))
