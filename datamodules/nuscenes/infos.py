"""nuScenes keyframes in the mmdetection3d info format.

``load_info_file(path)`` reads an mmdetection3d info pickle in either layout:

* **info v1.1** (mmdet3d >= 1.1, ``{'metainfo', 'data_list'}``; the layout of
  ``../shared/data/nuscenes_one_sample/n015-2018-07-24-11-22-45+0800.pkl``): per sample
  ``lidar_points.lidar_path``, ``lidar_sweeps[k].lidar_points.{lidar_path, lidar2sensor}`` +
  ``timestamp`` (s), per camera ``images[CAM].img_path`` / ``cam2img`` (3x3) / ``lidar2cam`` (4x4),
  and ``instances`` with ``bbox_3d = [x, y, z_centre, dx, dy, dz, yaw]`` in the LiDAR frame,
  ``bbox_label_3d`` (index into ``metainfo.categories``; -1 = ignored), ``velocity``,
  ``bbox_3d_isvalid``, ``num_lidar_pts``; ``cam_instances[CAM]`` carry the nuScenes attribute
  (``attr_label``) of the boxes seen by that camera;
* **legacy** (``tools/create_data.py`` of mmdet3d 1.0 / the CMT repo, ``{'infos', 'metadata'}``):
  ``lidar_path``, ``sweeps[k].{data_path, sensor2lidar_rotation, sensor2lidar_translation,
  timestamp (us)}``, ``cams[CAM].{data_path, cam_intrinsic, sensor2lidar_rotation,
  sensor2lidar_translation}``, ``gt_boxes`` (N x 7, z = box centre), ``gt_names``, ``gt_velocity``,
  ``valid_flag``, ``num_lidar_pts``. Here ``lidar2cam = [[R, -R t], [0, 1]]`` with
  ``R = inv(sensor2lidar_rotation)``, ``t = sensor2lidar_translation`` (the paper spec's recipe).

Each record becomes a ``NuScenesKeyframe`` (``keyframe_from_record``, done per item in the
datamodule's workers) whose boxes use one convention: ``boxes`` (N x 7) = (x, y, z of the box
*centre*, l, w, h, yaw) in the LiDAR frame, ``names`` the detection class names, ``valid`` the
mmdet3d valid flag (LiDAR + radar points > 0), ``attributes`` the index into
``ATTRIBUTE_NAMES`` (-1 unknown: legacy infos carry none; v1.1 only for boxes a camera sees).
Relative file names are looked up beside the pickle (the demo layout), then under
``<data_root>/samples/<CHANNEL>/`` or ``<data_root>/sweeps/<CHANNEL>/`` (a nuScenes install),
then as given under ``<data_root>``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.nuscenes.geometry import lidar_to_image_matrix, project_to_image

NUSCENES_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                    "pedestrian", "traffic_cone", "barrier")
CAMERA_NAMES = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
# mmdetection3d's attribute indices (``attr_label``); "None" (cone, barrier) = no attribute.
ATTRIBUTE_NAMES = ("cycle.with_rider", "cycle.without_rider", "pedestrian.moving", "pedestrian.standing",
                   "pedestrian.sitting_lying_down", "vehicle.moving", "vehicle.parked", "vehicle.stopped")
ONE_SAMPLE_FOLDER = "nuscenes_one_sample"


@dataclass
class CameraView:
    name: str
    image_path: Path
    intrinsic: np.ndarray  # 3 x 3
    lidar2cam: np.ndarray  # 4 x 4

    @property
    def lidar2img(self) -> np.ndarray:
        return lidar_to_image_matrix(self.intrinsic, self.lidar2cam)


@dataclass
class LidarSweep:
    path: Path
    sensor2lidar: np.ndarray  # 4 x 4: sweep sensor frame -> keyframe LiDAR frame
    time_lag: float  # seconds before the keyframe


@dataclass
class NuScenesKeyframe:
    token: str
    lidar_path: Path
    cameras: dict[str, CameraView]
    boxes: np.ndarray  # N x 7: x, y, z_centre, l, w, h, yaw (LiDAR frame)
    names: list[str]
    velocities: np.ndarray  # N x 2
    num_lidar_points: np.ndarray  # N
    valid: np.ndarray = None  # N bool: LiDAR + radar points > 0 (mmdet3d valid_flag)
    attributes: np.ndarray = None  # N int: index into ATTRIBUTE_NAMES, -1 unknown
    sweeps: list[LidarSweep] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.boxes)
        self.valid = np.ones(count, dtype=bool) if self.valid is None else np.asarray(self.valid, dtype=bool)
        self.attributes = (np.full(count, -1, dtype=np.int64) if self.attributes is None
                           else np.asarray(self.attributes, dtype=np.int64))
        self.velocities = np.nan_to_num(self.velocities)  # mmdet3d: boxes without velocity get (0, 0)

    def load_points(self) -> np.ndarray:
        """The keyframe sweep as float32 N x 5 (x, y, z, intensity, ring)."""
        return read_lidar_points(self.lidar_path)

    def load_image(self, camera: str) -> np.ndarray:
        """One camera image as uint8 H x W x 3 (RGB)."""
        import cv2

        path = self.cameras[camera].image_path
        if not path.is_file():
            raise FileNotFoundError(f"camera image {path} not found: the nuScenes samples/{camera}/ folder is "
                                    "incomplete (download nuScenes from https://www.nuscenes.org/download)")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode {path}: not a readable JPEG; re-copy the file")
        return image[:, :, ::-1].copy()


def read_lidar_points(path: Path, *, columns: int = 5) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiDAR sweep {path} not found: the nuScenes samples/LIDAR_TOP or sweeps/LIDAR_TOP "
                                "folder is incomplete (download nuScenes from https://www.nuscenes.org/download)")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size == 0 or raw.size % columns:
        raise ValueError(f"{path} holds {raw.size} float32 values, not a multiple of {columns}: a corrupt "
                         "or truncated sweep; re-copy it")
    return raw.reshape(-1, columns)


def _resolve(name: str, *, channel: str, folder: Path, data_root: Path | None) -> Path:
    """A sensor file named in an info pickle: beside the pickle, else in the nuScenes install."""
    relative = Path(name)
    candidates = [folder / relative.name, folder / name]
    if data_root is not None:
        # './data/nuscenes/sweeps/LIDAR_TOP/x.bin' -> <root>/sweeps/LIDAR_TOP/x.bin; bare 'x.bin' -> samples/<channel>
        kind = next((part for part in relative.parts if part in ("samples", "sweeps")), "samples")
        candidates = [data_root / kind / channel / relative.name] + candidates + [data_root / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]  # missing: reported with this path when the file is read


def _attributes_from_cam_instances(boxes: np.ndarray, cameras: dict[str, CameraView], cam_instances: dict) -> np.ndarray:
    """v1.1 infos keep attributes only in ``cam_instances`` (per camera, by projected centre): match
    each to the LiDAR box whose centre projects within 1 px and 0.1 m of its ``center_2d`` / ``depth``."""
    attributes = np.full(len(boxes), -1, dtype=np.int64)
    for camera, items in (cam_instances or {}).items():
        if camera not in cameras or not len(boxes):
            continue
        pixels, depth = project_to_image(boxes[:, :3], cameras[camera].lidar2img)
        for item in items:
            label = int(item.get("attr_label", -1))
            if "center_2d" not in item or not 0 <= label < len(ATTRIBUTE_NAMES):
                continue
            distance = np.linalg.norm(pixels - np.asarray(item["center_2d"]), axis=1) + np.where(depth > 0, 0, np.inf)
            nearest = int(np.argmin(distance))
            if distance[nearest] < 1.0 and abs(depth[nearest] - float(item["depth"])) < 0.1:
                attributes[nearest] = label
    return attributes


def _keyframe_v11(sample: dict, *, categories: dict[str, int], folder: Path,
                  data_root: Path | None) -> NuScenesKeyframe:
    index_to_name = {index: name for name, index in categories.items()}
    instances = [item for item in sample.get("instances", []) if int(item["bbox_label_3d"]) >= 0]
    boxes = np.array([item["bbox_3d"] for item in instances], dtype=np.float64).reshape(-1, 7)
    # z is the box centre here too: mmdet3d 1.x's NuScenesDataset reads bbox_3d with origin (0.5, 0.5, 0.5),
    # and the pickle's cam_instances.center_2d are these centres projected (tests/datamodules checks it).
    cameras = {name: CameraView(name=name, image_path=_resolve(view["img_path"], channel=name, folder=folder,
                                                               data_root=data_root),
                                intrinsic=np.array(view["cam2img"], dtype=np.float64)[:3, :3],
                                lidar2cam=np.array(view["lidar2cam"], dtype=np.float64))
               for name, view in sample["images"].items() if view.get("img_path")}
    sweeps = [LidarSweep(path=_resolve(sweep["lidar_points"]["lidar_path"], channel="LIDAR_TOP", folder=folder,
                                       data_root=data_root),
                         sensor2lidar=np.linalg.inv(np.asarray(sweep["lidar_points"]["lidar2sensor"], dtype=np.float64)),
                         time_lag=float(sample["timestamp"]) - float(sweep["timestamp"]))
              for sweep in sample.get("lidar_sweeps", [])]
    return NuScenesKeyframe(
        token=str(sample["token"]),
        lidar_path=_resolve(sample["lidar_points"]["lidar_path"], channel="LIDAR_TOP", folder=folder, data_root=data_root),
        cameras=cameras, boxes=boxes, names=[index_to_name[int(item["bbox_label_3d"])] for item in instances],
        velocities=np.array([item.get("velocity", [0.0, 0.0])[:2] for item in instances], dtype=np.float64).reshape(-1, 2),
        num_lidar_points=np.array([int(item.get("num_lidar_pts", -1)) for item in instances]),
        valid=np.array([bool(item.get("bbox_3d_isvalid", True)) for item in instances], dtype=bool),
        attributes=_attributes_from_cam_instances(boxes, cameras, sample.get("cam_instances", {})),
        sweeps=sweeps,
        extra={"ignored_instances": len(sample.get("instances", [])) - len(instances),
               "cam_instances": sample.get("cam_instances", {})})


def _sensor_to_lidar(rotation, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(rotation, dtype=np.float64)
    matrix[:3, 3] = np.asarray(translation, dtype=np.float64)
    return matrix


def _keyframe_legacy(info: dict, *, folder: Path, data_root: Path | None) -> NuScenesKeyframe:
    cameras = {}
    for name, view in info["cams"].items():
        lidar2cam = np.linalg.inv(_sensor_to_lidar(view["sensor2lidar_rotation"], view["sensor2lidar_translation"]))
        cameras[name] = CameraView(name=name, image_path=_resolve(view["data_path"], channel=name, folder=folder,
                                                                  data_root=data_root),
                                   intrinsic=np.asarray(view["cam_intrinsic"], dtype=np.float64), lidar2cam=lidar2cam)
    names = [str(name) for name in info["gt_names"]]
    keep = np.array([name in NUSCENES_CLASSES for name in names], dtype=bool)
    sweeps = [LidarSweep(path=_resolve(sweep["data_path"], channel="LIDAR_TOP", folder=folder, data_root=data_root),
                         sensor2lidar=_sensor_to_lidar(sweep["sensor2lidar_rotation"], sweep["sensor2lidar_translation"]),
                         time_lag=(float(info["timestamp"]) - float(sweep["timestamp"])) / 1e6)
              for sweep in info.get("sweeps", [])]
    counts = np.asarray(info.get("num_lidar_pts", -np.ones(len(names))))
    valid = np.asarray(info.get("valid_flag", counts != 0), dtype=bool)
    return NuScenesKeyframe(
        token=str(info["token"]), lidar_path=_resolve(info["lidar_path"], channel="LIDAR_TOP", folder=folder,
                                                      data_root=data_root),
        cameras=cameras, boxes=np.asarray(info["gt_boxes"], dtype=np.float64).reshape(-1, 7)[keep],
        names=[name for name, kept in zip(names, keep) if kept],
        velocities=np.asarray(info.get("gt_velocity", np.zeros((len(names), 2))), dtype=np.float64).reshape(-1, 2)[keep],
        num_lidar_points=counts[keep], valid=valid[keep], sweeps=sweeps,
        extra={"ignored_instances": int((~keep).sum())})


@dataclass
class InfoFile:
    """One info pickle's records (raw dicts, parsed per item by ``keyframe``) and its metadata."""

    path: Path
    version: str
    records: list[dict]
    categories: dict[str, int] | None  # v1.1 layout; None = legacy

    def keyframe(self, index: int, *, data_root: str | Path | None = None) -> NuScenesKeyframe:
        root = Path(data_root) if data_root is not None else None
        if self.categories is not None:
            return _keyframe_v11(self.records[index], categories=self.categories, folder=self.path.parent, data_root=root)
        return _keyframe_legacy(self.records[index], folder=self.path.parent, data_root=root)


