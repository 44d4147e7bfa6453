"""nuScenes keyframes in the mmdetection3d info format, and the box / camera geometry CMT needs.

``read_info_file(path)`` reads an mmdetection3d info pickle in either layout:

* **info v1.1** (mmdet3d >= 1.1, ``{'metainfo', 'data_list'}``; the layout of
  ``../shared/data/nuscenes_one_sample/n015-2018-07-24-11-22-45+0800.pkl``): per sample
  ``lidar_points.lidar_path``, per camera ``images[CAM].img_path`` / ``cam2img`` (3x3) /
  ``lidar2cam`` (4x4), and ``instances`` with ``bbox_3d = [x, y, z_centre, dx, dy, dz, yaw]`` in the
  LiDAR frame, ``bbox_label_3d`` (index into ``metainfo.categories``; -1 = ignored), ``velocity``,
  ``num_lidar_pts``;
* **legacy** (``tools/create_data.py`` of mmdet3d 1.0 / the CMT repo, ``{'infos', 'metadata'}``):
  ``lidar_path``, ``cams[CAM].{data_path, cam_intrinsic, sensor2lidar_rotation,
  sensor2lidar_translation}``, ``gt_boxes`` (N x 7, z = box centre), ``gt_names``, ``gt_velocity``,
  ``num_lidar_pts``. Here ``lidar2cam = [[R, -R t], [0, 1]]`` with ``R = inv(sensor2lidar_rotation)``,
  ``t = sensor2lidar_translation`` (the paper spec's recipe).

Both become ``NuScenesKeyframe`` objects whose boxes use one convention: ``boxes`` (N x 7) =
(x, y, z of the box *centre*, l, w, h, yaw) in the LiDAR frame, ``names`` the detection class
names. Relative file names are looked up beside the pickle (the demo layout) and then under
``<data_root>`` (the ``data/nuscenes/samples/...`` layout of a full install).

``lidar2img = K4x4 @ lidar2cam`` with ``K4x4`` the 3x3 intrinsics padded into eye(4); the same
matrix maps the synthetic scenes' points into their images (``datamodules/synthetic_scenes.py``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUSCENES_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                    "pedestrian", "traffic_cone", "barrier")
CAMERA_NAMES = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
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
class NuScenesKeyframe:
    token: str
    lidar_path: Path
    cameras: dict[str, CameraView]
    boxes: np.ndarray  # N x 7: x, y, z_centre, l, w, h, yaw (LiDAR frame)
    names: list[str]
    velocities: np.ndarray  # N x 2
    num_lidar_points: np.ndarray  # N
    extra: dict = field(default_factory=dict)

    def load_points(self) -> np.ndarray:
        """The sweep as float32 N x 5 (x, y, z, intensity, ring)."""
        return read_lidar_points(self.lidar_path)

    def load_image(self, camera: str) -> np.ndarray:
        """One camera image as uint8 H x W x 3 (RGB)."""
        import cv2

        image = cv2.imread(str(self.cameras[camera].image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode {self.cameras[camera].image_path}: not a readable JPEG; "
                             "re-copy the file (see the dataset's SOURCE.md)")
        return image[:, :, ::-1].copy()


def lidar_to_image_matrix(intrinsic: np.ndarray, lidar2cam: np.ndarray) -> np.ndarray:
    """4 x 4 ``K4x4 @ lidar2cam`` (maps homogeneous LiDAR points to (u*d, v*d, d, 1))."""
    padded = np.eye(4)
    padded[:3, :3] = np.asarray(intrinsic, dtype=np.float64)
    return padded @ np.asarray(lidar2cam, dtype=np.float64)


def project_to_image(points: np.ndarray, lidar2img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N x 2) and depths (N) of LiDAR-frame points (N x 3)."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ lidar2img.T
    depth = homogeneous[:, 2]
    return homogeneous[:, :2] / np.maximum(depth[:, None], 1e-6), depth


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """The 8 corners (N x 8 x 3) of (x, y, z_centre, l, w, h, yaw) boxes; l along the heading."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64) / 2
    local = signs[None] * boxes[:, None, 3:6]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def read_lidar_points(path: Path, *, columns: int = 5) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiDAR sweep {path} not found: copy the sample's .pcd.bin beside the info pickle "
                                "or under <data_root>/samples/LIDAR_TOP/")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size == 0 or raw.size % columns:
        raise ValueError(f"{path} holds {raw.size} float32 values, not a multiple of {columns}: a corrupt "
                         "or truncated sweep; re-copy it")
    return raw.reshape(-1, columns)


def _resolve(name: str, *, folder: Path, data_root: Path | None) -> Path:
    candidates = [folder / Path(name).name, folder / name]
    if data_root is not None:
        candidates += [data_root / name, data_root / "samples" / Path(name).parent.name / Path(name).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]  # missing: reported with this path when the file is read


