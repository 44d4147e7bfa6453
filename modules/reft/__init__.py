"""RefT — Reference Twice for few-shot instance segmentation, and the baselines it is compared with.

Paper: Y. Han, J. Zhang, Z. Xue, C. Xu, X. Shen, Y. Wang, C. Wang, Y. Liu, X. Li, "Reference Twice:
A Simple and Unified Baseline for Few-Shot Instance Segmentation", arXiv 2301.01156 (summarised in
``papers/reft.md``). The official repository ``hanyue1648/RefT`` holds only a README and figures:
**no code was released**, so every RefT-specific choice below is a reconstruction; those taken
from the abstract / teaser / Mask2Former defaults rather than from the paper are marked [inferred].

Protocol (TFA style; the data side is ``datamodules.coco_instances`` via ``datamodules.few_shot_instances``):

1. ``QueryInstanceSegmentation``: base training of the Mask2Former-like network
   (``modules/reft/model.py``) on the base classes; the cached per-seed ``base`` stage every arm shares.
2. ``FewShotFineTune``: the base weights plus the arm's reference modules, fine-tuned on the K-shot
   set of its ``setting`` (gFSIS: all classes, nAP and bAP; FSIS: novel classes only, nAP). Arms:
   RefT, the plain Mask2Former-like + ft-full, RefT without the instance link, RefT without the
   feature re-weighting, and ft-head-only (``trainable="class_head"``). Details in its docstring.
3. ``BaseModelEvaluation``: the base model tested without fine-tuning (a reference point).
4. ``modules.reft.baselines.PrototypeClassifier``: cosine logits to support class prototypes, no
   fine-tuning.

Metrics (``modules.reft.coco_metrics``, pycocotools ``COCOeval(iouType="segm")``, in percent):
``test/nAP``, ``test/bAP`` (gFSIS only), ``test/AP``, ``test/AP50``; ``test/images_evaluated`` and
``test/mean_score`` are diagnostics. FSIS rows are not comparable with gFSIS rows. Arms with reference
modules also record how far those moved: ``test/reference_weight_change`` (||theta - theta_0|| /
||theta_0|| over the modules' parameters) and ``test/reference_output_change`` (the relative change of
the final queries that the references cause on the test images). A calibration run scores the
validation split instead (the ground truth of the dataset it is handed).

Deviations from the paper's setting (no official code exists to deviate from):

1. Scale (the paper spec's small-scale profile): a 4-stage CNN (32-64-96-128, GroupNorm, trained
   from scratch: no ImageNet weights exist at this size) instead of R-50; an FPN instead of the
   6-layer MSDeformAttn pixel decoder; 3 masked-attention layers (6 in the cpu profile, item 8), 20
   queries, d = 64, 4 heads, FFN 256 instead of 9 / 100 / 256 / 8 / 2048; every pixel of the
   mask-feature grid (16x16, or 32x32 at ``mask_stride = 2``, item 8) instead of 12,544 sampled points.
2. Because the backbone is not pretrained, its learning rate is not scaled by 0.1 in the cpu
   profile (``backbone_lr_multiplier`` is configurable; the full profile keeps 0.1).
3. Augmentation is a random horizontal flip; large-scale jitter (0.1-2.0, 1024 crop) is not
   implemented.
4. The fine-tuning schedule is not published: AdamW at the base lr with the same poly decay
   [inferred], a fixed number of iterations per K, the same for every arm and both settings.
5. Reference-module details [inferred]: the feature reference acts on the three decoder-input
   scales (not on the mask features); the instance link replaces the final prediction (auxiliary
   losses stay on the decoder rounds before it); both modules' output projections start at zero so
   fine-tuning starts from the base model; support images are not re-weighted by the centres.
6. Settings: gFSIS (K = 1 / 5 / 10) and FSIS (K = 5 / 10; the paper's FSIS also has K = 30, which
   the synthetic K-shot sets do not hold) are run; iFSIS (cosine classifier, distillation) is not
   implemented. FSIS reuses the gFSIS base stage unchanged (same per-seed cache entry).
7. cpu profile: the spec's 300 fine-tuning iterations; the base length (12 epochs, not the spec's 8),
   base lr and ft-head-only lr are chosen on the validation split (``litbench sweep``, records in
   ``results/calibration/reft/``); the other arms fine-tune at lr 1e-3, set before that split existed.
8. Feature strides scaled with the image (``mask_stride``, default 4 = Mask2Former's): Mask2Former's
   decoder attends strides 32 / 16 / 8 and predicts masks at stride 4 of 512-1024 px images, i.e.
   maps 16-128 px wide; at 64 px those strides leave 2x2 / 4x4 / 8x8 maps in which a 10-28 px shape is
   one or two tokens. ``mask_stride = 2`` halves every stride (decoder 16 / 8 / 4, masks at 2: 4x4 /
   8x8 / 16x16 decoder maps and 32x32 masks), a size change like the image size itself; the backbone's
   stem and first stage then keep more resolution (stride 2 then 1 instead of 2 and 2). The cpu profile
   uses ``mask_stride = 2`` with 6 decoder layers (two rounds over the three scales; the paper's 9 are
   three, the spec's small profile says 3), both chosen on the validation split with ``litbench sweep``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from modules.reft.coco_metrics import CocoMaskAP, encode_masks
from modules.reft.matching import MatchingWeights, hungarian_match, set_loss
from modules.reft.model import DecoderOutput, QueryInstanceSegmenter, References, restrict_class_logits

STAGE_FILE = "base_model.pt"
SETTINGS = ("gfsis", "fsis")
TRAINABLE = ("all", "class_head")
REFERENCE_MODULES = ("feature_reference.", "instance_reference.")  # parameter-name prefixes, new at fine-tuning
ARCHITECTURE_KEYS = ("num_classes", "dim", "num_queries", "num_heads", "ffn_dim", "num_layers", "widths", "mask_stride")


def relative_change(current: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]) -> float:
    """||theta - theta_0|| / ||theta_0|| over every tensor of ``initial`` (one flattened vector)."""
    moved = sum(float((current[name].detach().cpu().double() - start.double()).square().sum()) for name, start in initial.items())
    size = sum(float(start.double().square().sum()) for start in initial.values())
    return math.sqrt(moved / size) if size > 0 else math.nan


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean [G, H, W] ground truth -> soft [G, h * w] targets at the mask-feature grid (area mean)."""
    if len(masks) == 0:
        return masks.new_zeros((0, size[0] * size[1]), dtype=torch.float32)
    return F.interpolate(masks[None].float(), size=size, mode="area")[0].flatten(1)


