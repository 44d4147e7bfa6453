"""nuScenes for CMT: the mmdetection3d info reader (``infos``), box / camera geometry (``geometry``),
the ``NuScenesDataModule`` (``datamodule``) and a keyframe renderer (``render``)."""

from datamodules.nuscenes.datamodule import (INFO_FILES, NUSCENES_DATASETS, NuScenesDataModule, NuScenesKeyframes,
                                             collate_keyframes, find_info_files, nuscenes_from_options)
from datamodules.nuscenes.geometry import box_corners, lidar_to_image_matrix, project_to_image, resized_intrinsic
from datamodules.nuscenes.infos import (ATTRIBUTE_NAMES, CAMERA_NAMES, NUSCENES_CLASSES, ONE_SAMPLE_FOLDER, CameraView,
                                        InfoFile, LidarSweep, NuScenesKeyframe, load_info_file, read_info_file,
                                        read_lidar_points, read_one_sample)
from datamodules.nuscenes.render import render_keyframe

__all__ = ["ATTRIBUTE_NAMES", "CAMERA_NAMES", "INFO_FILES", "NUSCENES_CLASSES", "NUSCENES_DATASETS", "ONE_SAMPLE_FOLDER",
           "CameraView", "InfoFile", "LidarSweep", "NuScenesDataModule", "NuScenesKeyframe", "NuScenesKeyframes",
           "box_corners", "collate_keyframes", "find_info_files", "lidar_to_image_matrix", "load_info_file",
           "nuscenes_from_options", "project_to_image", "read_info_file", "read_lidar_points", "read_one_sample",
           "render_keyframe", "resized_intrinsic"]
