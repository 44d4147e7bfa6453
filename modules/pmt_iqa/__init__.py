"""PMT-IQA: progressive multi-task blind image quality assessment, and its same-backbone baselines.

Paper: Q. Pan, N. Guo, L. Qingge, J. Zhang, P. Yang, "PMT-IQA: Progressive Multi-task Learning for
Blind Image Quality Assessment", PRICAI 2023 (LNAI 14327; arXiv:2301.01182). Official code:
pqy000/PMT-IQA (``models.py``: ``MultiTaskIQANet``; ``MultiTaskIQASolver.py``; ``learn.py``),
summarised in ``papers/pmt_iqa.md``.

* ``PMTIQA`` — a timm ResNet (random init; ``checkpoint_path`` loads local weights) → **MS**
  multi-scale features: stages C1-C3 each 1×1 conv (no bias, 16/32/64 channels) → average pool to
  ``pool_sizes`` (official 8/4/2 at 224², i.e. AvgPool(7, 7)) → FC → 28-d; C4 pooled to 1×1 → FC →
  112 − 3·28 = 28-d; concatenated to v (112-d) → shared MLP FC 112→112, LeakyReLU, FC 112→14,
  LeakyReLU → h → regression head FC 14→1 and classification head FC 14→14, LeakyReLU, FC 14→10.
  Loss of epoch t: ``λ_r(t)·L1(ŷ, y) + λ_c(t)·CE(ĉ, grade(y))``. ``schedule``:
  ``progressive`` (the paper: λ_r = t/(T−1), λ_c = 1 − λ_r, easy classification first, regression
  last; the official ``--dyn_weight`` flag that turns it on defaults to *off*, and
  ``type=bool`` makes ``--dyn_weight False`` *on* — here the schedule is an explicit string),
  ``fixed`` (``regression_weight`` / ``classification_weight``; the official off-flag defaults are
  0.942 / 0.960), ``reversed`` (hard → easy sanity ablation). ``multi_scale=False`` replaces MS by
  C4 alone (pooled 1×1 → FC → 28-d, MS's own C4 branch; ``last_stage_dim`` changes the width), the
  "without MS" ablation.
* ``SingleTaskRegressionIQA`` — the same backbone, global-average-pooled C4 → FC C4→112, LeakyReLU,
  FC 112→14, LeakyReLU, FC 14→1, L1 loss only (paper-spec baseline 1).

Grades (``quality_grades``) bin the label by the datamodule's ``grade_rule``: LIVE and the
synthetic set floor(DMOS/10); CSIQ round(10·DMOS); LIVE-C and KonIQ round(MOS/10); BID
floor(MOS/0.5); every grade clamped to 0..9 (the official binning can give 10).

Optimisation (``learn.py``): Adam (coupled L2 weight decay 5e-4), batch 12 patches; the official
solver re-creates Adam after every epoch with lr0/10^floor(t/6), i.e. epoch e ≥ 1 trains at
lr0/10^floor((e−1)/step) with fresh moments (``reset_adam_each_epoch``; ``lr_step_epochs`` = 6).
Test: the model in eval mode scores each of an image's crops; the image score is their mean;
SRCC, PLCC and the logistic-fitted PLCC (``modules/pmt_iqa/iqa_metrics.py``) over test images.

Deviations from the official code (each deliberate):

1. Backbone from timm (``features_only``), randomly initialised: no ImageNet weights offline, so
   absolute SRCC is not comparable with the paper's. The cpu profile uses ResNet-18 at half
   width (timm ``channels=(32, 64, 128, 256)``, ``stem_width=32``), 64² patches and adaptive pools
   4/2/1/1 (paper spec small-scale profile); the 1×1 reductions stay 16/32/64.
2. Reported numbers are of the model after the last epoch; the official solver keeps the best test
   SRCC over epochs (selection on test labels). Each seed draws its own random content split
   (``split_seed: null`` follows the run seed), as the official 10 random splits, but the
   leaderboard reports mean ± std over seeds; the paper's median over splits is computed from the
   same records (spec claim notes). With ``val_fraction`` > 0 (calibration sweeps only) the
   datamodule holds validation contents out of training and ``learning_curve.csv`` records the
   validation SRCC/PLCC after every epoch (the official code has no validation split).
3. Test crops are deterministic (seeded per image) instead of random; the horizontal flip is per
   patch in the batch transform.
4. Every loader returns single patches (the official ``torch.cat(img_list)`` batch format breaks on
   every folder except BID's); KonIQ's ``Resize((512, 384))`` is left to the datamodule's ``resize``.
5. [inferred] Grade rules for TID2013 (MOS 0-9: floor(MOS/0.9)) and KADID-10k (MOS 1-5:
   floor((MOS−1)/0.4)), which the paper does not use: 10 equal-width bins over the nominal scale.
6. [inferred] The "without MS" arm keeps MS's own C4 branch (C4 → FC → 28-d, ``last_stage_dim``)
   and feeds it to the shared MLP (FC 28→112), so it is MS with the C1-C3 branches removed and C4
   gets the same capacity in both arms (an earlier 112-d C4 FC gave C4 4× the capacity it has inside
   MS); the single-task MLP reuses the 112/14 widths of the shared MLP.
7. The LDA convs/FCs get Kaiming-normal init as in ``models.py``; the MLP and heads keep PyTorch's
   default init (the official ``MultiTaskIQANet`` init loop skips them too: it starts at index 4).
8. The logistic-fitted PLCC (VQEG 5-parameter) is an extra column; ``plcc`` is the raw PLCC of the
   official code.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch import nn

from modules.common.classification import count_parameters
from modules.pmt_iqa.iqa_metrics import IQACorrelations

SCHEDULES = ("progressive", "fixed", "reversed")
NUM_GRADES = 10


# -- labels and schedule ---------------------------------------------------------------------------
def quality_grades(scores: torch.Tensor, rule: str, *, num_grades: int = NUM_GRADES) -> torch.Tensor:
    """Quality grade (int64) of each label under a dataset's binning rule, clamped to 0..num_grades-1."""
    if rule == "live":
        grades = torch.floor(scores / 10)
    elif rule == "csiq":
        grades = torch.round(scores * 10)
    elif rule == "mos100":
        grades = torch.round(scores / 10)
    elif rule == "bid":
        grades = torch.floor(scores / 0.5)
    elif rule == "tid2013":
        grades = torch.floor(scores / 0.9)
    elif rule == "kadid":
        grades = torch.floor((scores - 1.0) / 0.4)
    else:
        raise ValueError(f"unknown grade rule {rule!r} (known: live, csiq, mos100, bid, tid2013, kadid)")
    return grades.clamp(0, num_grades - 1).long()