def load_info_file(path: str | Path) -> InfoFile:
    """The records of an mmdetection3d info pickle (v1.1 or legacy layout, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nuScenes info pickle {path} not found: build it with mmdet3d's "
                                "tools/create_data.py (or use ../shared/data/nuscenes_one_sample)")
    try:
        with path.open("rb") as handle:
            content = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{path} is not a readable info pickle ({type(error).__name__}); re-create it") from error
    if isinstance(content, dict) and "data_list" in content:
        metainfo = content.get("metainfo", {})
        categories = metainfo.get("categories") or {name: i for i, name in enumerate(NUSCENES_CLASSES)}
        return InfoFile(path=path, version=str(metainfo.get("version", "")), records=content["data_list"],
                        categories=categories)
    if isinstance(content, dict) and "infos" in content:
        return InfoFile(path=path, version=str(content.get("metadata", {}).get("version", "")),
                        records=content["infos"], categories=None)
    raise ValueError(f"{path} has neither 'data_list' (info v1.1) nor 'infos' (legacy): not an mmdet3d info file")


def read_info_file(path: str | Path, *, data_root: str | Path | None = None) -> list[NuScenesKeyframe]:
    """Every keyframe of an mmdetection3d info pickle."""
    info = load_info_file(path)
    return [info.keyframe(index, data_root=data_root) for index in range(len(info.records))]


def read_one_sample(data_root: str | Path) -> NuScenesKeyframe:
    """The shared real keyframe (``<data_root>/nuscenes_one_sample/*.pkl``, or ``data_root`` itself)."""
    root = Path(data_root)
    folder = root / ONE_SAMPLE_FOLDER if (root / ONE_SAMPLE_FOLDER).is_dir() else root
    pickles = sorted(folder.glob("*.pkl"))
    if not pickles:
        raise FileNotFoundError(f"no info pickle in {folder}: pass --data-dir to the folder holding "
                                f"{ONE_SAMPLE_FOLDER}/ (see its SOURCE.md)")
    return read_info_file(pickles[0], data_root=root)[0]