def _keyframe_v11(sample: dict, *, categories: dict[str, int], folder: Path,
                  data_root: Path | None) -> NuScenesKeyframe:
    index_to_name = {index: name for name, index in categories.items()}
    instances = [item for item in sample.get("instances", []) if int(item["bbox_label_3d"]) >= 0]
    boxes = np.array([item["bbox_3d"] for item in instances], dtype=np.float64).reshape(-1, 7)
    # z is the box centre here too: mmdet3d 1.x's NuScenesDataset reads bbox_3d with origin (0.5, 0.5, 0.5),
    # and the pickle's cam_instances.center_2d are these centres projected (tests/datamodules checks it).
    cameras = {name: CameraView(name=name, image_path=_resolve(view["img_path"], folder=folder, data_root=data_root),
                                intrinsic=np.array(view["cam2img"], dtype=np.float64)[:3, :3],
                                lidar2cam=np.array(view["lidar2cam"], dtype=np.float64))
               for name, view in sample["images"].items() if view.get("img_path")}
    return NuScenesKeyframe(
        token=str(sample["token"]),
        lidar_path=_resolve(sample["lidar_points"]["lidar_path"], folder=folder, data_root=data_root),
        cameras=cameras, boxes=boxes, names=[index_to_name[int(item["bbox_label_3d"])] for item in instances],
        velocities=np.array([item.get("velocity", [0.0, 0.0])[:2] for item in instances], dtype=np.float64).reshape(-1, 2),
        num_lidar_points=np.array([int(item.get("num_lidar_pts", -1)) for item in instances]),
        extra={"ignored_instances": len(sample.get("instances", [])) - len(instances),
               "cam_instances": sample.get("cam_instances", {})})


def _keyframe_legacy(info: dict, *, folder: Path, data_root: Path | None) -> NuScenesKeyframe:
    cameras = {}
    for name, view in info["cams"].items():
        rotation = np.linalg.inv(np.asarray(view["sensor2lidar_rotation"], dtype=np.float64))
        lidar2cam = np.eye(4)
        lidar2cam[:3, :3] = rotation
        lidar2cam[:3, 3] = -rotation @ np.asarray(view["sensor2lidar_translation"], dtype=np.float64)
        cameras[name] = CameraView(name=name, image_path=_resolve(view["data_path"], folder=folder, data_root=data_root),
                                   intrinsic=np.asarray(view["cam_intrinsic"], dtype=np.float64), lidar2cam=lidar2cam)
    names = [str(name) for name in info["gt_names"]]
    keep = np.array([name in NUSCENES_CLASSES for name in names], dtype=bool)
    return NuScenesKeyframe(
        token=str(info["token"]), lidar_path=_resolve(info["lidar_path"], folder=folder, data_root=data_root),
        cameras=cameras, boxes=np.asarray(info["gt_boxes"], dtype=np.float64).reshape(-1, 7)[keep],
        names=[name for name, kept in zip(names, keep) if kept],
        velocities=np.asarray(info.get("gt_velocity", np.zeros((len(names), 2))), dtype=np.float64).reshape(-1, 2)[keep],
        num_lidar_points=np.asarray(info.get("num_lidar_pts", -np.ones(len(names))))[keep],
        extra={"ignored_instances": int((~keep).sum())})


def read_info_file(path: str | Path, *, data_root: str | Path | None = None) -> list[NuScenesKeyframe]:
    """Every keyframe of an mmdetection3d info pickle (v1.1 or legacy layout, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nuScenes info pickle {path} not found: build it with mmdet3d's "
                                "tools/create_data.py (or use ../shared/data/nuscenes_one_sample)")
    try:
        with path.open("rb") as handle:
            content = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{path} is not a readable info pickle ({type(error).__name__}); re-create it") from error
    root = Path(data_root) if data_root is not None else None
    if isinstance(content, dict) and "data_list" in content:
        categories = content.get("metainfo", {}).get("categories") or {name: i for i, name in enumerate(NUSCENES_CLASSES)}
        return [_keyframe_v11(sample, categories=categories, folder=path.parent, data_root=root)
                for sample in content["data_list"]]
    if isinstance(content, dict) and "infos" in content:
        return [_keyframe_legacy(info, folder=path.parent, data_root=root) for info in content["infos"]]
    raise ValueError(f"{path} has neither 'data_list' (info v1.1) nor 'infos' (legacy): not an mmdet3d info file")


def read_one_sample(data_root: str | Path) -> NuScenesKeyframe:
    """The shared real keyframe (``<data_root>/nuscenes_one_sample/*.pkl``, or ``data_root`` itself)."""
    root = Path(data_root)
    folder = root / ONE_SAMPLE_FOLDER if (root / ONE_SAMPLE_FOLDER).is_dir() else root
    pickles = sorted(folder.glob("*.pkl"))
    if not pickles:
        raise FileNotFoundError(f"no info pickle in {folder}: pass --data-dir to the folder holding "
                                f"{ONE_SAMPLE_FOLDER}/ (see its SOURCE.md)")
    return read_info_file(pickles[0], data_root=root)[0]


def render_keyframe(keyframe: NuScenesKeyframe, path: str | Path, *, cameras: tuple[str, ...] = CAMERA_NAMES,
                    scale: float = 0.25) -> Path:
    """A PNG with every camera image (resized by ``scale``) and the projected box edges."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    corners = box_corners(keyframe.boxes)
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    figure, axes = plt.subplots(2, 3, figsize=(15, 6))
    for axis, camera in zip(axes.ravel(), cameras):
        image = keyframe.load_image(camera)
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        axis.imshow(image)
        view = keyframe.cameras[camera]
        segments = []
        for box_corners_3d in corners:
            pixels, depth = project_to_image(box_corners_3d, view.lidar2img)
            if (depth > 0.5).all():
                segments += [pixels[[start, end]] * scale for start, end in edges]
        axis.add_collection(LineCollection(segments, colors="lime", linewidths=0.6))
        axis.set_xlim(0, image.shape[1])
        axis.set_ylim(image.shape[0], 0)
        axis.set_title(camera, fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