def task_weights(epoch: int, max_epochs: int, *, schedule: str, regression_weight: float = 1.0,
                 classification_weight: float = 1.0) -> tuple[float, float]:
    """(λ_regression, λ_classification) of an epoch. ``progressive``: t/(T−1) and 1 − t/(T−1)."""
    if schedule == "fixed":
        return regression_weight, classification_weight
    progress = epoch / (max_epochs - 1) if max_epochs > 1 else 1.0
    if schedule == "progressive":
        return progress, 1.0 - progress
    if schedule == "reversed":
        return 1.0 - progress, progress
    raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")


def official_lr_factor(epoch: int, step_epochs: int) -> float:
    """The official solver trains epoch 0 at lr0 and re-creates Adam after epoch t with lr0/10^(t//step),
    so epoch e >= 1 runs at lr0 / 10^((e-1)//step)."""
    return 0.1 ** (max(epoch - 1, 0) // step_epochs)


# -- blocks ----------------------------------------------------------------------------------------
def _kaiming(module: nn.Module) -> nn.Module:
    nn.init.kaiming_normal_(module.weight)
    return module


class MultiScaleFeatures(nn.Module):
    """HyperIQA's local-distortion-aware pooling used as features: C1-C3 → 1×1 conv → pool → FC,
    C4 → pool → FC; concatenated."""

    def __init__(self, *, stage_channels: Sequence[int], reduced_channels: Sequence[int] = (16, 32, 64),
                 pool_sizes: Sequence[int] = (8, 4, 2, 1), scale_dim: int = 28, out_dim: int = 112) -> None:
        super().__init__()
        if len(stage_channels) != 4 or len(reduced_channels) != 3 or len(pool_sizes) != 4:
            raise ValueError("MultiScaleFeatures needs 4 stage channels, 3 reduced channels and 4 pool sizes")
        self.reduce = nn.ModuleList(_kaiming(nn.Conv2d(cin, cout, 1, bias=False))
                                    for cin, cout in zip(stage_channels[:3], reduced_channels))
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(size) for size in pool_sizes)
        widths = [c * s * s for c, s in zip([*reduced_channels, stage_channels[3]], pool_sizes)]
        dims = [scale_dim] * 3 + [out_dim - 3 * scale_dim]
        self.fcs = nn.ModuleList(_kaiming(nn.Linear(width, dim)) for width, dim in zip(widths, dims))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        mapped = [*(reduce(f) for reduce, f in zip(self.reduce, features[:3])), features[3]]
        return torch.cat([fc(pool(f).flatten(1)) for fc, pool, f in zip(self.fcs, self.pools, mapped)], dim=1)


