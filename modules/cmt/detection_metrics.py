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

``tp_metrics`` chooses the TP errors that enter NDS: all five give the devkit's
NDS = (5 mAP + sum(1 - min(1, mTP))) / 10; ``("trans_err", "scale_err", "orient_err")`` gives the
synthetic-scene NDS_syn = (5 mAP + 3 terms) / 8 (no velocity or attributes there).
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


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def to_eval_boxes(rows: np.ndarray, sample_ids: Sequence[int], *, class_names: Sequence[str], scored: bool):
    """Rows (sample, class, x, y, z, l, w, h, yaw, vx, vy[, score]) -> devkit ``EvalBoxes``."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    boxes = {str(int(sample)): [] for sample in sample_ids}
    for row in rows:
        x, y, z, length, width, height, yaw, vx, vy = (float(v) for v in row[2:11])
        boxes.setdefault(str(int(row[0])), []).append(DetectionBox(
            sample_token=str(int(row[0])), translation=(x, y, z), size=(width, length, height),
            rotation=yaw_quaternion(yaw), velocity=(vx, vy), ego_translation=(x, y, z),
            detection_name=class_names[int(row[1])], detection_score=float(row[11]) if scored else -1.0))
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


class NuScenesDetectionMetric(Metric):
    """DDP-safe accumulator of boxes scored with ``detection_scores`` (see the module docstring)."""

    full_state_update = False

    def __init__(self, *, class_names: Sequence[str], tp_metrics: Sequence[str] = ("trans_err", "scale_err", "orient_err"),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.class_names = tuple(class_names)
        self.tp_metrics = tuple(tp_metrics)
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("ground_truth", default=[], dist_reduce_fx="cat")
        self.add_state("samples", default=[], dist_reduce_fx="cat")

    def update(self, predictions: torch.Tensor, ground_truth: torch.Tensor, samples: torch.Tensor) -> None:
        """``predictions`` [K, 12] and ``ground_truth`` [M, 11] rows, ``samples`` [B] ids of the batch."""
        self.predictions.append(predictions.detach().double().reshape(-1, 12))
        self.ground_truth.append(ground_truth.detach().double().reshape(-1, 11))
        self.samples.append(samples.detach().double().reshape(-1))

    @staticmethod
    def _rows(state, width: int) -> np.ndarray:
        if isinstance(state, torch.Tensor):
            return state.cpu().numpy().reshape(-1, width)
        return torch.cat(state).cpu().numpy().reshape(-1, width) if state else np.zeros((0, width))

    def compute(self) -> dict[str, float]:
        samples = np.unique(self._rows(self.samples, 1)[:, 0]).astype(np.int64)
        return detection_scores(self._rows(self.predictions, 12), self._rows(self.ground_truth, 11), samples.tolist(),
                                class_names=self.class_names, tp_metrics=self.tp_metrics)
