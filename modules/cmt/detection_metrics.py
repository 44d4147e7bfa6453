"""nuScenes-style 3D detection metrics (mAP over centre-distance thresholds, TP errors, NDS).

The matching, the 101-point interpolated AP and the TP errors are the nuscenes-devkit's own
(``nuscenes.eval.detection.algo.accumulate / calc_ap / calc_tp``), fed with our boxes as in-memory
``EvalBoxes`` of ``DetectionBox`` (no NuScenes database is needed). Hand-written here are only the
parts the devkit does inside ``DetectionEval`` (which needs a database): the loop over classes and
thresholds, the undefined TP errors (cone: orientation, velocity, attribute; barrier: velocity,
attribute) and the NDS aggregation; ``tests/modules/test_cmt.py`` checks them against the devkit's
``DetectionMetrics``.

``NuScenesDetectionMetric`` is a torchmetrics ``Metric`` whose states are lists of rows concatenated
across DDP ranks (``dist_reduce_fx="cat"``), so ``compute`` scores the whole gathered set: the value
is the same for any world size. Rows: predictions (sample, class, x, y, z, l, w, h, yaw, vx, vy,
score) and ground truth (the same without score); sample ids must be unique across the evaluated set
(the datamodule's scene index), and samples without any box are still scored (they are listed).

``config`` picks the evaluation:

* ``"synthetic"`` (default; the synthetic scenes): thresholds 0.5/1/2/4 m, no class ranges, and
  ``tp_metrics`` choose the TP errors that enter NDS: ``("trans_err", "scale_err", "orient_err")``
  gives NDS_syn = (5 mAP + 3 terms) / 8 (no velocity or attributes there); all five give the
  devkit's NDS = (5 mAP + sum(1 - min(1, mTP))) / 10.
* ``"detection_cvpr_2019"`` (nuScenes): the devkit's official config (``config_factory``): its ten
  classes, class ranges (50 / 40 / 30 m), thresholds, min recall/precision, at most 500 boxes per
  sample, all five TP errors; mAP and NDS are the devkit's ``DetectionMetrics`` (``mean_ap``,
  ``tp_errors``, ``nd_score``) filled as ``DetectionEval.evaluate`` fills them. What
  ``DetectionEval`` would read from the nuScenes database is taken from the rows instead, with
  these differences: (1) the class range is measured from the LiDAR origin (boxes are in the LiDAR
  frame; nuScenes' ego origin is 0.94 m behind it); (2) GT boxes without LiDAR + radar points are
  dropped by the datamodule (the same valid flag the devkit uses); bicycles / motorcycles in bike
  racks are not removed (that needs the ``static_object.bicycle_rack`` annotations of the nuScenes
  tables); (3) GT attributes come from the rows (12th column; -1 = unknown, which the devkit's
  ``attr_acc`` ignores, as it does for the 0.4 % of nuScenes annotations without one); predicted
  attributes are mmdetection3d's rule (``predicted_attribute``: moving / stopped by a 0.2 m/s speed
  threshold) unless a 13th column gives them; (4) velocities are compared in the LiDAR frame (AVE
  is a norm of the difference, so the frame does not matter). Samples above 500 boxes keep their
  500 best-scored.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_DISTANCE = 2.0
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
TP_METRIC_NAMES = {"trans_err": "ate", "scale_err": "ase", "orient_err": "aoe", "vel_err": "ave", "attr_err": "aae"}
UNDEFINED_TP = {"traffic_cone": ("attr_err", "vel_err", "orient_err"), "barrier": ("attr_err", "vel_err")}


OFFICIAL_CONFIG = "detection_cvpr_2019"
CONFIGS = ("synthetic", OFFICIAL_CONFIG)
# mmdetection3d's attribute indices (datamodules/nuscenes/infos.py ATTRIBUTE_NAMES); -1 = unknown / none.
ATTRIBUTE_NAMES = ("cycle.with_rider", "cycle.without_rider", "pedestrian.moving", "pedestrian.standing",
                   "pedestrian.sitting_lying_down", "vehicle.moving", "vehicle.parked", "vehicle.stopped")
DEFAULT_ATTRIBUTE = {"car": "vehicle.parked", "pedestrian": "pedestrian.moving", "trailer": "vehicle.parked",
                     "truck": "vehicle.parked", "bus": "vehicle.moving", "motorcycle": "cycle.without_rider",
                     "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider", "barrier": "",
                     "traffic_cone": ""}
GT_COLUMNS, PREDICTION_COLUMNS = 12, 13  # + attribute index (ground truth) / + score, attribute (predictions)


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def predicted_attribute(name: str, velocity: tuple[float, float]) -> str:
    """mmdetection3d's ``NuScenesDataset._format_bbox`` attribute for a detection without one."""
    if math.hypot(*velocity) > 0.2:
        if name in ("car", "construction_vehicle", "bus", "truck", "trailer"):
            return "vehicle.moving"
        return "cycle.with_rider" if name in ("bicycle", "motorcycle") else DEFAULT_ATTRIBUTE.get(name, "")
    if name == "pedestrian":
        return "pedestrian.standing"
    return "vehicle.stopped" if name == "bus" else DEFAULT_ATTRIBUTE.get(name, "")


