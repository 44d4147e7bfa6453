"""The CMT leaderboard visual: one scene's bird's-eye view with LiDAR points, GT and predicted boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

SCORE_THRESHOLD = 0.3


def bev_outline(box: np.ndarray) -> np.ndarray:
    """The 5 closed-loop BEV corners of (x, y, z, l, w, h, yaw, ...)."""
    half_l, half_w, yaw = box[3] / 2, box[4] / 2, box[6]
    local = np.array([[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w], [half_l, half_w]])
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    return local @ rotation.T + box[:2]


def draw_bev(scene: dict, path: str | Path, *, class_names: Sequence[str], point_cloud_range: Sequence[float]) -> Path:
    """``scene``: points [N, 4], gt rows (sample, class, box 9), pred rows (class, box 9, score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 6))
    points = scene["points"]
    ground = points[:, 2] < -1.7  # returns from the ground plane (z = -1.8) light, object returns dark
    axis.scatter(points[ground, 0], points[ground, 1], s=0.3, c="0.75")
    axis.scatter(points[~ground, 0], points[~ground, 1], s=1.0, c="0.2")
    for row in scene["gt"]:
        outline = bev_outline(row[2:])
        axis.plot(outline[:, 0], outline[:, 1], color="tab:green", linewidth=1.5)
    predictions = scene["pred"][np.argsort(-scene["pred"][:, -1])]
    shown = predictions[predictions[:, -1] >= SCORE_THRESHOLD]
    rule = f"score >= {SCORE_THRESHOLD}"
    if len(shown) == 0:  # an undertrained model: show its best guesses rather than an empty plot
        shown, rule = predictions[:max(1, len(scene["gt"]))], f"top {max(1, len(scene['gt']))} (none >= {SCORE_THRESHOLD})"
    for row in shown:
        outline = bev_outline(row[1:-1])
        axis.plot(outline[:, 0], outline[:, 1], color="tab:red", linewidth=1.0, linestyle="--")
        axis.text(row[1], row[2], f"{class_names[int(row[0])][:3]} {row[-1]:.2f}", fontsize=6, color="tab:red")
    axis.set_xlim(point_cloud_range[0], point_cloud_range[3])
    axis.set_ylim(point_cloud_range[1], point_cloud_range[4])
    axis.set_aspect("equal")
    dropped = {"points": ", LiDAR removed", "images": ", cameras removed"}.get(scene.get("drop"), "")
    axis.set_title(f"BEV: GT (green) vs predictions, {rule} (red){dropped}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