class LastStageFeatures(nn.Module):
    """C4 only: global average pool → FC (the "without MS" ablation; at ``out_dim`` = 112 − 3·28 it is
    exactly MS's C4 branch, so removing MS removes only the C1-C3 branches)."""

    def __init__(self, *, stage_channels: Sequence[int], out_dim: int = 112) -> None:
        super().__init__()
        self.fc = _kaiming(nn.Linear(stage_channels[3], out_dim))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(features[3].mean(dim=(2, 3)))


def quality_mlp(in_dim: int, hidden_dim: int = 112, out_dim: int = 14) -> nn.Sequential:
    """The shared MLP: FC in→112, LeakyReLU, FC 112→14, LeakyReLU."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LeakyReLU(), nn.Linear(hidden_dim, out_dim), nn.LeakyReLU())


def create_backbone(name: str, *, checkpoint_path: str | None, backbone_kwargs: dict[str, Any] | None) -> nn.Module:
    """A timm feature extractor returning the four stage outputs C1..C4 (never downloads weights)."""
    backbone = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4),
                                 **(backbone_kwargs or {}))
    if checkpoint_path:
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone checkpoint {path} does not exist; pass a local timm/torchvision "
                                    f"{name} state dict or leave checkpoint_path empty (random init)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        if not set(state) & set(backbone.state_dict()):
            raise ValueError(f"backbone checkpoint {path} shares no parameter names with timm {name}")
        backbone.load_state_dict(state, strict=False)  # a classifier checkpoint's fc.* keys are unused
    return backbone


def write_learning_curve(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """One CSV row per validated epoch: epoch, then the metric columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")


