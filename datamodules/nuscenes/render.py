"""A PNG of one keyframe: the six camera images with the projected 3D box edges."""

from __future__ import annotations

from pathlib import Path

from datamodules.nuscenes.geometry import box_corners, project_to_image
from datamodules.nuscenes.infos import CAMERA_NAMES, NuScenesKeyframe


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
