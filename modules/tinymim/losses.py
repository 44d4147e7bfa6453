"""Losses of TinyMIM (``modules/tinymim/__init__.py``): MAE reconstruction and the distillation targets.

* ``random_masking`` / ``patchify`` / ``mae_loss`` — MAE's per-sample random masking (argsort of
  uniform noise), its patch order (``nchpwq -> nhwpqc``) and the masked-patch MSE with the
  ``norm_pix_loss`` target (each patch normalised by its own mean and variance, eps 1e-6).
* ``split_heads`` / ``relation_log_probs`` / ``relation_distillation_loss`` — TinyMIM's token
  relations (paper spec §2): per head, ``softmax(Q Kᵀ/√d)`` and ``softmax(V Vᵀ/√d)`` over all
  tokens (CLS included), d each model's own head dim under the *relation* head count; the loss is
  ``KL(R_QK^T ‖ R_QK^S) + KL(R_VV^T ‖ R_VV^S)``, each KL summed over the last axis and averaged over
  (B, H, N). The student side uses ``log_softmax`` (pitfall 4: the official ``p.log()`` can give −inf).
* ``feature_distillation_loss`` — S-FD: smooth-L1 between projected student tokens and the
  affine-free LayerNorm of the teacher tokens.
* ``cls_distillation_loss`` — S-CLS: MSE between the projected student CLS token and the teacher's
  (affine-free LayerNorm'd, as the FD target; [inferred] the spec names only "MSE on the projected CLS").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_masking(batch: int, num_patches: int, mask_ratio: float, *, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE masking: ``ids_keep`` [B, keep], ``mask`` [B, N] (1 = masked, in patch order), ``ids_restore`` [B, N]."""
    keep = int(num_patches * (1 - mask_ratio))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] → [B, (H/p)·(W/p), p·p·C] in MAE's order (row-major patches, pixels then channels)."""
    batch, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(batch, rows * cols, patch_size * patch_size * channels)


def mae_loss(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor, *, norm_pix: bool = True) -> torch.Tensor:
    """Mean over masked patches of the per-patch pixel MSE (``norm_pix``: per-patch standardised target)."""
    target = target_patches
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as torch.Tensor.var in the official code
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, N, 3·D] (timm ``attn.qkv`` output) → Q, K, V each [B, H, N, D/H]."""
    batch, tokens, width = qkv.shape
    dim = width // 3
    if dim % num_heads:
        raise ValueError(f"relation heads {num_heads} do not divide the width {dim}")
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def relation_log_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log R_QK and log R_VV, each [B, H, N, N], scaled by 1/√d of these heads."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return (torch.log_softmax(q @ k.transpose(-2, -1) * scale, dim=-1),
            torch.log_softmax(v @ v.transpose(-2, -1) * scale, dim=-1))


def relation_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(T ‖ S) summed over the last axis, averaged over every other axis."""
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1).mean()


def relation_distillation_loss(teacher_qkv: torch.Tensor, student_qkv: torch.Tensor, *, num_heads: int) -> torch.Tensor:
    """TinyMIM's Q-K + V-V relation loss from two ``attn.qkv`` outputs, both split into ``num_heads``."""
    teacher_qk, teacher_vv = relation_log_probs(*split_heads(teacher_qkv, num_heads))
    student_qk, student_vv = relation_log_probs(*split_heads(student_qkv, num_heads))
    return relation_kl(teacher_qk, student_qk) + relation_kl(teacher_vv, student_vv)


def whitened(tokens: torch.Tensor) -> torch.Tensor:
    """Affine-free LayerNorm over the channel axis (the FD target)."""
    return F.layer_norm(tokens, tokens.shape[-1:], eps=1.0e-6)


def feature_distillation_loss(student_projected: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(student_projected, whitened(teacher_tokens))


def cls_distillation_loss(student_cls_projected: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student_cls_projected, whitened(teacher_cls))