class QueryInstanceSegmentation(L.LightningModule):
    """Mask2Former-like instance segmentation trained on the base classes (the shared ``base`` stage)."""

    train_split = "base"
    setting = "gfsis"  # base training and the base model's test cover all classes

    def __init__(self, *, num_classes: int = 10, image_size: int = 64, dim: int = 64, num_queries: int = 20,
                 num_heads: int = 4, ffn_dim: int = 256, num_layers: int = 3,
                 widths: Sequence[int] = (32, 64, 96, 128), mask_stride: int = 4, lr: float = 1e-4,
                 weight_decay: float = 0.05,
                 backbone_lr_multiplier: float = 0.1, poly_power: float = 0.9, class_weight: float = 2.0,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, no_object_weight: float = 0.1,
                 max_detections: int = 100, feature_reference: str | None = None,
                 instance_reference: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = QueryInstanceSegmenter(num_classes=num_classes, dim=dim, num_queries=num_queries,
                                              num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
                                              widths=tuple(widths), mask_stride=mask_stride,
                                              feature_reference=feature_reference,
                                              instance_reference=instance_reference)
        self.weights = MatchingWeights(class_weight, mask_weight, dice_weight, no_object_weight)
        self.mask_ap = CocoMaskAP()

    # -- data contract ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        datamodule.setup(stage)
        found = {"num_classes": datamodule.num_classes, "image_size": datamodule.image_size}
        expected = {"num_classes": self.hparams.num_classes, "image_size": self.hparams.image_size}
        if found != expected:
            # The base stage builds the same network, so both need the data's shape (bring-your-own COCO).
            fix = " ".join(f"--set {where}.init_args.{key}={value}" for key, value in found.items()
                           if expected[key] != value for where in ("model", "stages.base.model"))
            raise ValueError(f"{type(self).__name__} is built for {expected} but the data give {found}; "
                             f"rerun with {fix}")

    def references_for_test(self) -> References | None:
        return None

    def evaluated_labels(self) -> list[int]:
        """Contiguous labels that this setting predicts and evaluates (all, or the novel ones in FSIS)."""
        return self.trainer.datamodule.setting_labels(self.setting)

    def network_output(self, images: torch.Tensor, references: References | None) -> DecoderOutput:
        return self.network(images, references)

    # -- training ----------------------------------------------------------------------------------
    def loss(self, output: DecoderOutput, labels: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mask2Former set loss summed over every prediction round (auxiliary losses included)."""
        grid = tuple(output.mask_logits[-1].shape[-2:])
        targets = [downsample_masks(image_masks, grid) for image_masks in masks]
        totals: dict[str, torch.Tensor] = {}
        for class_logits, mask_logits in zip(output.class_logits, output.mask_logits):
            terms = set_loss(class_logits, mask_logits.flatten(2), labels, targets,
                             num_classes=self.hparams.num_classes, weights=self.weights)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def training_references(self) -> References | None:
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        output = self.network_output(batch["image"], self.training_references())
        terms = self.loss(output, batch["labels"], batch["masks"])
        loss = sum(terms.values())
        self.log_dict({f"train/loss_{name}": value for name, value in terms.items()}, batch_size=len(batch["image"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        backbone = [p for p in self.network.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        rest = [p for p in self.network.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups = [{"params": backbone, "lr": hp.lr * hp.backbone_lr_multiplier}, {"params": rest}]
        optimizer = torch.optim.AdamW([group for group in groups if group["params"]],  # ft-head-only: no backbone group
                                      lr=hp.lr, weight_decay=hp.weight_decay, fused=True)  # one kernel per step
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total) ** hp.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- evaluation --------------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self.mask_ap.reset()
        self.test_labels = self.evaluated_labels()
        self.test_references = self.references_for_test()

    @torch.no_grad()
    def detections(self, output: DecoderOutput, image_ids: list[int], heights: list[int], widths: list[int]) -> list[list[dict]]:
        """Top-k (query, class) pairs per image over the evaluated classes, as COCO results with RLE
        masks at the original size."""
        datamodule = self.trainer.datamodule
        labels = torch.as_tensor(self.test_labels, device=output.class_logits[-1].device)
        probabilities = output.class_logits[-1].softmax(-1)[..., labels]  # [B, Q, C_evaluated]
        results = []
        for index, image_id in enumerate(image_ids):
            scores, flat = probabilities[index].flatten().topk(min(self.hparams.max_detections, probabilities[index].numel()))
            query, label = flat // len(labels), labels[flat % len(labels)]
            masks = F.interpolate(output.mask_logits[-1][index][query][None], size=(heights[index], widths[index]),
                                  mode="bilinear", align_corners=False)[0].sigmoid()
            binary = masks > 0.5
            mask_scores = (masks * binary).flatten(1).sum(-1) / (binary.flatten(1).sum(-1) + 1e-6)
            final = (scores * mask_scores).tolist()
            rles = encode_masks(binary.cpu().numpy())
            results.append([{"image_id": int(image_id), "category_id": int(datamodule.category_ids[int(c)]),
                             "segmentation": rle, "score": float(score)}
                            for c, rle, score in zip(label.tolist(), rles, final)])
        return results

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        output = self.network_output(batch["image"], self.test_references)
        self.measure_references(batch["image"], output)
        for image_id, detections in zip(batch["image_id"], self.detections(output, batch["image_id"], batch["height"],
                                                                            batch["width"])):
            self.mask_ap.update(image_id, detections)

    def evaluated_ground_truth(self):
        """The COCO ground truth of the split being scored: the test set, or the validation set that a
        calibration run (``litbench sweep``) puts in its place."""
        loaders = self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        return getattr(getattr(loader, "dataset", None), "coco", None) or self.trainer.datamodule.test_coco

    def measure_references(self, images: torch.Tensor, output: DecoderOutput) -> None:
        """Diagnostics of the reference modules (the fine-tuned arms that have them)."""

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        category_ids = datamodule.category_ids
        evaluated = set(self.test_labels)  # FSIS: the novel classes only, so no bAP
        scores = self.mask_ap.compute(self.evaluated_ground_truth(),
                                      novel_category_ids=[category_ids[c] for c in datamodule.novel_labels],
                                      base_category_ids=[category_ids[c] for c in datamodule.base_labels if c in evaluated],
                                      category_ids=[category_ids[c] for c in sorted(evaluated)])
        # Every rank evaluated the same gathered set, so the values are already global (no sync needed).
        for name, value in scores.items():
            self.log(f"test/{name}", value)

    # -- stage artifact --------------------------------------------------------------------------
    def save_stage_artifact(self, folder: str | Path) -> Path:
        path = Path(folder) / STAGE_FILE
        if self.global_rank == 0:
            architecture = {key: (list(self.hparams[key]) if key == "widths" else self.hparams[key]) for key in ARCHITECTURE_KEYS}
            base_state = {key: value for key, value in self.network.state_dict().items()
                          if not key.startswith(REFERENCE_MODULES)}
            torch.save({"architecture": architecture, "state_dict": base_state}, path)
        return path


class FewShotFineTune(QueryInstanceSegmentation):
    """Base weights + the arm's reference modules, fine-tuned on the K-shot set of the setting.

    * ``setting="gfsis"``: the balanced K-shot set of all classes, tested on all classes (nAP, bAP).
    * ``setting="fsis"``: exactly K instances per novel class, no base annotation; only the novel
      categories are evaluated (``test/nAP``, ``test/AP``/``AP50`` over them; no bAP). The class head
      keeps its C + 1 outputs but every base-class logit is masked to -inf in training (loss and
      matching) and at test time [inferred: the paper does not say how its FSIS head treats base
      classes].
    * Arms: RefT (``feature_reference="cross_attention"``, ``instance_reference=True``), ft-full
      (both off), the two single-module ablations, and ft-head-only (``trainable="class_head"``:
      only ``network.heads.class_head`` trains, same schedule [inferred]).

    References: every iteration one support image per class is drawn from the K-shot set
    (``train_supports_per_class``) [inferred]; supports run through the shared backbone and pixel
    decoder (class centres, mask-pooled with the support GT masks per scale) and the decoder without
    references, keeping the queries Hungarian-matched to the support instances [inferred K = 1].
    The support branch runs without gradients by default (``support_gradients``) [inferred]. At test
    time centres and support queries come once from the whole K-shot set (FSIS: novel classes only).
    Inference keeps the top-100 (query, class) pairs by p(c), score = p(c) x the mean mask
    probability inside the binarised mask, masks upsampled bilinearly to the image size.
    """

    train_split = "few_shot"
    stage_shared_args = ARCHITECTURE_KEYS  # the base stage's network: checked at load and by the harness before it trains

    def __init__(self, *, shots: int = 5, base_checkpoint: str | None = None, setting: str = "gfsis",
                 trainable: str = "all", train_supports_per_class: int = 1, support_gradients: bool = False,
                 **network: Any) -> None:
        super().__init__(**network)
        self.save_hyperparameters()
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
        self.shots, self.setting = shots, setting
        if base_checkpoint is None:
            raise ValueError("FewShotFineTune needs base_checkpoint: declare the base stage "
                             "(stages: [{name: base, ..., pass_as: base_checkpoint}]) in the spec")
        artifact = torch.load(base_checkpoint, map_location="cpu", weights_only=True)
        built = {key: (list(self.hparams[key]) if key == "widths" else self.hparams[key]) for key in ARCHITECTURE_KEYS}
        if {"mask_stride": 4, **artifact["architecture"]} != built:  # stages saved before mask_stride existed had 4
            raise ValueError(f"base checkpoint {base_checkpoint} holds {artifact['architecture']}, this method is "
                             f"built for {built}; give the base stage the same architecture")
        missing, unexpected = self.network.load_state_dict(artifact["state_dict"], strict=False)
        if unexpected or any(not key.startswith(REFERENCE_MODULES) for key in missing):
            raise ValueError(f"base checkpoint {base_checkpoint} does not fit the network ({missing[:3]} {unexpected[:3]})")
        if trainable == "class_head":  # ft-head-only (TFA): the final class layer is the only trainable weight
            if self.uses_references:
                raise ValueError("trainable='class_head' (ft-head-only) is a baseline without reference modules")
            for name, parameter in self.network.named_parameters():
                parameter.requires_grad_(name.startswith("heads.class_head."))
        # where the reference modules start (their output projections at zero): test/reference_weight_change
        self.reference_start = {name: parameter.detach().clone() for name, parameter in self.network.named_parameters()
                                if name.startswith(REFERENCE_MODULES)}

    def network_output(self, images: torch.Tensor, references: References | None) -> DecoderOutput:
        return self.restrict(self.network(images, references))

    def restrict(self, output: DecoderOutput) -> DecoderOutput:
        """FSIS: base-class logits masked out in every prediction round (see the module docstring)."""
        if self.setting == "gfsis":
            return output
        output.class_logits = [restrict_class_logits(logits, self.evaluated_labels()) for logits in output.class_logits]
        return output

    @property
    def uses_references(self) -> bool:
        return self.network.feature_reference is not None or self.network.instance_reference is not None

    def support_examples(self, indices: list[int], labels: list[int]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Support images (normalised, on device) and, per image, the GT instances of its support class."""
        datamodule = self.trainer.datamodule
        support_set = datamodule.support_set(self.shots, self.setting)
        items = [support_set[index] for index in indices]
        images = datamodule.to_model_input(torch.stack([item["image"] for item in items]).to(self.device))
        keep = [item["labels"] == label for item, label in zip(items, labels)]
        instance_labels = [item["labels"][chosen].to(self.device) for item, chosen in zip(items, keep)]
        instance_masks = [item["masks"][chosen].to(self.device) for item, chosen in zip(items, keep)]
        return images, instance_labels, instance_masks

    def build_references(self, images: torch.Tensor, labels: list[torch.Tensor], masks: list[torch.Tensor]) -> References:
        """Class centres per decoder-input scale and Hungarian-matched support queries (see the docstring)."""
        network = self.network
        scales, mask_features = network.encode(images)
        references = References()
        if network.feature_reference is not None:
            class_masks = torch.zeros((len(images), self.hparams.num_classes, *images.shape[-2:]), device=images.device)
            for index, (image_labels, image_masks) in enumerate(zip(labels, masks)):
                for label, mask in zip(image_labels.tolist(), image_masks):
                    class_masks[index, label] = torch.maximum(class_masks[index, label], mask.float())
            pooled = [network.feature_reference.class_centres(features, class_masks) for features in scales]
            references.centres = [centres for centres, _ in pooled]
            references.centre_valid = pooled[0][1]
        if network.instance_reference is not None:
            output = self.restrict(network.decode(scales, mask_features))
            grid = tuple(output.mask_logits[-1].shape[-2:])
            chosen = []
            for index, (image_labels, image_masks) in enumerate(zip(labels, masks)):
                queries, _ = hungarian_match(output.class_logits[-1][index], output.mask_logits[-1][index].flatten(1),
                                             image_labels, downsample_masks(image_masks, grid), self.weights)
                chosen.append(output.queries[index][queries])
            references.support_queries = torch.cat(chosen)
        return references

    def on_fit_start(self) -> None:
        support_set = self.trainer.datamodule.support_set(self.shots, self.setting)
        # (item index, class) pairs per class, so every iteration can draw supports of every class
        self.supports_of_class: dict[int, list[int]] = {}
        for index in range(len(support_set)):
            for label in support_set[index]["labels"].unique().tolist():
                self.supports_of_class.setdefault(label, []).append(index)

    def training_references(self) -> References | None:
        if not self.uses_references:
            return None
        indices, labels = [], []
        for label, candidates in sorted(self.supports_of_class.items()):
            # torch's RNG (seeded by the harness, identical on every DDP rank) picks the supports
            for pick in torch.randint(len(candidates), (self.hparams.train_supports_per_class,)).tolist():
                indices.append(candidates[pick])
                labels.append(label)
        with torch.set_grad_enabled(self.hparams.support_gradients):
            return self.build_references(*self.support_examples(indices, labels))

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.output_change_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def measure_references(self, images: torch.Tensor, output: DecoderOutput) -> None:
        """Accumulates ||Q_ref - Q_plain||^2 and ||Q_plain||^2 of the final queries (the class head's input)
        with and without the references on the test images: how much the modules change the prediction."""
        if not self.uses_references or self.test_references is None:
            return
        plain = self.network(images, None).queries.double()
        self.output_change_sums += torch.stack([(output.queries.double() - plain).square().sum(), plain.square().sum()])

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self.uses_references:
            return
        moved, size = self.all_gather(self.output_change_sums).reshape(-1, 2).sum(0).tolist()
        self.log("test/reference_output_change", math.sqrt(moved / size) if size > 0 else math.nan)
        self.log("test/reference_weight_change", relative_change(dict(self.network.named_parameters()), self.reference_start))

    @torch.no_grad()
    def references_for_test(self) -> References | None:
        if not self.uses_references:
            return None
        support_set = self.trainer.datamodule.support_set(self.shots, self.setting)
        indices, labels = [], []
        for index in range(len(support_set)):
            for label in support_set[index]["labels"].unique().tolist():
                indices.append(index)
                labels.append(label)
        return self.build_references(*self.support_examples(indices, labels))


class BaseModelEvaluation(FewShotFineTune):
    """The base stage's network tested as it is: bAP before fine-tuning, nAP without any novel training."""

    requires_fit = False