# -- LightningModules ------------------------------------------------------------------------------
class BlindIQAModule(L.LightningModule):
    """Backbone, official optimisation, crop-averaged testing and IQA metrics; subclasses define
    ``forward`` (→ dict with ``score`` [B]) and ``training_loss``."""

    def __init__(self, *, backbone: str, backbone_kwargs: dict[str, Any] | None, checkpoint_path: str | None,
                 lr: float, weight_decay: float, lr_step_epochs: int, reset_adam_each_epoch: bool) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, checkpoint_path=checkpoint_path, backbone_kwargs=backbone_kwargs)
        self.stage_channels = self.backbone.feature_info.channels()
        self.lr, self.weight_decay = lr, weight_decay
        self.lr_step_epochs, self.reset_adam_each_epoch = lr_step_epochs, reset_adam_each_epoch
        self.test_correlations = IQACorrelations()
        self.val_correlations = IQACorrelations()
        self.learning_curve: list[dict[str, float]] = []  # per-epoch validation metrics, when validation runs

    def training_loss(self, outputs: dict[str, torch.Tensor], scores: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, scores = batch
        losses = self.training_loss(self(images), scores)
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, prog_bar=False)
        return losses["loss"]

    def on_train_epoch_start(self) -> None:
        # The official solver builds a new Adam after every epoch: the moments start from zero again.
        if self.reset_adam_each_epoch and self.current_epoch > 0:
            optimizer = self.optimizers()
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.state = defaultdict(dict)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: official_lr_factor(epoch, self.lr_step_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    @torch.no_grad()
    def predict_image_scores(self, crops: torch.Tensor) -> torch.Tensor:
        """[B, K, 3, p, p] crops → [B] image scores (mean over an image's crops)."""
        batch, crops_per_image = crops.shape[:2]
        return self(crops.flatten(0, 1))["score"].view(batch, crops_per_image).mean(dim=1)

    def test_step(self, batch, batch_idx: int) -> None:
        crops, scores, image_index = batch
        self.test_correlations.update(self.predict_image_scores(crops), scores, image_index=image_index)

    def validation_step(self, batch, batch_idx: int) -> None:
        crops, scores, image_index = batch
        self.val_correlations.update(self.predict_image_scores(crops), scores, image_index=image_index)

    def on_validation_epoch_end(self) -> None:
        values = {name: float(value) for name, value in self.val_correlations.compute().items()}
        self.val_correlations.reset()
        if not self.trainer.sanity_checking:
            self.learning_curve.append({"epoch": self.current_epoch, **values})
        self.log_dict({f"val/{name}": value for name, value in values.items()}, batch_size=1, sync_dist=True)

    def on_fit_end(self) -> None:
        # The learning curve (validation SRCC/PLCC after each epoch) is a file next to the record.
        folder = getattr(self, "artifact_dir", None)
        if self.learning_curve and folder is not None and self.global_rank == 0:
            write_learning_curve(Path(folder) / "learning_curve.csv", self.learning_curve)

    def on_test_epoch_end(self) -> None:
        values = self.test_correlations.compute()  # gathered over ranks: equal everywhere
        self.test_correlations.reset()
        values["params_m"] = count_parameters(self) / 1e6
        self.log_dict({f"test/{name}": float(value) for name, value in values.items()}, batch_size=1, sync_dist=True)


class PMTIQA(BlindIQAModule):
    """PMT-IQA (see the module docstring): MS features, shared MLP, regression + grade heads."""

    def __init__(self, backbone: str = "resnet50", backbone_kwargs: dict[str, Any] | None = None,
                 checkpoint_path: str | None = None, multi_scale: bool = True, schedule: str = "progressive",
                 regression_weight: float = 1.0, classification_weight: float = 1.0,
                 reduced_channels: list[int] = (16, 32, 64), pool_sizes: list[int] = (8, 4, 2, 1),
                 scale_dim: int = 28, feature_dim: int = 112, last_stage_dim: int | None = None,
                 hidden_dim: int = 14, num_grades: int = NUM_GRADES,
                 grade_rule: str | None = None, lr: float = 1.0933e-4, weight_decay: float = 5e-4,
                 lr_step_epochs: int = 6, reset_adam_each_epoch: bool = True) -> None:
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs, checkpoint_path=checkpoint_path, lr=lr,
                         weight_decay=weight_decay, lr_step_epochs=lr_step_epochs,
                         reset_adam_each_epoch=reset_adam_each_epoch)
        self.save_hyperparameters()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
        if multi_scale:
            self.features = MultiScaleFeatures(stage_channels=self.stage_channels, reduced_channels=reduced_channels,
                                               pool_sizes=pool_sizes, scale_dim=scale_dim, out_dim=feature_dim)
            features_dim = feature_dim
        else:  # C4 keeps the width it has inside MS (default 112 − 3·28 = 28): equal capacity per scale
            features_dim = last_stage_dim if last_stage_dim is not None else feature_dim - 3 * scale_dim
            self.features = LastStageFeatures(stage_channels=self.stage_channels, out_dim=features_dim)
        self.shared = quality_mlp(features_dim, feature_dim, hidden_dim)
        self.regression_head = nn.Linear(hidden_dim, 1)
        self.grade_head = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(), nn.Linear(hidden_dim, num_grades))
        self.schedule, self.num_grades = schedule, num_grades
        self.regression_weight, self.classification_weight = regression_weight, classification_weight
        self.grade_rule = grade_rule

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.grade_rule is None:  # the label scale is a property of the data
            self.grade_rule = getattr(datamodule, "grade_rule", None)
        if self.grade_rule is None:
            raise ValueError("PMTIQA needs a grade_rule: set model.init_args.grade_rule or use datamodules.iqa.IQADataModule")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.shared(self.features(self.backbone(images)))
        return {"score": self.regression_head(hidden).squeeze(1), "grade_logits": self.grade_head(hidden)}

    def current_task_weights(self) -> tuple[float, float]:
        return task_weights(self.current_epoch, self.trainer.max_epochs, schedule=self.schedule,
                            regression_weight=self.regression_weight, classification_weight=self.classification_weight)

    def training_loss(self, outputs: dict[str, torch.Tensor], scores: torch.Tensor) -> dict[str, torch.Tensor]:
        weight_regression, weight_classification = self.current_task_weights()
        l1 = F.l1_loss(outputs["score"], scores)
        ce = F.cross_entropy(outputs["grade_logits"], quality_grades(scores, self.grade_rule, num_grades=self.num_grades))
        return {"loss": weight_regression * l1 + weight_classification * ce, "l1": l1, "ce": ce,
                "lambda_regression": torch.tensor(weight_regression)}


