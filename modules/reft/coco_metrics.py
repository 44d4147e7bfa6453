"""COCO mask AP with pycocotools, split into novel-class (nAP) and base-class (bAP) averages.

``split_mask_ap`` runs ``COCOeval(gt, dt, iouType="segm")`` once over every category (IoU
0.50:0.05:0.95, 101-point interpolated precision, maxDets 100, area "all") and averages the per-class
AP ``eval["precision"][:, :, k, 0, -1]`` (entries of -1, i.e. recall levels a class never reaches
with GT absent, ignored) over the novel and the base category ids — the paper spec's nAP / bAP rule.
AP is reported in percent, as the papers do. A class without any ground truth in the evaluated images
is left out of its average (pycocotools marks it -1); an empty class set gives NaN.
``category_ids`` restricts the evaluation to a subset (``params.catIds``): the FSIS setting evaluates
the novel classes only (``category_ids = novel``, no ``base_category_ids``), and then returns AP,
AP50 and nAP over the novel classes and no bAP; detections of other categories are ignored, as
COCOeval ignores them.

``CocoMaskAP`` collects detections per image during a test loop and evaluates once; besides the
AP numbers it returns two diagnostics, ``images_evaluated`` and ``mean_score`` (the mean detection
score), which a DDP run must reproduce exactly. Under DDP each
rank holds the images of its shard; ``compute`` gathers every rank's detections with
``torch.distributed.all_gather_object`` (RLE strings are not tensors, so torchmetrics' ``cat``
reduction does not apply), keeps one copy per image id (a ``DistributedSampler`` pads the last
batches with repeated images) and runs COCOeval on the union, so every rank returns the same numbers
and they equal the single-process ones.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks [N, H, W] -> COCO compressed RLEs with ``counts`` as str (JSON-able)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def per_class_ap(coco_eval) -> dict[int, float]:
    """Category id -> AP (IoU 0.50:0.95, area all, maxDets 100) from an evaluated+accumulated COCOeval;
    NaN for a category without ground truth."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    result = {}
    for index, category in enumerate(coco_eval.params.catIds):
        values = precision[:, :, index]
        values = values[values > -1]
        result[int(category)] = float(values.mean()) if values.size else math.nan
    return result


def _mean(values: Iterable[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return float(np.mean(finite)) if finite else math.nan


def split_mask_ap(gt_coco, detections: list[dict[str, Any]], *, novel_category_ids: Sequence[int],
                  base_category_ids: Sequence[int], image_ids: Sequence[int] | None = None,
                  category_ids: Sequence[int] | None = None) -> dict[str, float]:
    """``{"AP", "nAP", "bAP", "AP50"}`` in percent for ``detections`` (COCO result dicts: image_id,
    category_id (COCO id), segmentation RLE, score) against ``gt_coco`` on ``image_ids`` (default:
    every ground-truth image) and ``category_ids`` (default: every category; AP and AP50 average over
    them). ``bAP`` is left out when ``base_category_ids`` is empty (the FSIS setting)."""
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted(gt_coco.getImgIds() if image_ids is None else image_ids)
    category_ids = sorted(gt_coco.getCatIds() if category_ids is None else category_ids)
    outside = set(novel_category_ids) | set(base_category_ids)
    if not outside <= set(category_ids):
        raise ValueError(f"categories {sorted(outside - set(category_ids))} are averaged but not evaluated")
    with_gt = {category for category in category_ids if gt_coco.getAnnIds(imgIds=image_ids, catIds=[category], iscrowd=None)}
    if not detections:  # loadRes cannot take an empty list: no detection is AP 0 for every class with GT
        per_class = {category: (0.0 if category in with_gt else math.nan) for category in category_ids}
        ap50 = 0.0 if with_gt else math.nan
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            result_coco = gt_coco.loadRes([dict(detection) for detection in detections])  # loadRes edits its input
            evaluator = COCOeval(gt_coco, result_coco, iouType="segm")
            evaluator.params.imgIds = list(image_ids)
            evaluator.params.catIds = category_ids
            evaluator.evaluate()
            evaluator.accumulate()
        per_class = per_class_ap(evaluator)
        at_50 = evaluator.eval["precision"][0, :, :, 0, -1]
        ap50 = float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else math.nan
    scores = {"AP": 100 * _mean(per_class.values()), "AP50": 100 * ap50,
              "nAP": 100 * _mean(per_class[c] for c in novel_category_ids)}
    if len(base_category_ids):
        scores["bAP"] = 100 * _mean(per_class[c] for c in base_category_ids)
    return scores


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CocoMaskAP:
    """Detections gathered over a test loop (and over DDP ranks), evaluated once with ``split_mask_ap``."""

    def __init__(self) -> None:
        self.detections_by_image: dict[int, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        self.detections_by_image = {}

    def update(self, image_id: int, detections: list[dict[str, Any]]) -> None:
        """All detections of one image (an image with none still counts as evaluated)."""
        self.detections_by_image[int(image_id)] = detections

    def gathered(self) -> dict[int, list[dict[str, Any]]]:
        if not _distributed():
            return dict(self.detections_by_image)
        shards: list[dict[int, list[dict[str, Any]]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, self.detections_by_image)
        merged: dict[int, list[dict[str, Any]]] = {}
        for shard in shards:
            for image_id, detections in (shard or {}).items():
                merged.setdefault(image_id, detections)  # padded repeats of an image are dropped
        return merged

    def compute(self, gt_coco, *, novel_category_ids: Sequence[int], base_category_ids: Sequence[int],
                category_ids: Sequence[int] | None = None) -> dict[str, float]:
        by_image = self.gathered()
        detections = [detection for image_id in sorted(by_image) for detection in by_image[image_id]]
        scores = split_mask_ap(gt_coco, detections, novel_category_ids=novel_category_ids,
                               base_category_ids=base_category_ids, image_ids=sorted(by_image),
                               category_ids=category_ids)
        # diagnostics of the evaluated set (no "better"): equal under DDP and in one process
        scores["images_evaluated"] = float(len(by_image))
        scores["mean_score"] = float(np.mean([d["score"] for d in detections])) if detections else math.nan
        return scores


def tensor_masks_to_numpy(masks: torch.Tensor) -> np.ndarray:
    return masks.detach().to("cpu", torch.uint8).numpy()
