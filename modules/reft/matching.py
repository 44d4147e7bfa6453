"""Hungarian matching and the Mask2Former set loss used by RefT (see ``modules/reft/__init__.py``).

Matching cost between every query q and ground-truth instance g of one image (Mask2Former defaults):
``2.0 * (-p_q(class_g)) + 5.0 * BCE(mask_q, mask_g) + 5.0 * Dice(mask_q, mask_g)``, the mask terms
averaged over pixels, solved with ``scipy.optimize.linear_sum_assignment``. Loss per decoder output:
``2.0 * CE(class; no-object weight 0.1) + 5.0 * BCE(mask) + 5.0 * Dice(mask)`` with the mask terms
summed over matched pairs and divided by the number of ground-truth masks, and
``Dice = 1 - (2 * sum(sigma(m) * g) + 1) / (sum(sigma(m)) + sum(g) + 1)``.
Deviation (the paper spec's small-scale profile): costs and losses use every pixel of the
mask-feature grid (e.g. 16x16 at 64 px and mask stride 4; ground truth area-downsampled to it, i.e.
soft targets) instead of 12,544 (importance-)sampled points; the number of masks is not all-reduced
across DDP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def pairwise_sigmoid_bce(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[..., Q, P] logits x [G, P] targets in [0, 1] -> [..., Q, G] mean-over-pixels BCE of every pair."""
    pixels = mask_logits.shape[-1]
    positive = F.softplus(-mask_logits)  # BCE against target 1
    negative = positive + mask_logits  # BCE against target 0: softplus(x) = softplus(-x) + x (one transcendental pass)
    return (positive @ targets.T + negative @ (1 - targets).T) / pixels


def pairwise_dice(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[..., Q, P] logits x [G, P] targets -> [..., Q, G] dice loss (smoothing 1) of every pair."""
    probabilities = mask_logits.sigmoid()
    numerator = 2 * probabilities @ targets.T
    denominator = probabilities.sum(-1)[..., None] + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


@dataclass(frozen=True)
class MatchingWeights:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1


def matching_cost(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                  mask_targets: torch.Tensor, weights: MatchingWeights = MatchingWeights()) -> torch.Tensor:
    """[..., Q, G] cost of assigning each query ([..., Q, C+1] and [..., Q, P]) to each ground-truth
    instance (no gradient needed)."""
    class_cost = -class_logits.softmax(-1)[..., labels]
    return (weights.class_weight * class_cost + weights.mask_weight * pairwise_sigmoid_bce(mask_logits, mask_targets)
            + weights.dice_weight * pairwise_dice(mask_logits, mask_targets))


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    mask_targets: torch.Tensor, weights: MatchingWeights = MatchingWeights()) -> tuple[torch.Tensor, torch.Tensor]:
    """(query indices, ground-truth indices) of the minimum-cost one-to-one assignment of one image."""
    if len(labels) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=class_logits.device)
        return empty, empty
    cost = matching_cost(class_logits.float(), mask_logits.float(), labels, mask_targets.float(), weights)
    queries, targets = linear_sum_assignment(cost.cpu().numpy())
    device = class_logits.device
    return torch.as_tensor(queries, dtype=torch.long, device=device), torch.as_tensor(targets, dtype=torch.long, device=device)


@torch.no_grad()
def batch_hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: list[torch.Tensor],
                          mask_targets: list[torch.Tensor], weights: MatchingWeights = MatchingWeights()
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``hungarian_match`` of every image of a batch ([B, Q, C+1], [B, Q, P], per image [G] and [G, P]):
    one batched cost against all the batch's instances and one host copy; image b solves its own columns."""
    counts = [len(image_labels) for image_labels in labels]
    if sum(counts) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=class_logits.device)
        return [(empty, empty) for _ in counts]
    cost = matching_cost(class_logits.float(), mask_logits.float(), torch.cat(labels),
                         torch.cat(mask_targets).float(), weights).cpu().numpy()  # [B, Q, sum G]
    matches, start = [], 0
    for index, count in enumerate(counts):
        queries, targets = linear_sum_assignment(cost[index, :, start:start + count]) if count else ([], [])
        start += count
        matches.append((torch.as_tensor(queries, dtype=torch.long, device=class_logits.device),
                        torch.as_tensor(targets, dtype=torch.long, device=class_logits.device)))
    return matches


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss of matched pairs, [N, P] -> [N]."""
    probabilities = mask_logits.sigmoid()
    return 1 - (2 * (probabilities * targets).sum(-1) + 1) / (probabilities.sum(-1) + targets.sum(-1) + 1)


def set_loss(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: list[torch.Tensor],
             mask_targets: list[torch.Tensor], *, num_classes: int,
             weights: MatchingWeights = MatchingWeights()) -> dict[str, torch.Tensor]:
    """Mask2Former loss of one decoder output for a batch: class_logits [B, Q, C+1], mask_logits
    [B, Q, P], per image labels [G] and mask targets [G, P]. Returns the weighted terms."""
    batch, queries, _ = class_logits.shape
    class_targets = torch.full((batch, queries), num_classes, dtype=torch.long, device=class_logits.device)
    matched_logits, matched_targets = [], []
    matches = batch_hungarian_match(class_logits, mask_logits, labels, mask_targets, weights)
    for index, (query_index, target_index) in enumerate(matches):
        class_targets[index, query_index] = labels[index][target_index]
        matched_logits.append(mask_logits[index][query_index])
        matched_targets.append(mask_targets[index][target_index])
    class_weights = torch.ones(num_classes + 1, device=class_logits.device)
    class_weights[num_classes] = weights.no_object_weight
    loss_class = F.cross_entropy(class_logits.transpose(1, 2), class_targets, weight=class_weights)
    logits, targets = torch.cat(matched_logits), torch.cat(matched_targets).to(mask_logits.dtype)
    num_masks = max(len(targets), 1)
    loss_mask = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1).sum() / num_masks
    loss_dice = dice_loss(logits, targets).sum() / num_masks
    return {"class": weights.class_weight * loss_class, "mask": weights.mask_weight * loss_mask,
            "dice": weights.dice_weight * loss_dice}
