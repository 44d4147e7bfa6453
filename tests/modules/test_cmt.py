"""CMT's hand-written parts: focal matching cost, Hungarian assignment, losses and DN on hand-made
cases; the box code; the position encodings (shapes, the kept pos2embed quirk, rays that project back
onto their pixels); and our mAP/NDS aggregation against the nuscenes-devkit on a small case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modules.cmt import CMT
from modules.cmt.matching import (classification_loss, decode_boxes, denoising_losses, denoising_queries, encode_boxes,
                                  class_focal_cost, hungarian_match, match_layers, matched_losses, regression_loss)
from modules.cmt.model import CoordinatesEncoding, pos2embed
from modules.cmt.detection_metrics import NuScenesDetectionMetric, detection_scores, nd_score

CLASSES = ("car", "pedestrian", "traffic_cone")
RANGE = (-16.0, -16.0, -2.0, 16.0, 16.0, 2.0)


def test_focal_cost_matches_the_formula() -> None:
    # p = 0.5 everywhere: a(1-p)^2(-log p) - (1-a)p^2(-log(1-p)) = (0.25 - 0.75) * 0.25 * ln 2.
    cost = class_focal_cost(torch.zeros(3, 2))
    assert torch.allclose(cost, torch.full((3, 2), -0.125 * math.log(2)), atol=1e-6)


def test_hungarian_match_assigns_the_near_query_of_the_right_class() -> None:
    boxes = torch.tensor([[5.0, 5.0, -1.0, 4.2, 1.8, 1.6, 0.3, 0.0, 0.0], [-6.0, 2.0, -1.0, 0.7, 0.7, 1.75, 1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    codes = encode_boxes(boxes)
    # Query 2 sits on GT 0, query 0 on GT 1, query 1 is far from both; logits favour the right classes.
    predicted = torch.stack([codes[1], codes[0] + 10.0, codes[0]])
    logits = torch.tensor([[-5.0, 3.0, -5.0], [0.0, 0.0, 0.0], [3.0, -5.0, -5.0]])
    queries, targets = hungarian_match(logits, predicted, labels, codes)
    assert dict(zip(queries.tolist(), targets.tolist())) == {0: 1, 2: 0}
    # NaN costs are guarded rather than crashing scipy (issue #83).
    queries, _ = hungarian_match(torch.full((3, 3), float("nan")), predicted, labels, codes)
    assert len(queries) == 2


def test_losses_on_a_hand_made_case() -> None:
    boxes = torch.tensor([[[5.0, 5.0, -1.0, 4.2, 1.8, 1.6, 0.3, 0.0, 0.0]]])
    codes = encode_boxes(boxes)
    shifted = codes.clone()
    shifted[..., 0] += 1.0  # 1 m off in x: 0.25 (weight) * 2 (code weight) * 1 m / 1 positive
    assert regression_loss(shifted[0], codes[0], avg_factor=1).item() == pytest.approx(0.5)
    # Two queries, one matched: cls = 2.0 * focal sum / (1 + 0.1 * 1).
    logits = torch.tensor([[[2.0, -2.0, -2.0], [-1.0, -1.0, -1.0]]])
    predicted = torch.cat([shifted, codes + 5.0], dim=1)
    cls, reg = matched_losses(logits, predicted, torch.tensor([[0]]), boxes)
    one_hot = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    p = logits[0].sigmoid()
    focal = -(one_hot * 0.25 * (1 - p) ** 2 * p.log() + (1 - one_hot) * 0.75 * p ** 2 * (1 - p).log()).sum()
    assert cls.item() == pytest.approx(2.0 * focal.item() / 1.1, rel=1e-5)
    assert reg.item() == pytest.approx(0.5, rel=1e-5)
    assert classification_loss(logits[0], torch.tensor([0, -1]), avg_factor=1.1).item() == pytest.approx(cls.item())


def _per_sample_losses(logits: torch.Tensor, codes: torch.Tensor, gt_labels: torch.Tensor,
                       gt_boxes: torch.Tensor) -> tuple[float, float]:
    """The straightforward reference: one ``hungarian_match`` per sample on its unpadded GT, losses
    on boolean-indexed rows (one host copy per sample, the cost that ``match_layers`` removes)."""
    targets = torch.full(logits.shape[:2], -1, dtype=torch.long)
    predicted, wanted = [], []
    for sample in range(logits.shape[0]):
        valid = gt_labels[sample] >= 0
        labels, gt_codes = gt_labels[sample][valid], encode_boxes(gt_boxes[sample][valid])
        queries, matched = hungarian_match(logits[sample], codes[sample], labels, gt_codes)
        targets[sample, queries] = labels[matched]
        predicted.append(codes[sample, queries])
        wanted.append(gt_codes[matched])
    positives = int((targets >= 0).sum())
    cls = classification_loss(logits.flatten(0, 1), targets.flatten(), avg_factor=positives + 0.1 * (targets.numel() - positives))
    return cls.item(), regression_loss(torch.cat(predicted), torch.cat(wanted), avg_factor=positives).item()


def test_batched_matching_of_all_layers_equals_per_sample_matching() -> None:
    torch.manual_seed(3)
    layers, batch, queries, classes = 3, 4, 12, 3
    gt_labels = torch.tensor([[0, 2, 1, -1, -1], [1, -1, -1, -1, -1], [-1, -1, -1, -1, -1], [2, 2, 0, 1, 0]])
    gt_boxes = torch.rand(batch, 5, 9) * 10 - 5
    gt_boxes[..., 3:6] = torch.rand(batch, 5, 3) + 0.3
    gt_boxes[gt_labels < 0] = 0.0
    logits = torch.randn(layers, batch, queries, classes)
    codes = encode_boxes(gt_boxes[:, :1].expand(batch, queries, 9)) + torch.randn(batch, queries, 10)
    codes = codes[None] + torch.randn(layers, batch, queries, 10)
    assignments = match_layers(logits, codes, gt_labels, gt_boxes)
    assert [assignment.count for assignment in assignments] == [9] * layers  # 3 + 1 + 0 + 5 GTs, each matched once
    for layer, assignment in enumerate(assignments):
        cls, reg = matched_losses(logits[layer], codes[layer], gt_labels, gt_boxes, assignment=assignment)
        expected_cls, expected_reg = _per_sample_losses(logits[layer], codes[layer], gt_labels, gt_boxes)
        assert cls.item() == pytest.approx(expected_cls, rel=1e-5) and reg.item() == pytest.approx(expected_reg, rel=1e-5)
        # the GT column of each match holds the label it was matched to (padding is never matched)
        assert (gt_labels[assignment.sample, assignment.target] >= 0).all()


def test_denoising_losses_leave_padding_out() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[0, 1, -1], [2, -1, -1]])
    boxes = torch.rand(2, 3, 9) + 0.5
    dn = denoising_queries(labels, boxes, groups=3, num_queries=10, point_cloud_range=torch.tensor(RANGE))
    assert dn["count"] == 9  # 3 GTs x 3 groups, counted on the host
    logits, codes = torch.randn(2, dn["pad"], 3), torch.randn(2, dn["pad"], 10)
    cls, reg = denoising_losses(logits, codes, dn)
    valid = dn["valid"]
    expected_cls = classification_loss(logits[valid], dn["labels"][valid], avg_factor=9 * math.pi / 6 * 0.75 ** 3)
    expected_reg = regression_loss(codes[valid], encode_boxes(dn["boxes"][valid]), avg_factor=9)
    assert cls.item() == pytest.approx(expected_cls.item(), rel=1e-5)
    assert reg.item() == pytest.approx(expected_reg.item(), rel=1e-5)


def test_box_code_round_trip() -> None:
    boxes = torch.tensor([[1.0, -2.0, -1.0, 4.2, 1.8, 1.6, -2.5, 0.5, -0.25]])
    code = encode_boxes(boxes)
    assert code[0, 2].item() == -1.0 and code[0, 3].item() == pytest.approx(math.log(4.2))  # cz at index 2 (quirk fixed)
    assert torch.allclose(decode_boxes(code), boxes, atol=1e-6)


def test_denoising_groups_and_attention_mask() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[0, 1, -1], [2, -1, -1]])
    boxes = torch.zeros(2, 3, 9)
    boxes[..., 3:6] = 2.0
    dn = denoising_queries(labels, boxes, groups=3, num_queries=10, point_cloud_range=torch.tensor(RANGE))
    assert dn["pad"] == 6 and dn["mask"].shape == (16, 16)  # G = min(3, 10 // 2) groups of max #GT = 2
    assert dn["valid"].sum().item() == 9
    mask = dn["mask"]
    assert mask[6:, :6].all() and not mask[:6, 6:].any()  # matching queries never see DN queries
    assert not mask[0:2, 0:2].any() and mask[0:2, 2:6].all() and mask[2:4, 0:2].all() and mask[4:6, 0:4].all()
    # Background relabelling exactly where the unit noise vector is longer than 0.75; noise within size/2.
    offsets = dn["reference"] * 32 - 16
    assert (offsets[dn["valid"]][:, :2].abs() <= 1.0 + 1e-5).all()
    assert denoising_queries(labels, boxes, groups=0, num_queries=10, point_cloud_range=torch.tensor(RANGE)) is None


def test_position_encodings() -> None:
    torch.manual_seed(0)
    embedding = pos2embed(torch.tensor([[0.25, 0.0]]), num_pos_feats=8)
    assert embedding.shape == (1, 16)
    # Kept quirk: frequency divisor 1 + 2 floor(k/2)/F, so dim 0 of x is sin(2 pi 0.25 / 1) = 1 (x is the second half).
    assert embedding[0, 8].item() == pytest.approx(1.0) and embedding[0, 10].item() == pytest.approx(math.sin(math.pi / 2 / 1.25))
    encoding = CoordinatesEncoding(embed_dim=16, point_cloud_range=RANGE, depth_num=4)
    from datamodules.synthetic_scenes import camera_rigs
    from datamodules.nuscenes import lidar_to_image_matrix

    intrinsics, extrinsics = camera_rigs()
    lidar2img = torch.tensor(np.stack([lidar_to_image_matrix(k, e) for k, e in zip(intrinsics, extrinsics)]),
                             dtype=torch.float32)[None].repeat(2, 1, 1, 1)
    assert encoding.image_tokens_pe((4, 6), (64, 96), lidar2img).shape == (2, 4 * 24, 16)
    assert encoding.bev_tokens_pe((16, 16), torch.device("cpu")).shape == (256, 16)
    # Rays: the points of pixel (u, v) at every depth bin project back onto (u, v) at that depth.
    pixels = torch.tensor([[10.0, 20.0], [90.0, 60.0]]).expand(2, 4, 2, 2)
    points = encoding.ray_points(pixels, lidar2img) * torch.tensor([32.0, 32.0, 4.0]) - torch.tensor([16.0, 16.0, 2.0])
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], -1)
    projected = torch.einsum("bvij,bvpdj->bvpdi", lidar2img, homogeneous)
    assert torch.allclose(projected[..., 2], encoding.depths.expand_as(projected[..., 2]), atol=1e-3)
    assert torch.allclose(projected[..., :2] / projected[..., 2:3], pixels[..., None, :].expand_as(projected[..., :2]), atol=1e-3)
    anchors = torch.rand(2, 7, 3)
    assert encoding.query_pe(anchors, lidar2img=lidar2img, image_shape=(64, 96)).shape == (2, 7, 16)
    bev_only = encoding.query_pe(anchors, lidar2img=None, image_shape=(64, 96))
    # An anchor straight ahead of the front camera gets an image term; the BEV term is shared.
    assert not torch.allclose(encoding.query_pe(anchors, lidar2img=lidar2img, image_shape=(64, 96)), bev_only)


def _small_case():
    # Two samples: sample 0 has cars A, B and a pedestrian; sample 1 one car and one cone.
    gt = np.array([[0, 0, 5, 5, -1, 4.2, 1.8, 1.6, 0.0, 0, 0], [0, 0, -5, 3, -1, 4.0, 1.8, 1.5, 1.0, 0, 0],
                   [0, 1, 2, -6, -1, 0.7, 0.7, 1.7, 0.5, 0, 0], [1, 0, 8, 8, -1, 4.2, 1.8, 1.6, 2.0, 0, 0],
                   [1, 2, -3, -3, -1, 0.4, 0.4, 0.9, 0.0, 0, 0]])
    pred = np.array([[0, 0, 5.3, 5.0, -1, 4.0, 1.8, 1.6, 0.1, 0.1, 0, 0.9], [0, 0, -5.0, 4.5, -1, 4.2, 1.7, 1.5, 1.3, 0, 0, 0.8],
                     [0, 0, 0.0, 0.0, -1, 4.2, 1.8, 1.6, 0.0, 0, 0, 0.7], [0, 1, 2.2, -6.1, -1, 0.6, 0.7, 1.8, 0.3, 0, 0.2, 0.6],
                     [1, 0, 8.0, 11.0, -1, 4.2, 1.8, 1.6, 2.0, 0, 0, 0.5], [1, 2, -3.1, -3.0, -1, 0.4, 0.4, 0.9, 1.0, 0, 0, 0.4]])
    return pred, gt


def test_detection_scores_hand_value_and_devkit_nds() -> None:
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.data_classes import DetectionConfig, DetectionMetrics
    from modules.cmt.detection_metrics import to_eval_boxes

    pred, gt = _small_case()
    scores = detection_scores(pred, gt, [0, 1], class_names=CLASSES)
    # Pedestrian: one GT, one prediction 0.22 m off -> AP 1 at every threshold. Cone: likewise (0.1 m).
    assert scores["ap_pedestrian"] == pytest.approx(1.0) and scores["ap_traffic_cone"] == pytest.approx(1.0)
    # Cars (3 GT): at 0.5/1 m only the 0.3 m hit counts (recall 1/3 at precision 1): AP = (23/90) each
    # [(recall bins 0.11..0.33 = 23 points of max(P - 0.1, 0) = 0.9) / 90 / 0.9]; at 2/4 m the second
    # (1.5 m off) also hits at precision 1: recall 2/3 -> 56 points -> 56/90; the third (at score 0.5,
    # 3 m off) hits only at 4 m, after a false positive: the devkit interpolates precision linearly
    # (no envelope) from 2/3 at recall 2/3 to 3/4 at recall 1.
    recall = np.arange(67, 101) / 100
    car_4m = (56 * 0.9 + np.sum(2 / 3 + (recall - 2 / 3) * 0.25 - 0.1)) / 90 / 0.9
    expected_car = np.mean([23 / 90, 23 / 90, 56 / 90, car_4m])
    assert scores["ap_car"] == pytest.approx(expected_car, abs=1e-6)
    assert scores["map"] == pytest.approx((expected_car + 2) / 3, abs=1e-6)
    # mAP, TP errors and NDS over the 10 nuScenes classes against the devkit's own DetectionMetrics
    # (its config insists on all 10), fed with the devkit's AP / TP values class by class.
    from datamodules.nuscenes import NUSCENES_CLASSES

    to_nuscenes = np.array([NUSCENES_CLASSES.index(name) for name in CLASSES])
    pred10, gt10 = pred.copy(), gt.copy()
    pred10[:, 1], gt10[:, 1] = to_nuscenes[pred[:, 1].astype(int)], to_nuscenes[gt[:, 1].astype(int)]
    scores10 = detection_scores(pred10, gt10, [0, 1], class_names=NUSCENES_CLASSES)
    config = DetectionConfig(class_range={name: 50 for name in NUSCENES_CLASSES}, dist_fcn="center_distance",
                             dist_ths=[0.5, 1.0, 2.0, 4.0], dist_th_tp=2.0, min_recall=0.1, min_precision=0.1,
                             max_boxes_per_sample=500, mean_ap_weight=5)
    metrics = DetectionMetrics(config)
    predictions = to_eval_boxes(pred10, [0, 1], class_names=NUSCENES_CLASSES, scored=True)
    ground_truth = to_eval_boxes(gt10, [0, 1], class_names=NUSCENES_CLASSES, scored=False)
    for name in NUSCENES_CLASSES:
        for threshold in config.dist_ths:
            data = accumulate(ground_truth, predictions, name, center_distance, threshold)
            metrics.add_label_ap(name, threshold, calc_ap(data, 0.1, 0.1))
        data = accumulate(ground_truth, predictions, name, center_distance, 2.0)
        for metric in ("trans_err", "vel_err", "scale_err", "orient_err", "attr_err"):
            undefined = ((name == "traffic_cone" and metric in ("attr_err", "vel_err", "orient_err"))
                         or (name == "barrier" and metric in ("attr_err", "vel_err")))
            metrics.add_label_tp(name, metric, np.nan if undefined else calc_tp(data, 0.1, metric))
    assert scores10["map"] == pytest.approx(metrics.mean_ap) and scores10["map"] == pytest.approx(scores["map"] * 3 / 10)
    assert scores10["nds"] == pytest.approx(metrics.nd_score)
    for metric, short in (("trans_err", "ate"), ("scale_err", "ase"), ("orient_err", "aoe"), ("vel_err", "ave"),
                          ("attr_err", "aae")):
        assert scores10[short] == pytest.approx(metrics.tp_errors[metric])
    # NDS_syn over three TP errors = (5 mAP + 3 terms) / 8.
    syn = detection_scores(pred, gt, [0, 1], class_names=CLASSES, tp_metrics=("trans_err", "scale_err", "orient_err"))
    assert syn["nds"] == pytest.approx(nd_score(syn["map"], {k: syn[v] for k, v in (("a", "ate"), ("b", "ase"), ("c", "aoe"))}))
    assert syn["nds"] == pytest.approx((5 * syn["map"] + 3 - syn["ate"] - syn["ase"] - syn["aoe"]) / 8)


def test_metric_accumulates_batches_like_one_update() -> None:
    pred, gt = _small_case()
    whole = NuScenesDetectionMetric(class_names=CLASSES)
    whole.update(torch.tensor(pred), torch.tensor(gt), torch.tensor([0, 1]))
    split = NuScenesDetectionMetric(class_names=CLASSES)
    for sample in (0, 1):
        split.update(torch.tensor(pred[pred[:, 0] == sample]), torch.tensor(gt[gt[:, 0] == sample]), torch.tensor([sample]))
    assert split.compute() == whole.compute()
    empty_sample = NuScenesDetectionMetric(class_names=CLASSES)
    empty_sample.update(torch.tensor(pred), torch.tensor(gt), torch.tensor([0, 1, 2]))  # sample 2: no boxes at all
    assert empty_sample.compute()["scenes"] == 3.0 and empty_sample.compute()["map"] == whole.compute()["map"]


@pytest.mark.slow
def test_variants_see_only_their_modalities() -> None:
    torch.manual_seed(0)
    from datamodules.synthetic_scenes import collate_scenes, generate_scene

    batch = collate_scenes([generate_scene(split_seed=0, split="test", index=i) for i in range(2)])
    tiny = dict(embed_dim=16, num_layers=1, num_heads=2, ffn_dim=32, num_queries=8, depth_num=4,
                image_widths=(8, 8, 8, 8), bev_widths=(8, 8, 8))
    for modalities, changes_with_images, changes_with_points in (("lidar", False, True), ("camera", True, False),
                                                                 ("fusion", True, True)):
        model = CMT(modalities=modalities, **tiny).eval()
        reference = model.network(batch["images"], batch["points"], batch["point_mask"], batch["lidar2img"])[-1][0]
        no_images = model.network(batch["images"] * 0, batch["points"], batch["point_mask"], batch["lidar2img"])[-1][0]
        no_points = model.network(batch["images"], batch["points"] * 0, batch["point_mask"], batch["lidar2img"])[-1][0]
        assert (not torch.allclose(reference, no_images)) == changes_with_images, modalities
        assert (not torch.allclose(reference, no_points)) == changes_with_points, modalities


def test_retained_share_is_nan_below_the_map_floor() -> None:
    from modules.cmt import RETAINED_MAP_FLOOR, retained_share

    assert RETAINED_MAP_FLOOR == 0.01
    assert retained_share(0.15, 0.3) == pytest.approx(0.5)
    # A full-sensor mAP of noise (below the floor, or 0) makes the share NaN, never 0 or a ratio of noise.
    assert math.isnan(retained_share(0.0009, 0.0005)) and math.isnan(retained_share(0.0, 0.0))
    assert retained_share(0.0, 0.01) == 0.0  # at the floor the ratio is reported


def test_convergence_choices_multiscale_pe_gain_and_first_layer_without_self_attention() -> None:
    from modules.cmt.model import multiscale_pos2embed

    # Multiscale BEV PE: frequencies 0.5 .. 16 cycles over the range, geometric; [y, x] halves.
    positions = torch.tensor([[0.25, 0.5]])
    embedding = multiscale_pos2embed(positions, num_pos_feats=8)  # 4 frequencies: 0.5, 1.585, 5.04, 16 cycles
    frequencies = 2 * math.pi * 0.5 * 32.0 ** (torch.arange(4) / 3)
    assert embedding.shape == (1, 16)
    assert torch.allclose(embedding[0, 8::2], (0.25 * frequencies).sin(), atol=1e-6)  # x half, sin terms
    assert torch.allclose(embedding[0, 1:8:2], (0.5 * frequencies).cos(), atol=1e-6)  # y half, cos terms
    # Two BEV tokens one cell apart (2 m of 32 m) differ clearly in the multiscale PE, barely in the official one.
    a, b = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5625, 0.5]])
    assert ((multiscale_pos2embed(a, num_pos_feats=64) - multiscale_pos2embed(b, num_pos_feats=64)).norm()
            > 3 * (pos2embed(a, num_pos_feats=64) - pos2embed(b, num_pos_feats=64)).norm())
    # pe_gain multiplies the PE MLPs' last weights (same seed -> exactly 6x the PE minus the bias).
    torch.manual_seed(0)
    plain = CoordinatesEncoding(embed_dim=16, point_cloud_range=RANGE, depth_num=4, pe_gain=1.0)
    torch.manual_seed(0)
    scaled = CoordinatesEncoding(embed_dim=16, point_cloud_range=RANGE, depth_num=4, pe_gain=6.0)
    bias = plain.bev_embedding[-1].bias
    assert torch.allclose(scaled.bev_tokens_pe((4, 4), torch.device("cpu")) - bias,
                          6 * (plain.bev_tokens_pe((4, 4), torch.device("cpu")) - bias), atol=1e-5)
    with pytest.raises(ValueError, match="bev_pe"):
        CoordinatesEncoding(embed_dim=16, point_cloud_range=RANGE, bev_pe="nope")
    # The first decoder layer (zero query content) has no self-attention; later layers do.
    model = CMT(modalities="lidar", embed_dim=16, num_layers=2, num_heads=2, ffn_dim=32, num_queries=8, depth_num=4,
                bev_widths=(8, 8, 8))
    assert model.network.layers[0].self_attention is None and model.network.layers[1].self_attention is not None
    assert CMT(modalities="lidar", embed_dim=16, num_layers=2, num_heads=2, ffn_dim=32, num_queries=8, depth_num=4,
               bev_widths=(8, 8, 8), first_self_attention=True).network.layers[0].self_attention is not None


TINY = dict(embed_dim=16, num_layers=2, num_heads=2, ffn_dim=32, num_queries=8, depth_num=4,
            image_widths=(8, 8, 8, 8), bev_widths=(8, 8, 8))


def _two_scenes() -> dict:
    from datamodules.synthetic_scenes import collate_scenes, generate_scene

    return collate_scenes([generate_scene(split_seed=0, split="test", index=i) for i in range(2)])


def test_token_norm_layer_normalises_each_modalitys_content_before_the_pe() -> None:
    batch = _two_scenes()
    torch.manual_seed(0)
    normed = CMT(modalities="fusion", token_norm=True, **TINY).network.eval()
    keys, _ = normed.tokens(batch["images"], batch["points"], batch["point_mask"], batch["lidar2img"])
    # LayerNorm at initialisation (weight 1, bias 0): every token, BEV and image, has mean 0 and unit variance
    assert torch.allclose(keys.mean(-1), torch.zeros(keys.shape[:2]), atol=1e-5)
    assert torch.allclose(keys.var(-1, unbiased=False), torch.ones(keys.shape[:2]), atol=1e-3)
    assert sorted(normed.token_norms) == ["bev", "image"]
    assert sorted(CMT(modalities="lidar", token_norm=True, **TINY).network.token_norms) == ["bev"]
    torch.manual_seed(0)
    plain = CMT(modalities="fusion", **TINY).network.eval()  # the default: official, no LayerNorm
    assert len(plain.token_norms) == 0
    raw, _ = plain.tokens(batch["images"], batch["points"], batch["point_mask"], batch["lidar2img"])
    assert not torch.allclose(raw.var(-1, unbiased=False), torch.ones(raw.shape[:2]), atol=1e-2)


def test_stage_artifact_saved_before_token_norm_existed_loads_as_its_default(tmp_path) -> None:
    from modules.cmt import CMTFromStage

    model = CMT(modalities="fusion", **TINY)
    path = model.save_stage_artifact(tmp_path)
    artifact = torch.load(path, weights_only=False)
    del artifact["hparams"]["token_norm"]  # as written by the code before the option
    torch.save(artifact, path)
    loaded = CMTFromStage(checkpoint=str(path), modalities="fusion", **TINY)
    assert all(torch.equal(a, b) for a, b in zip(loaded.network.state_dict().values(), model.network.state_dict().values()))
    with pytest.raises(ValueError, match="token_norm"):
        CMTFromStage(checkpoint=str(path), modalities="fusion", token_norm=True, **TINY)


def test_decoder_reading_counts_attention_on_bev_tokens_and_scales() -> None:
    from modules.cmt.diagnostics import decoder_reading, rms

    batch = _two_scenes()
    torch.manual_seed(0)
    readings = {modalities: decoder_reading(CMT(modalities=modalities, **TINY).network, batch)
                for modalities in ("lidar", "camera", "fusion")}
    # one modality's queries put all (LiDAR) or none (camera) of their attention on BEV tokens
    assert readings["lidar"]["bev_share"] == pytest.approx([1.0, 1.0])
    assert readings["camera"]["bev_share"] == pytest.approx([0.0, 0.0], abs=1e-7)
    assert readings["lidar"]["image_pe"] is None and readings["camera"]["bev_pe"] is None
    fusion = readings["fusion"]
    assert fusion["num_bev_tokens"] == 16 * 16  # 0.5 m pillars over 32 m at stride 4
    assert all(0.0 < share < 1.0 for share in fusion["bev_share"])
    # the scales are those of the network's own keys
    network = CMT(modalities="fusion", **TINY).network.eval()
    with torch.no_grad():
        keys, key_pos = network.tokens(batch["images"], batch["points"], batch["point_mask"], batch["lidar2img"])
    reading = decoder_reading(network, batch)
    assert reading["bev_content"] == pytest.approx(rms(keys[:, :256])) and reading["image_pe"] == pytest.approx(rms(key_pos[:, 256:]))
    assert rms(torch.tensor([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))