def _attribute(row: np.ndarray, *, column: int, name: str, velocity: tuple[float, float], scored: bool) -> str:
    index = int(row[column]) if len(row) > column else -1
    if 0 <= index < len(ATTRIBUTE_NAMES):
        return ATTRIBUTE_NAMES[index]
    return predicted_attribute(name, velocity) if scored else ""


def to_eval_boxes(rows: np.ndarray, sample_ids: Sequence[int], *, class_names: Sequence[str], scored: bool,
                  attributes: bool = False):
    """Rows (sample, class, x, y, z, l, w, h, yaw, vx, vy[, score][, attribute]) -> devkit ``EvalBoxes``;
    ``attributes``: fill ``attribute_name`` (see the module docstring), else leave it empty."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    boxes = {str(int(sample)): [] for sample in sample_ids}
    for row in rows:
        x, y, z, length, width, height, yaw, vx, vy = (float(v) for v in row[2:11])
        name = class_names[int(row[1])]
        attribute = _attribute(row, column=12 if scored else 11, name=name, velocity=(vx, vy),
                               scored=scored) if attributes else ""
        boxes.setdefault(str(int(row[0])), []).append(DetectionBox(
            sample_token=str(int(row[0])), translation=(x, y, z), size=(width, length, height),
            rotation=yaw_quaternion(yaw), velocity=(vx, vy), ego_translation=(x, y, z),
            detection_name=name, detection_score=float(row[11]) if scored else -1.0, attribute_name=attribute))
    eval_boxes = EvalBoxes()
    for token, items in boxes.items():
        eval_boxes.add_boxes(token, items)
    return eval_boxes


def nd_score(mean_ap: float, tp_errors: dict[str, float]) -> float:
    """(5 mAP + sum over TP errors of (1 - min(1, e))) / (5 + number of TP errors); NaN errors count as 1."""
    terms = [1.0 - min(1.0, value) if np.isfinite(value) else 0.0 for value in tp_errors.values()]
    return float((5.0 * mean_ap + sum(terms)) / (5.0 + len(terms)))


def detection_scores(prediction_rows: np.ndarray, ground_truth_rows: np.ndarray, sample_ids: Sequence[int], *,
                     class_names: Sequence[str], tp_metrics: Sequence[str] = tuple(TP_METRIC_NAMES),
                     distance_thresholds: Sequence[float] = DISTANCE_THRESHOLDS) -> dict[str, float]:
    """mAP, per-class AP, the class-mean TP errors, NDS and the number of scored samples (devkit definitions)."""
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp

    predictions = to_eval_boxes(prediction_rows, sample_ids, class_names=class_names, scored=True)
    ground_truth = to_eval_boxes(ground_truth_rows, sample_ids, class_names=class_names, scored=False)
    scores: dict[str, float] = {}
    class_aps, class_tps = [], {metric: [] for metric in tp_metrics}
    for name in class_names:
        data = {threshold: accumulate(ground_truth, predictions, name, center_distance, threshold)
                for threshold in distance_thresholds}
        aps = [calc_ap(data[threshold], MIN_RECALL, MIN_PRECISION) for threshold in distance_thresholds]
        scores[f"ap_{name}"] = float(np.mean(aps))
        class_aps.append(scores[f"ap_{name}"])
        for metric in tp_metrics:
            undefined = metric in UNDEFINED_TP.get(name, ())
            class_tps[metric].append(np.nan if undefined else calc_tp(data[TP_DISTANCE], MIN_RECALL, metric))
    scores["map"] = float(np.mean(class_aps))
    tp_errors = {}
    for metric in tp_metrics:
        values = np.array(class_tps[metric], dtype=np.float64)
        tp_errors[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        scores[TP_METRIC_NAMES[metric]] = tp_errors[metric]
    scores["nds"] = nd_score(scores["map"], tp_errors)
    scores["scenes"] = float(len(set(int(sample) for sample in sample_ids)))
    return scores


def _within_class_range(rows: np.ndarray, class_names: Sequence[str], class_range: dict[str, float]) -> np.ndarray:
    limits = np.array([class_range[name] for name in class_names])
    return np.hypot(rows[:, 2], rows[:, 3]) < limits[rows[:, 1].astype(int)] if len(rows) else np.zeros(0, dtype=bool)


def _best_per_sample(rows: np.ndarray, limit: int) -> np.ndarray:
    """Each sample's ``limit`` best-scored prediction rows (the devkit refuses more)."""
    if not len(rows):
        return rows
    order = np.lexsort((-rows[:, 11], rows[:, 0]))
    rows = rows[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows[:, 0], rows[:, 0], side="left")
    return rows[rank < limit]


