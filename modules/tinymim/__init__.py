"""TinyMIM: distilling an MAE-pre-trained ViT into a small ViT by token relations, then fine-tuning.

Paper: S. Ren, F. Wei, Z. Zhang, H. Hu, "TinyMIM: An Empirical Study of Distilling MIM Pre-trained
Models", CVPR 2023 (arXiv 2301.01296). Official code: OliverRensu/TinyMIM (on facebookresearch/mae),
summarised in ``papers/tinymim.md``. ViT/MAE pieces: ``modules/tinymim/vit.py``; losses:
``modules/tinymim/losses.py``.

Two LightningModules:

* ``MAEPretraining`` (the cached, per-seed ``teacher`` stage): MAE on a timm ViT (mask 0.75,
  norm-pix loss, light decoder), AdamW (0.9, 0.95), per-step warm-up + half-cycle cosine to 0. Its
  artifact ``mae.pth`` is ``{"model": state_dict, "arch": {...}}`` in the official MAE layout. With
  ``checkpoint`` (and ``max_steps: 0``) the stage just converts an existing official/timm MAE
  checkpoint, which is how the ``full`` profile takes a real MAE-B teacher.
* ``TinyMIMStudent`` (every arm): a student ViT that is first pre-trained for ``pretrain_steps``
  optimizer steps with one objective, then fine-tuned with labels for the rest of the run's
  ``max_steps`` and tested (``test/top1`` + params / MACs / throughput from ``ImageClassifier``).
  ``pretrain`` picks the arm: ``relation`` (S-TinyMIM; with ``random_teacher`` the S-RandT
  control), ``feature`` (S-FD), ``cls`` (S-CLS), ``mae`` (S-MAE, student MIM from scratch) or
  ``none`` (S-sup: all steps supervised). Every arm runs the same fine-tune code and recipe.
  ``finetune_teacher`` (with ``pretrain: none``) fine-tunes the MAE teacher itself with the same
  recipe: the reference arm (the teacher stage saw the train images without labels).

Relation distillation (paper spec §2): the frozen teacher runs blocks 1…l−1 and the Q, K, V of
block l (``attn.qkv(norm1(x))``, split into H_T relation heads); the student does the same in its
last block with the same H_T heads; loss KL(R_QK^T‖R_QK^S) + KL(R_VV^T‖R_VV^S). Nothing after the
student's last ``attn.qkv`` is used. Teacher view: the datamodule's crop + flip; student view: the
same image plus ColorJitter(0.4, 0.4, 0.4).

Deviations from the official code / [inferred] parts:

1. Harness: a stage cannot (yet) consume another stage's artifact, so distillation and fine-tuning
   are two phases of one ``fit`` (manual optimisation, one AdamW per phase, each with its own
   warm-up + cosine schedule), not two cached stages. Only the teacher is a cached stage. The
   student's pre-trained weights are therefore not reused across fine-tune settings (nothing here
   needs that).
2. Scale per profile (widths, depths, patch 4 at 32², steps, batch) lives in the spec. Teacher
   layer and student layer are arguments (official: hard-coded 18/12 resp. 12).
3. Fine-tuning drops mixup / cutmix / RandAug / random erasing (paper spec §8: short runs); crop +
   flip (the datamodule's), label smoothing 0.1, layer-wise lr decay (timm ``param_groups_layer_decay``),
   linearly increasing drop-path (timm rule), cosine to ``min_lr`` after 5 % warm-up.
4. The position embedding is the fixed sin-cos table while pre-training / distilling (it is left out
   of that phase's optimizer; toggling ``requires_grad`` would break DDP) and is learnable when
   fine-tuning, as in MAE fine-tuning. timm's sin-cos builder is used; its
   channel order may differ from MAE's numpy helper (irrelevant for a checkpoint: the table is loaded).
5. ColorJitter is drawn per image as torchvision's (factors, random order) but applied batched
   (``modules/tinymim/augment.py``).
6. Under DDP the parameters a phase does not use get a zero-weighted term in the loss (instead of
   ``find_unused_parameters=True``); they are not in that phase's optimizer, so this changes nothing.
7. S-CLS target is the teacher's layer-l CLS token after an affine-free LayerNorm, as the FD target
   [inferred]; S-FD projects the student's last-block tokens (all tokens, CLS included) [inferred].
8. Inputs are normalised with the dataset's own mean/std (official: ImageNet's) and tested at the
   native 32x32 (no resize / centre crop); the teacher view is the datamodule's crop (pad 4) + flip.
9. S-MAE uses the MAE recipe (lr ``pretrain_lr``, no drop-path, plain view), decoder 64/2/4, the
   student's encoder output normalised by an extra LayerNorm that is dropped for fine-tuning (MAE's
   ``norm``, replaced by ``fc_norm``).
10. ``teacher_bf16`` runs the frozen teacher's forward pass under bf16 autocast (the official code
    runs teacher and student under fp16 AMP); the relation / feature targets are cast back to fp32.
    ``fused_adamw`` selects torch's fused AdamW kernel (the same update rule). Both are speed options
    and off by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from modules.common.classification import ImageClassifier
from modules.common.schedules import TimmStepSchedule, warmup_cosine
from modules.tinymim.augment import color_jitter
from modules.tinymim.losses import (cls_distillation_loss, feature_distillation_loss, mae_loss, patchify,
                                    random_masking, relation_distillation_loss)
from modules.tinymim.vit import (MAEDecoder, block_output, block_qkv, build_vit, encode_visible,
                                 load_mae_encoder, mae_checkpoint_state, set_drop_path)

PRETRAIN_OBJECTIVES = ("relation", "feature", "cls", "mae", "none")
DISTILLATION_OBJECTIVES = ("relation", "feature", "cls")


class MAEObjective(nn.Module):
    """Masked-autoencoding loss of a ViT: mask, encode the visible patches, decode, norm-pix MSE."""

    def __init__(self, vit: nn.Module, *, decoder_dim: int, decoder_depth: int, decoder_num_heads: int,
                 mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.patch_size = vit.patch_embed.patch_size[0]
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        num_patches = vit.patch_embed.num_patches
        self.decoder = MAEDecoder(encoder_dim=vit.embed_dim, num_patches=num_patches,
                                  patch_pixels=self.patch_size ** 2 * vit.patch_embed.proj.in_channels,
                                  decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                                  decoder_num_heads=decoder_num_heads)
        # A ViT in the fine-tune layout has no final norm; MAE's encoder ends with one.
        self.encoder_norm = nn.LayerNorm(vit.embed_dim, eps=1e-6) if isinstance(vit.norm, nn.Identity) else None

    def forward(self, vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
        ids_keep, mask, ids_restore = random_masking(images.shape[0], vit.patch_embed.num_patches, self.mask_ratio,
                                                     device=images.device)
        latent = encode_visible(vit, images, ids_keep, final_norm=self.encoder_norm)
        pred = self.decoder(latent, ids_restore)
        return mae_loss(pred, patchify(images, self.patch_size), mask, norm_pix=self.norm_pix_loss)


def _vit_arch(embed_dim: int, depth: int, num_heads: int, image_size: int, patch_size: int, in_channels: int) -> dict:
    return {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "image_size": image_size,
            "patch_size": patch_size, "in_channels": in_channels}


class MAEPretraining(TimmStepSchedule, pl.LightningModule):
    """MAE pre-training of a ViT (the teacher stage); see the module docstring."""

    def __init__(self, *, embed_dim: int = 128, depth: int = 6, num_heads: int = 4, image_size: int = 32,
                 patch_size: int = 4, in_channels: int = 3, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_num_heads: int = 4, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 lr: float = 1.5e-3, weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.95),
                 warmup_fraction: float = 0.05, checkpoint: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.arch = _vit_arch(embed_dim, depth, num_heads, image_size, patch_size, in_channels)
        self.vit = build_vit(**self.arch)
        self.vit.pos_embed.requires_grad_(False)  # fixed sin-cos while pre-training
        self.objective = MAEObjective(self.vit, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                                      decoder_num_heads=decoder_num_heads, mask_ratio=mask_ratio,
                                      norm_pix_loss=norm_pix_loss)
        if checkpoint is not None:
            state = mae_checkpoint_state(checkpoint)
            load_mae_encoder(self.vit, state, source=str(checkpoint))
            decoder = {key: value for key, value in state.items() if key in self.objective.decoder.state_dict()}
            self.objective.decoder.load_state_dict(decoder, strict=False)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _ = batch
        loss = self.objective(self.vit, images)
        self.log("train/mae_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        groups = param_groups_weight_decay(self, weight_decay=self.hparams.weight_decay,
                                           no_weight_decay_list=("vit.cls_token", "objective.decoder.mask_token"))
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = warmup_cosine(optimizer, total_steps=total, warmup_steps=int(self.hparams.warmup_fraction * total))
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder + decoder in the official MAE key layout."""
        return {**self.vit.state_dict(), **self.objective.decoder.state_dict()}

    def save_stage_artifact(self, folder: str | Path) -> Path:
        path = Path(folder) / "mae.pth"
        torch.save({"model": {k: v.detach().cpu() for k, v in self.official_state_dict().items()},
                    "arch": self.arch}, path)
        return path


