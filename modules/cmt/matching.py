"""CMT box coding, Hungarian matching, query denoising and losses (official weights).

Box code (10-d, the head's output order): (cx, cy, cz, log l, log w, log h, sin yaw, cos yaw, vx, vy).
The official code compares the head's (center 2, height 1, dim 3, rot 2, vel 2) with the target
layout (cx, cy, log w, log l, cz, log h, ...), so its z-anchored "height" output learns log w and
dim[1] learns cz. Here the quirk is **fixed**: the target layout follows the head's order, so the
z-anchored output learns cz (the code weights keep their positions: 2, 2, then 1s, 0.2 for velocity).

Matching: the official assigner solves each sample of each decoder layer with its own host copy of
the cost matrix; ``match_layers`` builds all L x B cost matrices on the device and copies them once
per step (same assignments, same losses: tests/modules/test_cmt.py compares it with per-sample
matching), and the losses take their avg factors from host counts, so a training step has a fixed,
small number of device syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import sigmoid_focal_loss

CODE_WEIGHTS = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
CLS_WEIGHT, REG_WEIGHT = 2.0, 0.25
BACKGROUND_CLASS_WEIGHT = 0.1
DN_SPLIT = 0.75


def encode_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """(x, y, z, l, w, h, yaw, vx, vy) [..., 9] -> the 10-d box code."""
    return torch.cat([boxes[..., 0:3], boxes[..., 3:6].clamp(min=1e-3).log(), boxes[..., 6:7].sin(),
                      boxes[..., 6:7].cos(), boxes[..., 7:9]], dim=-1)


def decode_boxes(code: torch.Tensor) -> torch.Tensor:
    """The 10-d box code -> (x, y, z, l, w, h, yaw, vx, vy)."""
    return torch.cat([code[..., 0:3], code[..., 3:6].clamp(max=6).exp(), torch.atan2(code[..., 6:7], code[..., 7:8]),
                      code[..., 8:10]], dim=-1)


def class_focal_cost(logits: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """mmdet's FocalLossCost of every query for every class [..., Q, C]:
    a (1-p)^g (-log p) - (1-a) p^g (-log(1-p))."""
    probability = logits.sigmoid()
    negative = -(1 - probability + eps).log() * (1 - FOCAL_ALPHA) * probability.pow(FOCAL_GAMMA)
    positive = -(probability + eps).log() * FOCAL_ALPHA * (1 - probability).pow(FOCAL_GAMMA)
    return positive - negative


def matching_costs(logits: torch.Tensor, box_codes: torch.Tensor, gt_labels: torch.Tensor,
                   gt_codes: torch.Tensor) -> torch.Tensor:
    """Matching cost of N independent problems [N, Q, M]: 2.0 focal + 0.25 weighted L1 over the first 8
    code dims (velocity excluded), from [N, Q, C] logits, [N, Q, 10] codes, padded GT labels [N, M]
    (-1 = pad: their columns are +inf, every real cost is finite) and codes [N, M, 10]. NaN/inf of
    real costs are guarded (issue #83)."""
    weights = box_codes.new_tensor(CODE_WEIGHTS[:8])
    l1 = torch.cdist(box_codes[..., :8] * weights, gt_codes[..., :8] * weights, p=1)
    index = gt_labels.clamp(min=0)[:, None, :].expand(-1, logits.shape[1], -1)
    cost = CLS_WEIGHT * class_focal_cost(logits).gather(2, index) + REG_WEIGHT * l1
    cost = torch.nan_to_num(cost.float(), nan=1e8, posinf=1e8, neginf=-1e8)
    # padding marked in the matrix itself, so one copy to the host carries it
    return cost.masked_fill((gt_labels < 0)[:, None, :], float("inf"))


def solve_assignments(cost: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """scipy's optimal assignment of each problem [N, Q, M] over its GT columns that are not padding
    (+inf): (query indices, GT column indices) per problem."""
    solutions = []
    for problem_cost in cost:
        columns = np.flatnonzero(np.isfinite(problem_cost[0])) if len(problem_cost) else np.zeros(0, dtype=np.int64)
        queries, picked = linear_sum_assignment(problem_cost[:, columns])
        solutions.append((queries, columns[picked]))
    return solutions


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, box_codes: torch.Tensor, gt_labels: torch.Tensor,
                    gt_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and GT indices of the optimal assignment of one sample ([Q, C], [Q, 10], [M], [M, 10])."""
    cost = matching_costs(logits[None], box_codes[None], gt_labels[None], gt_codes[None])
    (queries, targets), = solve_assignments(cost.cpu().numpy())
    return (torch.as_tensor(queries, dtype=torch.long, device=logits.device),
            torch.as_tensor(targets, dtype=torch.long, device=logits.device))


@dataclass(frozen=True)
class Assignment:
    """The matched (sample, query, GT column) index triples of one decoder layer over a batch, on the
    model's device; ``count`` (the number of matches) is a host int, so losses need no device sync."""

    sample: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor

    @property
    def count(self) -> int:
        return self.sample.shape[0]


@torch.no_grad()
def match_layers(logits: torch.Tensor, box_codes: torch.Tensor, gt_labels: torch.Tensor,
                 gt_boxes: torch.Tensor) -> list[Assignment]:
    """Hungarian assignments of every decoder layer and sample ([L, B, Q, C] logits, [L, B, Q, 10]
    codes, padded GT labels [B, M] and boxes [B, M, 9]) with one device-to-host copy of all L x B cost
    matrices and one host-to-device copy of all indices: on a GPU a copy per sample and layer (a
    stream sync each) dominated a small model's step."""
    layers, batch = logits.shape[:2]
    labels = gt_labels.repeat(layers, 1)
    codes = encode_boxes(gt_boxes).repeat(layers, 1, 1)
    cost = matching_costs(logits.flatten(0, 1), box_codes.flatten(0, 1), labels, codes)
    solutions = solve_assignments(cost.cpu().numpy())
    samples = np.arange(layers * batch) % batch
    triples = [np.stack([np.full_like(queries, sample), queries, targets])
               for sample, (queries, targets) in zip(samples, solutions)]
    counts = [sum(triple.shape[1] for triple in triples[layer * batch:(layer + 1) * batch]) for layer in range(layers)]
    indices = torch.as_tensor(np.concatenate(triples, axis=1).astype(np.int64)).to(logits.device, non_blocking=True)
    return [Assignment(*layer_indices) for layer_indices in indices.split(counts, dim=1)]


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, avg_factor: float,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """2.0 x sigmoid focal loss summed over queries and classes / avg_factor; target -1 = background;
    ``weight`` [N] (0/1) leaves rows out without boolean indexing (no device sync)."""
    positive = targets >= 0
    one_hot = torch.nn.functional.one_hot(targets.clamp(min=0), logits.shape[-1]).to(logits.dtype) * positive[:, None]
    loss = sigmoid_focal_loss(logits, one_hot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
    if weight is not None:
        loss = loss * weight[:, None]
    return CLS_WEIGHT * loss.sum() / max(avg_factor, 1.0)


def regression_loss(box_codes: torch.Tensor, target_codes: torch.Tensor, *, avg_factor: float,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """0.25 x sum of code-weighted |pred - target| / avg_factor (rows = matched queries; rows with a
    non-finite target, or weight 0, add nothing)."""
    weights = box_codes.new_tensor(CODE_WEIGHTS)
    keep = torch.isfinite(target_codes).all(dim=-1)
    if weight is not None:
        keep = keep & weight.bool()
    difference = torch.where(keep[:, None], box_codes - target_codes.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    return REG_WEIGHT * (difference.abs() * weights).sum() / max(avg_factor, 1.0)


def matched_losses(logits: torch.Tensor, box_codes: torch.Tensor, gt_labels: torch.Tensor,
                   gt_boxes: torch.Tensor, *, assignment: Assignment | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer's (cls, reg) loss over a batch: [B, Q, C] logits, [B, Q, 10] codes, padded
    GT labels [B, M] (-1 = pad) and boxes [B, M, 9]; ``assignment`` from ``match_layers`` (matched
    here when not given). cls avg factor = N_pos + 0.1 N_neg."""
    if assignment is None:
        assignment, = match_layers(logits.detach()[None], box_codes.detach()[None], gt_labels, gt_boxes)
    targets = torch.full(logits.shape[:2], -1, dtype=torch.long, device=logits.device)
    targets[assignment.sample, assignment.query] = gt_labels[assignment.sample, assignment.target]
    positives = assignment.count
    negatives = targets.numel() - positives
    cls = classification_loss(logits.flatten(0, 1), targets.flatten(), avg_factor=positives + BACKGROUND_CLASS_WEIGHT * negatives)
    wanted = encode_boxes(gt_boxes[assignment.sample, assignment.target])
    reg = regression_loss(box_codes[assignment.sample, assignment.query], wanted, avg_factor=positives)
    return cls, reg


def denoising_queries(gt_labels: torch.Tensor, gt_boxes: torch.Tensor, *, groups: int, num_queries: int,
                      point_cloud_range: torch.Tensor, noise_scale: float = 1.0) -> dict | None:
    """DN-DETR queries: ``G = min(groups, num_queries // max #GT)`` noised copies of every GT.

    Centres are shifted by U(-1, 1) x size/2 x noise_scale; a copy whose noise vector (in units of
    the half size) has L2 norm > 0.75 is relabelled background. Returns normalised reference points
    [B, pad, 3], targets (labels [B, pad] with -1 = background, boxes [B, pad, 9], valid [B, pad])
    and the self-attention mask [pad + Q, pad + Q] (True = blocked), or None when G = 0."""
    # one host copy: the GT count of every sample gives both the group size and the DN avg factor
    valid_gt = (gt_labels >= 0).cpu()
    max_gt = int(valid_gt.sum(dim=1).max()) if gt_labels.numel() else 0
    if groups <= 0 or max_gt == 0:
        return None
    groups = min(groups, num_queries // max_gt)
    if groups <= 0:
        return None
    batch, device = gt_labels.shape[0], gt_labels.device
    labels = gt_labels[:, :max_gt].repeat(1, groups)  # [B, G * max_gt]
    boxes = gt_boxes[:, :max_gt].repeat(1, groups, 1)
    valid = labels >= 0
    noise = torch.rand(batch, groups * max_gt, 3, device=device) * 2 - 1
    centres = boxes[..., :3] + noise * boxes[..., 3:6] / 2 * noise_scale
    low, high = point_cloud_range[:3], point_cloud_range[3:]
    reference = ((centres - low) / (high - low)).clamp(0, 1) * valid[..., None]
    noisy_labels = torch.where(noise.norm(dim=-1) > DN_SPLIT, torch.full_like(labels, -1), labels)
    pad = groups * max_gt
    mask = torch.zeros(pad + num_queries, pad + num_queries, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True  # matching queries never see the DN queries
    for group in range(groups):
        start, end = group * max_gt, (group + 1) * max_gt
        mask[start:end, :start] = True
        mask[start:end, end:pad] = True
    return {"reference": reference, "labels": noisy_labels, "boxes": boxes, "valid": valid, "mask": mask, "pad": pad,
            "count": groups * int(valid_gt[:, :max_gt].sum())}


def denoising_losses(logits: torch.Tensor, box_codes: torch.Tensor, dn: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """DN (cls, reg) loss of one layer: every valid DN query regresses to its GT (background-relabelled
    ones too, as in the official code); cls avg factor N_dn * (pi/6) * 0.75^3 (paper spec)."""
    valid, count = dn["valid"].flatten().float(), dn["count"]
    cls = classification_loss(logits.flatten(0, 1), dn["labels"].flatten(), weight=valid,
                              avg_factor=count * math.pi / 6 * DN_SPLIT ** 3)
    reg = regression_loss(box_codes.flatten(0, 1), encode_boxes(dn["boxes"]).flatten(0, 1), weight=valid, avg_factor=count)
    return cls, reg


def top_detections(logits: torch.Tensor, boxes: torch.Tensor, *, max_detections: int,
                   centre_range: tuple[float, ...]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per sample: top-k sigmoid scores over queries x classes (no NMS), decoded boxes, centres kept
    inside ``centre_range``. Returns (scores [K], labels [K], boxes [K, 9]) per sample."""
    results = []
    num_classes = logits.shape[-1]
    for sample_logits, sample_codes in zip(logits, boxes):
        scores, flat = sample_logits.sigmoid().flatten().topk(min(max_detections, sample_logits.numel()))
        labels, queries = flat % num_classes, torch.div(flat, num_classes, rounding_mode="floor")
        decoded = decode_boxes(sample_codes[queries])
        low, high = decoded.new_tensor(centre_range[:3]), decoded.new_tensor(centre_range[3:])
        keep = ((decoded[:, :3] >= low) & (decoded[:, :3] <= high)).all(dim=1)
        results.append((scores[keep], labels[keep], decoded[keep]))
    return results