def official_detection_scores(prediction_rows: np.ndarray, ground_truth_rows: np.ndarray, sample_ids: Sequence[int], *,
                              class_names: Sequence[str]) -> dict[str, float]:
    """The devkit's ``detection_cvpr_2019`` mAP, TP errors and NDS (see the module docstring)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.constants import TP_METRICS
    from nuscenes.eval.detection.data_classes import DetectionMetrics

    config = config_factory(OFFICIAL_CONFIG)
    if set(class_names) != set(config.class_names):
        raise ValueError(f"{OFFICIAL_CONFIG} scores the ten nuScenes detection classes, not {tuple(class_names)}")
    prediction_rows = prediction_rows[_within_class_range(prediction_rows, class_names, config.class_range)]
    ground_truth_rows = ground_truth_rows[_within_class_range(ground_truth_rows, class_names, config.class_range)]
    prediction_rows = _best_per_sample(prediction_rows, config.max_boxes_per_sample)
    predictions = to_eval_boxes(prediction_rows, sample_ids, class_names=class_names, scored=True, attributes=True)
    ground_truth = to_eval_boxes(ground_truth_rows, sample_ids, class_names=class_names, scored=False, attributes=True)
    metrics = DetectionMetrics(config)
    scores: dict[str, float] = {}
    for name in config.class_names:  # DetectionEval.evaluate, on in-memory boxes
        data = {threshold: accumulate(ground_truth, predictions, name, center_distance, threshold)
                for threshold in config.dist_ths}
        for threshold in config.dist_ths:
            metrics.add_label_ap(name, threshold, calc_ap(data[threshold], config.min_recall, config.min_precision))
        for metric in TP_METRICS:
            undefined = metric in UNDEFINED_TP.get(name, ())
            metrics.add_label_tp(name, metric, np.nan if undefined else
                                 calc_tp(data[config.dist_th_tp], config.min_recall, metric))
        scores[f"ap_{name}"] = float(np.mean([metrics.get_label_ap(name, threshold) for threshold in config.dist_ths]))
    scores["map"] = float(metrics.mean_ap)
    for metric, value in metrics.tp_errors.items():
        scores[TP_METRIC_NAMES[metric]] = float(value)
    scores["nds"] = float(metrics.nd_score)
    scores["scenes"] = float(len(set(int(sample) for sample in sample_ids)))
    return scores


class NuScenesDetectionMetric(Metric):
    """DDP-safe accumulator of boxes scored with ``detection_scores`` (see the module docstring)."""

    full_state_update = False

    def __init__(self, *, class_names: Sequence[str], tp_metrics: Sequence[str] = ("trans_err", "scale_err", "orient_err"),
                 config: str = "synthetic", **kwargs) -> None:
        super().__init__(**kwargs)
        if config not in CONFIGS:
            raise ValueError(f"eval config must be one of {CONFIGS}, not {config!r}")
        self.class_names = tuple(class_names)
        self.tp_metrics = tuple(tp_metrics)
        self.config = config
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("ground_truth", default=[], dist_reduce_fx="cat")
        self.add_state("samples", default=[], dist_reduce_fx="cat")

    @staticmethod
    def _padded(rows: torch.Tensor, width: int) -> torch.Tensor:
        """Rows widened to ``width`` columns with -1 (no attribute given)."""
        rows = rows.detach().double()
        rows = rows if rows.dim() == 2 else rows.reshape(-1, width)
        return torch.cat([rows, rows.new_full((len(rows), width - rows.shape[1]), -1.0)], dim=1)

    def update(self, predictions: torch.Tensor, ground_truth: torch.Tensor, samples: torch.Tensor) -> None:
        """``predictions`` [K, 12 or 13] and ``ground_truth`` [M, 11 or 12] rows (the optional last
        column: attribute index), ``samples`` [B] ids of the batch."""
        self.predictions.append(self._padded(predictions, PREDICTION_COLUMNS))
        self.ground_truth.append(self._padded(ground_truth, GT_COLUMNS))
        self.samples.append(samples.detach().double().reshape(-1))

    @staticmethod
    def _rows(state, width: int) -> np.ndarray:
        if isinstance(state, torch.Tensor):
            return state.cpu().numpy().reshape(-1, width)
        return torch.cat(state).cpu().numpy().reshape(-1, width) if state else np.zeros((0, width))

    def compute(self) -> dict[str, float]:
        samples = np.unique(self._rows(self.samples, 1)[:, 0]).astype(np.int64)
        predictions = self._rows(self.predictions, PREDICTION_COLUMNS)
        ground_truth = self._rows(self.ground_truth, GT_COLUMNS)
        if self.config == OFFICIAL_CONFIG:
            return official_detection_scores(predictions, ground_truth, samples.tolist(), class_names=self.class_names)
        return detection_scores(predictions[:, :12], ground_truth[:, :11], samples.tolist(),
                                class_names=self.class_names, tp_metrics=self.tp_metrics)