class SingleTaskRegressionIQA(BlindIQAModule):
    """The same backbone, global-average-pooled C4 → MLP → score, trained with L1 only."""

    def __init__(self, backbone: str = "resnet50", backbone_kwargs: dict[str, Any] | None = None,
                 checkpoint_path: str | None = None, feature_dim: int = 112, hidden_dim: int = 14,
                 lr: float = 1.0933e-4, weight_decay: float = 5e-4, lr_step_epochs: int = 6,
                 reset_adam_each_epoch: bool = True) -> None:
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs, checkpoint_path=checkpoint_path, lr=lr,
                         weight_decay=weight_decay, lr_step_epochs=lr_step_epochs,
                         reset_adam_each_epoch=reset_adam_each_epoch)
        self.save_hyperparameters()
        self.head = nn.Sequential(quality_mlp(self.stage_channels[3], feature_dim, hidden_dim), nn.Linear(hidden_dim, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.backbone(images)[3].mean(dim=(2, 3))
        return {"score": self.head(pooled).squeeze(1)}

    def training_loss(self, outputs: dict[str, torch.Tensor], scores: torch.Tensor) -> dict[str, torch.Tensor]:
        l1 = F.l1_loss(outputs["score"], scores)
        return {"loss": l1, "l1": l1}


if __name__ == "__main__":
    model = PMTIQA(backbone="resnet18", backbone_kwargs={"channels": (32, 64, 128, 256), "stem_width": 32},
                   pool_sizes=(4, 2, 1, 1), grade_rule="live")
    print(model(torch.zeros(2, 3, 64, 64))["score"].shape, f"{count_parameters(model) / 1e6:.2f}M parameters")