class TinyMIMStudent(TimmStepSchedule, ImageClassifier):
    """Pre-train a student ViT with one objective (``pretrain``), then fine-tune it; see the module docstring."""

    def __init__(self, *, pretrain: str = "relation", pretrain_steps: int = 500,
                 teacher_checkpoint: str | None = None, random_teacher: bool = False,
                 teacher_embed_dim: int = 128, teacher_depth: int = 6, teacher_num_heads: int = 4,
                 teacher_layer: int | None = None, relation_heads: int | None = None,
                 embed_dim: int = 64, depth: int = 4, num_heads: int = 2, patch_size: int = 4,
                 num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 pretrain_lr: float = 1.0e-3, pretrain_weight_decay: float = 0.05,
                 pretrain_betas: tuple[float, float] = (0.9, 0.95), pretrain_drop_path: float = 0.1,
                 color_jitter: float = 0.4, mask_ratio: float = 0.75, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_num_heads: int = 4, finetune_lr: float = 2.0e-3, finetune_weight_decay: float = 0.05,
                 layer_decay: float = 0.75, finetune_drop_path: float = 0.1, label_smoothing: float = 0.1,
                 warmup_fraction: float = 0.05, min_lr: float = 1.0e-6, finetune_teacher: bool = False,
                 teacher_bf16: bool = False, fused_adamw: bool = False) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                         label_smoothing=label_smoothing)
        if pretrain not in PRETRAIN_OBJECTIVES:
            raise ValueError(f"pretrain must be one of {', '.join(PRETRAIN_OBJECTIVES)}, got {pretrain!r}")
        if finetune_teacher and (pretrain != "none" or random_teacher):
            raise ValueError("finetune_teacher fine-tunes the MAE teacher itself: it needs pretrain: none and "
                             "a trained teacher (random_teacher: false)")
        if pretrain == "none":
            pretrain_steps = 0  # noqa: F841 - save_hyperparameters reads the locals: S-sup records 0 pre-training steps
        self.save_hyperparameters()
        self.automatic_optimization = False  # two phases, one optimizer each
        if finetune_teacher:
            self.network = self._teacher_for_finetuning()
        else:
            self.network = build_vit(embed_dim=embed_dim, depth=depth, num_heads=num_heads, image_size=image_size,
                                     patch_size=patch_size, in_channels=in_channels, num_classes=num_classes,
                                     global_pool="avg")
        self.teacher: nn.Module | None = None
        self.pretrain_head: nn.Module | None = None
        if pretrain in DISTILLATION_OBJECTIVES:
            self.teacher = self._build_teacher()
            teacher_dim = self.teacher.embed_dim
            self.teacher_layer = teacher_layer or len(self.teacher.blocks)
            self.relation_heads = relation_heads or self.teacher.blocks[0].attn.num_heads
            if not 1 <= self.teacher_layer <= len(self.teacher.blocks):
                raise ValueError(f"teacher_layer {self.teacher_layer} outside the teacher's 1..{len(self.teacher.blocks)}")
            if pretrain in ("feature", "cls"):
                self.pretrain_head = nn.Linear(embed_dim, teacher_dim)
        elif pretrain == "mae":
            self.pretrain_head = MAEObjective(self.network, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                                              decoder_num_heads=decoder_num_heads, mask_ratio=mask_ratio)

    # -- construction ------------------------------------------------------------------------------
    def _teacher_arch_and_state(self) -> tuple[dict, dict[str, torch.Tensor] | None]:
        """The teacher's architecture (the checkpoint's ``arch`` wins over the ``teacher_*`` args) and
        its MAE state dict (None for the random-init control)."""
        hp = self.hparams
        if hp.teacher_checkpoint is None and not hp.random_teacher:
            raise ValueError("TinyMIMStudent needs teacher_checkpoint for distillation or finetune_teacher: declare "
                             "the teacher stage (stages: [{name: teacher, ..., pass_as: teacher_checkpoint}]) "
                             "or set random_teacher: true")
        arch = _vit_arch(hp.teacher_embed_dim, hp.teacher_depth, hp.teacher_num_heads, hp.image_size,
                         hp.patch_size, hp.in_channels)
        if hp.teacher_checkpoint is None or hp.random_teacher:
            return arch, None
        payload = torch.load(hp.teacher_checkpoint, map_location="cpu", weights_only=True) \
            if Path(hp.teacher_checkpoint).is_file() else {}
        arch = {**arch, **payload.get("arch", {})} if isinstance(payload, dict) else arch
        return arch, mae_checkpoint_state(hp.teacher_checkpoint)

    def _build_teacher(self) -> nn.Module:
        arch, state = self._teacher_arch_and_state()
        teacher = build_vit(**arch)
        if state is not None:
            load_mae_encoder(teacher, state, source=str(self.hparams.teacher_checkpoint))
        teacher.requires_grad_(False)
        return teacher.eval()

    def _teacher_for_finetuning(self) -> nn.Module:
        """The MAE teacher's encoder in the fine-tune layout (GAP + ``fc_norm`` + a fresh head)."""
        arch, state = self._teacher_arch_and_state()
        network = build_vit(**arch, num_classes=self.hparams.num_classes, global_pool="avg")
        load_mae_encoder(network, state, source=str(self.hparams.teacher_checkpoint))
        return network

    # -- phases ------------------------------------------------------------------------------------
    @property
    def in_pretraining(self) -> bool:
        return self.trainer.global_step < self.hparams.pretrain_steps

    def on_fit_start(self) -> None:
        total = int(self.trainer.estimated_stepping_batches)
        if total <= self.hparams.pretrain_steps:
            raise ValueError(f"trainer max_steps ({total}) must exceed pretrain_steps ({self.hparams.pretrain_steps}) "
                             "to leave steps for fine-tuning")
        self.total_steps = total
        self._enter_phase(pretraining=self.in_pretraining)

    def _enter_phase(self, *, pretraining: bool) -> None:
        depth = len(self.network.blocks)
        if pretraining:  # constant drop-path, none in the last block (only its qkv is used)
            rate = self.hparams.pretrain_drop_path
            set_drop_path(self.network, [rate] * (depth - 1) + [0.0])
        else:  # MAE fine-tune: the timm linear rule
            set_drop_path(self.network, torch.linspace(0, self.hparams.finetune_drop_path, depth).tolist())
        self.pretraining_phase = pretraining

    def _student_view(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's view plus ColorJitter, applied in [0, 1] pixel space, per image."""
        datamodule = getattr(self._trainer, "datamodule", None)  # None outside a Trainer (unit tests)
        if not self.hparams.color_jitter or datamodule is None or not getattr(datamodule, "normalize", False):
            return images
        mean = torch.tensor(datamodule.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(datamodule.std, device=images.device).view(1, -1, 1, 1)
        pixels = (images * std + mean).clamp(0, 1)
        return (color_jitter(pixels, self.hparams.color_jitter) - mean) / std

    def pretrain_loss(self, images: torch.Tensor) -> torch.Tensor:
        objective = self.hparams.pretrain
        if objective == "mae":
            return self.pretrain_head(self.network, images)
        student_images = self._student_view(images)
        depth = len(self.network.blocks)
        teacher_autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.hparams.teacher_bf16)
        with torch.no_grad(), teacher_autocast:
            teacher_pass = block_qkv if objective == "relation" else block_output
            target = teacher_pass(self.teacher, images, self.teacher_layer).float()
        if objective == "relation":
            student_qkv = block_qkv(self.network, student_images, depth)
            return relation_distillation_loss(target, student_qkv, num_heads=self.relation_heads)
        student_tokens = self.pretrain_head(block_output(self.network, student_images, depth))
        if objective == "feature":
            return feature_distillation_loss(student_tokens, target)
        return cls_distillation_loss(student_tokens[:, 0], target[:, 0])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        pretraining = self.in_pretraining
        if pretraining != self.pretraining_phase:
            self._enter_phase(pretraining=pretraining)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        optimizer = optimizers[0] if pretraining else optimizers[-1]
        if pretraining:
            loss = self.pretrain_loss(images)
            self.log("train/pretrain_loss", loss, prog_bar=True)
        else:
            loss = self.classification_loss(self.network(images), labels)
            self.log("train/finetune_loss", loss, prog_bar=True)
        self._set_lr(pretraining=pretraining)
        optimizer.zero_grad(set_to_none=True)
        # Zero-weighted touch of every trainable parameter: DDP then sees no unused ones (deviation 6).
        self.manual_backward(loss + 0.0 * sum(p.sum() for p in self.parameters() if p.requires_grad))
        optimizer.step()
        return loss.detach()

    def _set_lr(self, *, pretraining: bool) -> None:
        """Each phase follows its own warm-up + cosine (MAE's per-iteration lr_sched), counted in its own steps."""
        schedules = self.lr_schedulers()
        schedules = schedules if isinstance(schedules, list) else [schedules]
        step = self.trainer.global_step - (0 if pretraining else self.hparams.pretrain_steps)
        (schedules[0] if pretraining else schedules[-1]).step_update(num_updates=step)

    # -- optimizers --------------------------------------------------------------------------------
    def pretrain_parameter_groups(self) -> list[dict[str, Any]]:
        """The student parameters the objective trains (+ its head); frozen positions excluded."""
        modules = nn.ModuleDict({"network": self.network})
        if self.pretrain_head is not None:
            modules["head"] = self.pretrain_head
        groups = param_groups_weight_decay(modules, weight_decay=self.hparams.pretrain_weight_decay,
                                           no_weight_decay_list=("network.cls_token", "head.decoder.mask_token"))
        unused = self._unused_in_pretraining(modules)
        return [{**group, "params": [p for p in group["params"] if id(p) not in unused]} for group in groups]

    def _unused_in_pretraining(self, modules: nn.ModuleDict) -> set[int]:
        net = self.network
        unused = [net.pos_embed, *net.fc_norm.parameters(), *net.head.parameters()]
        if self.hparams.pretrain == "relation":  # only the last block's norm1 + qkv are reached
            last = net.blocks[-1]
            unused += [*last.attn.proj.parameters(), *last.norm2.parameters(), *last.mlp.parameters()]
        return {id(p) for p in unused}

    def configure_optimizers(self):
        hp = self.hparams
        finetune_groups = param_groups_layer_decay(self.network, weight_decay=hp.finetune_weight_decay,
                                                   no_weight_decay_list=self.network.no_weight_decay(),
                                                   layer_decay=hp.layer_decay)
        fused = {"fused": True} if hp.fused_adamw else {}  # one kernel per step instead of per-tensor loops
        finetune = torch.optim.AdamW(finetune_groups, lr=hp.finetune_lr, betas=(0.9, 0.999), **fused)
        finetune_steps = max(1, int(self.trainer.estimated_stepping_batches) - hp.pretrain_steps)
        finetune_schedule = warmup_cosine(finetune, total_steps=finetune_steps, lr_min=hp.min_lr,
                                          warmup_steps=int(hp.warmup_fraction * finetune_steps))
        if hp.pretrain_steps == 0:
            return {"optimizer": finetune, "lr_scheduler": finetune_schedule}
        pretrain = torch.optim.AdamW(self.pretrain_parameter_groups(), lr=hp.pretrain_lr,
                                     betas=tuple(hp.pretrain_betas), **fused)
        pretrain_schedule = warmup_cosine(pretrain, total_steps=hp.pretrain_steps,
                                          warmup_steps=int(hp.warmup_fraction * hp.pretrain_steps))
        return [pretrain, finetune], [pretrain_schedule, finetune_schedule]


if __name__ == "__main__":
    student = TinyMIMStudent(pretrain="relation", random_teacher=True, teacher_layer=5)
    print(student.network, f"teacher layer {student.teacher_layer}, relation heads {student.relation_heads}")
