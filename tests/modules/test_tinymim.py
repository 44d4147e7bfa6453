"""TinyMIM's hand-written parts against hand-computed values: MAE masking / patch order / norm-pix
loss, the Q-K + V-V relation KL (heads, scale, layer choice), the FD / CLS targets, MAE-layout
checkpoint loading (official and plain timm state dicts), and the two-phase student on tiny data."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from datamodules.images import ImageClassificationDataModule
from modules.tinymim import MAEPretraining, TinyMIMStudent
from modules.tinymim.losses import (cls_distillation_loss, feature_distillation_loss, mae_loss, patchify,
                                    random_masking, relation_distillation_loss, relation_log_probs, split_heads)
from modules.tinymim.vit import block_qkv, build_vit, load_mae_encoder, mae_checkpoint_state

TINY_TEACHER = {"teacher_embed_dim": 32, "teacher_depth": 3, "teacher_num_heads": 4}
TINY_STUDENT = {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8}


# -- MAE pieces ---------------------------------------------------------------------------------
def test_random_masking_keeps_a_quarter_and_restores_the_order():
    ids_keep, mask, ids_restore = random_masking(3, 64, 0.75, generator=torch.Generator().manual_seed(0))
    assert ids_keep.shape == (3, 16) and mask.shape == (3, 64)
    assert mask.sum(1).tolist() == [48.0, 48.0, 48.0]  # 75 % of 64 patches masked
    assert torch.all(torch.gather(mask, 1, ids_keep) == 0)  # the kept patches are the unmasked ones
    shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(torch.gather(shuffle, 1, ids_restore), torch.arange(64).expand(3, -1))


def test_patchify_uses_mae_order():
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # 2 channels, 4x4
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 8)
    # patch 0 = rows 0-1, cols 0-1; pixels row-major, channels innermost: (c0, c1) per pixel
    assert patches[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    assert patches[0, 1].tolist() == [2, 18, 3, 19, 6, 22, 7, 23]  # the next patch to the right


def test_norm_pix_loss_on_a_hand_computed_case():
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 9.0]]])
    pred = torch.zeros(1, 2, 4)
    mask = torch.tensor([[1.0, 0.0]])  # only patch 0 is masked, so only it counts
    # patch 0: mean 2.5, unbiased var 5/3; normalised squares sum to 5 / (5/3) = 3 -> mean 0.75
    assert mae_loss(pred, target, mask, norm_pix=True).item() == pytest.approx(0.75, abs=1e-5)
    assert mae_loss(pred, target, mask, norm_pix=False).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert mae_loss(pred, target, torch.tensor([[1.0, 1.0]]), norm_pix=False).item() == pytest.approx((7.5 + 39) / 2)  # (25·3 + 81) / 4 = 39


# -- relation distillation ----------------------------------------------------------------------
def test_relation_loss_matches_a_hand_computed_kl():
    # one head, two tokens, d = 1: teacher q = k = v = (1, 0); the student all zeros (uniform rows).
    teacher = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])  # [B=1, N=2, 3*D] with D = 1
    student = torch.zeros(1, 2, 3)
    p = math.e / (math.e + 1)  # teacher row 0 = softmax(1, 0); row 1 = softmax(0, 0) = uniform
    kl_row0 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    # QK and VV maps are the same here: 2 x (mean over the 2 rows of (kl_row0, 0))
    assert relation_distillation_loss(teacher, student, num_heads=1).item() == pytest.approx(kl_row0, rel=1e-5)
    assert relation_distillation_loss(teacher, teacher, num_heads=1).item() == pytest.approx(0.0, abs=1e-7)


def test_relation_heads_and_per_model_scale():
    teacher_qkv, student_qkv = torch.randn(2, 17, 3 * 32), torch.randn(2, 17, 3 * 16)
    q_t, _, _ = split_heads(teacher_qkv, 4)
    q_s, k_s, v_s = split_heads(student_qkv, 4)
    assert q_t.shape == (2, 4, 17, 8) and q_s.shape == (2, 4, 17, 4)  # same heads, own head dims
    log_qk, log_vv = relation_log_probs(q_s, k_s, v_s)
    assert log_qk.shape == log_vv.shape == (2, 4, 17, 17)
    expected = torch.softmax(q_s @ k_s.transpose(-2, -1) / 2.0, dim=-1)  # 1/sqrt(4)
    assert torch.allclose(log_qk.exp(), expected, atol=1e-6)
    # the second third of qkv is K: head 1 of K is columns 16 + 4..8
    assert torch.equal(k_s[:, 1], student_qkv[:, :, 20:24])
    with pytest.raises(ValueError, match="do not divide"):
        split_heads(student_qkv, 3)


def test_block_qkv_is_what_timm_attention_sees_at_the_chosen_layer():
    torch.manual_seed(0)
    vit = build_vit(embed_dim=32, depth=3, num_heads=4, patch_size=8).eval()
    images = torch.randn(2, 3, 32, 32)
    seen = {}
    hooks = [vit.blocks[i].attn.qkv.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
             for i in range(3)]
    vit.forward_features(images)
    for hook in hooks:
        hook.remove()
    assert torch.allclose(block_qkv(vit, images, 2), seen[1], atol=1e-5)  # layer 2 = block index 1
    assert torch.allclose(block_qkv(vit, images, 3), seen[2], atol=1e-5)
    assert block_qkv(vit, images, 2).shape == (2, 17, 96)  # CLS + 16 patches
    with pytest.raises(ValueError, match="outside"):
        block_qkv(vit, images, 4)


def test_feature_and_cls_targets_are_whitened():
    teacher = torch.tensor([[[1.0, 3.0], [10.0, 10.0]]])  # token 0 whitens to (-1, 1), token 1 to (0, 0)
    student = torch.zeros(1, 2, 2)
    # smooth-L1 (beta 1): token 0 -> 0.5 * 1 per element, token 1 -> 0; mean over 4 elements
    assert feature_distillation_loss(student, teacher).item() == pytest.approx(0.25, abs=1e-4)
    assert cls_distillation_loss(student[:, 0], teacher[:, 0]).item() == pytest.approx(1.0, abs=1e-4)


def test_student_uses_the_chosen_teacher_layer_and_relation_heads():
    torch.manual_seed(0)
    student = TinyMIMStudent(pretrain="relation", random_teacher=True, teacher_layer=2, **TINY_TEACHER, **TINY_STUDENT)
    assert student.teacher_layer == 2 and student.relation_heads == 4  # the teacher's head count
    default = TinyMIMStudent(pretrain="relation", random_teacher=True, **TINY_TEACHER, **TINY_STUDENT)
    assert default.teacher_layer == 3  # last teacher layer when none is given
    images = torch.randn(2, 3, 32, 32)
    expected = relation_distillation_loss(block_qkv(student.teacher, images, 2), block_qkv(student.network, images, 2),
                                          num_heads=4)
    assert student.pretrain_loss(images).item() == pytest.approx(expected.item(), rel=1e-5)
    # relation distillation reaches only norm1 + qkv of the student's last block
    trained = {id(p) for group in student.pretrain_parameter_groups() for p in group["params"]}
    last = student.network.blocks[-1]
    assert id(last.attn.qkv.weight) in trained and id(last.norm1.weight) in trained
    assert not {id(p) for p in (*last.mlp.parameters(), *last.attn.proj.parameters(), student.network.pos_embed,
                                *student.network.head.parameters())} & trained
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        TinyMIMStudent(pretrain="relation", **TINY_TEACHER, **TINY_STUDENT)


# -- checkpoints --------------------------------------------------------------------------------
def test_stage_artifact_is_the_official_mae_layout_and_loads_as_teacher(tmp_path: Path):
    torch.manual_seed(0)
    stage = MAEPretraining(embed_dim=32, depth=3, num_heads=4, patch_size=8, decoder_dim=16, decoder_depth=1,
                           decoder_num_heads=2)
    path = stage.save_stage_artifact(tmp_path)
    state = mae_checkpoint_state(path)
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.2.attn.qkv.weight", "norm.weight",
                "mask_token", "decoder_embed.weight", "decoder_blocks.0.mlp.fc1.weight", "decoder_pred.weight"):
        assert key in state, key
    assert state["decoder_pred.weight"].shape == (8 * 8 * 3, 16)
    student = TinyMIMStudent(pretrain="cls", teacher_checkpoint=str(path), **TINY_STUDENT)  # arch from the file
    assert student.teacher.embed_dim == 32 and len(student.teacher.blocks) == 3
    assert torch.equal(student.teacher.blocks[1].attn.qkv.weight, stage.vit.blocks[1].attn.qkv.weight)
    assert not any(p.requires_grad for p in student.teacher.parameters())


def test_finetune_teacher_reference_fine_tunes_the_mae_teacher_itself(tmp_path: Path):
    torch.manual_seed(0)
    stage = MAEPretraining(embed_dim=32, depth=3, num_heads=4, patch_size=8, decoder_dim=16, decoder_depth=1,
                           decoder_num_heads=2)
    path = stage.save_stage_artifact(tmp_path)
    reference = TinyMIMStudent(pretrain="none", finetune_teacher=True, teacher_checkpoint=str(path), **TINY_STUDENT)
    network = reference.network
    # the teacher's architecture (from the artifact), not the student's 16-dim / 2-block one
    assert network.embed_dim == 32 and len(network.blocks) == 3 and network.blocks[0].attn.num_heads == 4
    for key, value in stage.vit.state_dict().items():
        if not key.startswith("norm."):  # MAE's final norm is replaced by fc_norm for fine-tuning
            assert torch.equal(network.state_dict()[key], value), key
    assert network.head.weight.shape == (10, 32) and network.head.weight.abs().max() < 1e-3  # fresh head
    assert reference.teacher is None and reference.hparams.pretrain_steps == 0  # only fine-tuning
    assert {p.requires_grad for p in network.parameters()} == {True}
    with pytest.raises(ValueError, match="pretrain: none"):
        TinyMIMStudent(pretrain="relation", finetune_teacher=True, teacher_checkpoint=str(path), **TINY_STUDENT)
    with pytest.raises(ValueError, match="random_teacher"):
        TinyMIMStudent(pretrain="none", finetune_teacher=True, random_teacher=True, **TINY_STUDENT)
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        TinyMIMStudent(pretrain="none", finetune_teacher=True, **TINY_STUDENT)


def test_plain_timm_state_dict_loads_and_mismatches_are_one_line_errors(tmp_path: Path):
    torch.manual_seed(1)
    timm_vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=0)
    torch.save(timm_vit.state_dict(), tmp_path / "timm.pth")  # no "model" wrapper, no decoder
    ours = build_vit(embed_dim=32, depth=3, num_heads=4, patch_size=8)
    load_mae_encoder(ours, mae_checkpoint_state(tmp_path / "timm.pth"))
    assert torch.equal(ours.blocks[2].mlp.fc2.weight, timm_vit.blocks[2].mlp.fc2.weight)
    assert torch.equal(ours.pos_embed, timm_vit.pos_embed)
    wider = build_vit(embed_dim=48, depth=3, num_heads=4, patch_size=8)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_mae_encoder(wider, mae_checkpoint_state(tmp_path / "timm.pth"))
    deeper = build_vit(embed_dim=32, depth=4, num_heads=4, patch_size=8)
    with pytest.raises(ValueError, match="missing"):
        load_mae_encoder(deeper, mae_checkpoint_state(tmp_path / "timm.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mae_checkpoint_state(tmp_path / "absent.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        mae_checkpoint_state(tmp_path / "corrupt.pth")


# -- schedule and the two-phase fit -------------------------------------------------------------
def test_each_phase_follows_its_own_warmup_and_cosine(tmp_path: Path):
    """MAE's lr_sched per phase: 4 pre-training steps (1 of warm-up), then 4 fine-tuning steps (1 of
    warm-up, cosine to min_lr), each counted in its own steps; layer decay scales the fine-tune lrs."""
    pl.seed_everything(0)
    datamodule = ImageClassificationDataModule(dataset="generated", generated_train_size=64, generated_test_size=32,
                                               batch_size=8, val_size=0, image_size=32)
    student = TinyMIMStudent(pretrain="relation", pretrain_steps=4, random_teacher=True, warmup_fraction=0.25,
                             pretrain_lr=1.0, finetune_lr=0.5, min_lr=0.1, **TINY_TEACHER, **TINY_STUDENT)
    seen = []

    class RecordLr(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            optimizers = [getattr(o, "optimizer", o) for o in trainer.optimizers]
            group = (optimizers[0] if len(seen) < 4 else optimizers[1]).param_groups[0]
            seen.append(group["lr"] / group.get("lr_scale", 1.0))

    trainer = pl.Trainer(max_steps=8, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path), callbacks=[RecordLr()])
    trainer.fit(student, datamodule=datamodule)
    cosine = [0.5 * (1 + math.cos(math.pi * step / 3)) for step in range(3)]  # 3 steps after 1 of warm-up
    assert seen[:4] == pytest.approx([0.0, *cosine])
    assert seen[4:] == pytest.approx([0.0, *(0.1 + 0.4 * c for c in cosine)])


@pytest.mark.parametrize("fused_adamw", [False, True])
def test_two_phases_step_their_own_optimizers(tmp_path: Path, fused_adamw: bool):
    pl.seed_everything(0)
    datamodule = ImageClassificationDataModule(dataset="generated", generated_train_size=64, generated_test_size=32,
                                               batch_size=16, val_size=0, image_size=32)
    student = TinyMIMStudent(pretrain="relation", pretrain_steps=3, random_teacher=True, fused_adamw=fused_adamw,
                             teacher_bf16=fused_adamw, **TINY_TEACHER, **TINY_STUDENT)
    teacher_before = student.teacher.blocks[0].attn.qkv.weight.clone()
    trainer = pl.Trainer(max_steps=5, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(student, datamodule=datamodule)
    pretrain, finetune = (optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
                          for optimizer in trainer.optimizers)
    assert {int(state["step"]) for state in pretrain.state.values()} == {3}
    assert {int(state["step"]) for state in finetune.state.values()} == {2}
    assert bool(pretrain.defaults.get("fused")) is fused_adamw and bool(finetune.defaults.get("fused")) is fused_adamw
    assert torch.equal(student.teacher.blocks[0].attn.qkv.weight, teacher_before)  # frozen
    assert not student.pretraining_phase  # fine-tune phase at the end
    result = trainer.test(student, datamodule=datamodule, verbose=False)[0]
    assert 0.0 <= result["test/top1"] <= 1.0 and result["test/params_m"] > 0


# -- speed options ------------------------------------------------------------------------------
def test_batched_color_jitter_is_torchvisions_per_image_jitter():
    from torchvision.transforms import functional as TF

    from modules.tinymim.augment import apply_jitter, sample_jitter

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(12, 3, 8, 8, generator=generator)
    draw = sample_jitter(12, 0.4, generator=generator)
    adjust = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation}
    factors = {0: draw.brightness, 1: draw.contrast, 2: draw.saturation}
    expected = []
    for index, image in enumerate(pixels):
        for op in draw.order[index].tolist():  # this image's own order and factors
            image = adjust[op](image, factors[op][index].item())
        expected.append(image)
    assert torch.allclose(apply_jitter(pixels, draw), torch.stack(expected), atol=1e-6)
    # the draws: every order is a permutation, factors within torchvision's [0.6, 1.4], orders vary
    assert torch.equal(draw.order.sort(dim=1).values, torch.arange(3).expand(12, 3))
    assert 0.6 <= draw.contrast.min() and draw.contrast.max() <= 1.4
    big = sample_jitter(600, 0.4, generator=generator)
    assert len({tuple(row) for row in big.order.tolist()}) == 6


def test_teacher_bf16_targets_stay_close_and_fused_adamw_is_selected():
    torch.manual_seed(0)
    exact = TinyMIMStudent(pretrain="relation", random_teacher=True, **TINY_TEACHER, **TINY_STUDENT)
    fast = TinyMIMStudent(pretrain="relation", random_teacher=True, teacher_bf16=True, fused_adamw=True,
                          **TINY_TEACHER, **TINY_STUDENT)
    fast.load_state_dict(exact.state_dict())
    images = torch.randn(4, 3, 32, 32)
    loss_exact, loss_fast = exact.pretrain_loss(images), fast.pretrain_loss(images)
    assert loss_fast.dtype == torch.float32
    assert loss_fast.item() != loss_exact.item()  # the teacher really ran in bf16
    assert loss_fast.item() == pytest.approx(loss_exact.item(), rel=0.05)
    student_qkv = block_qkv(fast.network, images, 2)
    assert student_qkv.dtype == torch.float32  # only the teacher pass is autocast
