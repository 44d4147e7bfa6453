"""A small Mask2Former-style query-based instance segmenter and RefT's two reference modules.

Blocks (the paper spec's small-scale profile; see ``modules/reft/__init__.py`` for the deviations list):

* ``ConvBackbone`` — 4 stages (32-64-96-128 channels) at ``feature_strides`` (Mask2Former's
  4 / 8 / 16 / 32 by default), GroupNorm.
* ``FPNPixelDecoder`` — an FPN in place of the 6-layer MSDeformAttn pixel decoder: the three
  decoder-input scales (e.g. strides 32, 16, 8, low resolution first as in Mask2Former) plus the
  mask features at the finest stride (e.g. 4).
* ``MaskedAttentionLayer`` — Mask2Former's decoder layer: masked cross-attention to one scale
  (a query only sees pixels where its previous mask prediction is > 0.5; a query whose mask is
  empty sees everything), then self-attention, then FFN, each residual + post-LayerNorm.
* ``FeatureReference`` (RefT reference 1, feature level) — per-class dynamic centres, mask-pooled
  from the support features at each decoder-input scale, re-weight the query image's features:
  ``"cross_attention"``: F <- F + MHA(Q = F + PE, K = V = [mu_1..mu_C]) [inferred, the v3 "simple
  cross-attention"]; or ``"reweight"``: F <- F * (1 + sum_c softmax_c(<F, mu_c>/sqrt(d)) sigmoid(W mu_c))
  [inferred, the v1 "re-weighting"].
* ``InstanceReference`` (RefT reference 2, instance level) — after the decoder and before the heads,
  the query image's object queries attend to the support object queries:
  Q <- LN(Q + MHA(Q, Q_s, Q_s)); Q <- LN(Q + FFN(Q)) [inferred form of the teaser figure].

The output projections of both reference modules start at zero [inferred], so fine-tuning starts
from exactly the base model's features and queries (the modules are new at fine-tuning time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(height: int, width: int, dim: int, *, device: torch.device | None = None) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding, [H * W, dim] (half the channels for y, half for x)."""
    quarter = dim // 4
    frequencies = 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    y_angles, x_angles = ys[:, None] / frequencies, xs[:, None] / frequencies  # [H, q], [W, q]
    y_code = torch.cat([y_angles.sin(), y_angles.cos()], -1)[:, None, :].expand(height, width, 2 * quarter)
    x_code = torch.cat([x_angles.sin(), x_angles.cos()], -1)[None, :, :].expand(height, width, 2 * quarter)
    code = torch.cat([y_code, x_code], -1).reshape(height * width, 4 * quarter)
    return F.pad(code, (0, dim - 4 * quarter))


def conv_norm_relu(in_channels: int, out_channels: int, *, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.GroupNorm(min(8, out_channels), out_channels), nn.ReLU(inplace=True))


def stage_strides(feature_strides: Sequence[int]) -> list[int]:
    """Per-layer strides (stem, then each stage) that put the four stage outputs at ``feature_strides``
    (each a power of two at least as large as the one before; the stem takes at most a factor 2)."""
    if len(feature_strides) != 4 or any(s < 1 or s & (s - 1) for s in feature_strides) \
            or any(b < a for a, b in zip(feature_strides, feature_strides[1:])):
        raise ValueError(f"feature_strides must be 4 non-decreasing powers of two, got {tuple(feature_strides)}")
    stem = min(2, feature_strides[0])
    previous, strides = stem, [stem]
    for stride in feature_strides:
        strides.append(stride // previous)
        previous = stride
    return strides


class ConvBackbone(nn.Module):
    """Four stages of ``widths`` channels at ``feature_strides`` (Mask2Former's 4 / 8 / 16 / 32 by default)."""

    def __init__(self, *, widths: Sequence[int] = (32, 64, 96, 128), in_channels: int = 3,
                 feature_strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__()
        stem_stride, *strides = stage_strides(feature_strides)
        self.stem = conv_norm_relu(in_channels, widths[0], stride=stem_stride)
        stages, previous = [], widths[0]
        for width, stride in zip(widths, strides):
            stages.append(nn.Sequential(conv_norm_relu(previous, width, stride=stride), conv_norm_relu(width, width)))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], self.stem(images)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class FPNPixelDecoder(nn.Module):
    """Top-down FPN: returns (the three coarsest backbone scales, coarsest first: the decoder inputs, e.g. strides
    32 / 16 / 8; the finest scale as the mask features, e.g. stride 4), all ``dim`` channels."""

    def __init__(self, *, in_channels: Sequence[int], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(channels, dim, 1) for channels in in_channels)
        self.output = nn.ModuleList(conv_norm_relu(dim, dim) for _ in in_channels)
        self.mask_features = nn.Conv2d(dim, dim, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        outputs: list[torch.Tensor] = []
        top_down = None
        for level in reversed(range(len(features))):
            lateral = self.lateral[level](features[level])
            if top_down is not None:
                lateral = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            top_down = self.output[level](lateral)
            outputs.append(top_down)  # coarsest first
        return outputs[:3], self.mask_features(outputs[3])


class MaskedAttentionLayer(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.self_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.cross_attention(queries + query_pos, memory + memory_pos, memory, attn_mask=attention_mask,
                                           need_weights=False)
        queries = self.norms[0](queries + attended)
        attended, _ = self.self_attention(queries + query_pos, queries + query_pos, queries, need_weights=False)
        queries = self.norms[1](queries + attended)
        return self.norms[2](queries + self.ffn(queries))


class PredictionHeads(nn.Module):
    """Class logits over C+1 and mask logits = <mask embedding, mask features>, plus the next attention mask."""

    def __init__(self, *, dim: int, num_classes: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                        nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, queries: torch.Tensor, mask_features: torch.Tensor,
                attention_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        normed = self.norm(queries)
        class_logits = self.class_head(normed)
        mask_logits = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(normed), mask_features)
        if attention_size is None:
            return class_logits, mask_logits, None
        resized = F.interpolate(mask_logits, size=attention_size, mode="bilinear", align_corners=False)
        blocked = (resized.sigmoid() < 0.5).flatten(2).detach()  # [B, Q, HW]; True = may not attend
        blocked[blocked.all(-1)] = False
        return class_logits, mask_logits, blocked.repeat_interleave(self.num_heads, dim=0)


def restrict_class_logits(class_logits: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """[..., C+1] logits with every class outside ``labels`` set to -inf (no-object, the last, kept):
    the softmax is then over ``labels`` + no-object, as a head built for those classes only would be."""
    keep = torch.zeros(class_logits.shape[-1], dtype=torch.bool, device=class_logits.device)
    keep[list(labels)] = True
    keep[-1] = True
    return class_logits.masked_fill(~keep, float("-inf"))


class FeatureReference(nn.Module):
    """Reference 1: re-weight each decoder-input scale with the per-class support centres."""

    def __init__(self, *, dim: int, num_heads: int, num_scales: int = 3, mode: str = "cross_attention") -> None:
        super().__init__()
        if mode not in ("cross_attention", "reweight"):
            raise ValueError(f"feature reference mode must be 'cross_attention' or 'reweight', got {mode!r}")
        self.mode = mode
        if mode == "cross_attention":
            self.attention = nn.ModuleList(nn.MultiheadAttention(dim, num_heads, batch_first=True) for _ in range(num_scales))
            for attention in self.attention:  # zero output: the base model's features at the start of fine-tuning
                nn.init.zeros_(attention.out_proj.weight)
                nn.init.zeros_(attention.out_proj.bias)
        else:
            self.gate = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_scales))
            for gate in self.gate:  # sigmoid(-6) ~ 0.0025: close to the identity at the start
                nn.init.zeros_(gate.weight)
                nn.init.constant_(gate.bias, -6.0)

    @staticmethod
    def class_centres(features: torch.Tensor, class_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu_c = sum_k sum_p M_k(p) F_k(p) / sum_k sum_p M_k(p) from support features [S, d, h, w] and
        class masks [S, C, H, W] (resized to h x w by area averaging); returns centres [C, d] and a
        [C] flag of the classes that have support pixels."""
        masks = F.interpolate(class_masks.float(), size=features.shape[-2:], mode="area")
        mass = masks.sum((0, 2, 3))
        centres = torch.einsum("schw,sdhw->cd", masks, features) / mass.clamp_min(1e-6)[:, None]
        return centres, mass > 0

    def forward(self, features: torch.Tensor, position: torch.Tensor, centres: torch.Tensor, valid: torch.Tensor,
                scale: int) -> torch.Tensor:
        batch, dim, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # [B, HW, d]
        keys = centres[None].expand(batch, -1, -1)
        if self.mode == "cross_attention":
            attended, _ = self.attention[scale](tokens + position[None], keys, keys, key_padding_mask=~valid[None].expand(batch, -1),
                                                need_weights=False)
            tokens = tokens + attended
        else:
            similarity = (tokens @ centres.T / math.sqrt(dim)).masked_fill(~valid, float("-inf")).softmax(-1)  # [B, HW, C]
            tokens = tokens * (1 + similarity @ self.gate[scale](centres).sigmoid())
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class InstanceReference(nn.Module):
    """Reference 2: query-image object queries attend to the support object queries (all classes at once)."""

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)

    def forward(self, queries: torch.Tensor, support_queries: torch.Tensor) -> torch.Tensor:
        keys = support_queries[None].expand(len(queries), -1, -1)
        attended, _ = self.attention(queries, keys, keys, need_weights=False)
        queries = self.norms[0](queries + attended)
        return self.norms[1](queries + self.ffn(queries))


@dataclass
class References:
    """What the support set hands to the query branch: per-scale class centres and support queries."""

    centres: list[torch.Tensor] | None = None  # per scale [C, d]
    centre_valid: torch.Tensor | None = None  # [C] bool
    support_queries: torch.Tensor | None = None  # [N_s, d]


@dataclass
class DecoderOutput:
    class_logits: list[torch.Tensor]  # per prediction round [B, Q, C+1]; the last is the final prediction
    mask_logits: list[torch.Tensor]  # per prediction round [B, Q, h, w] at the mask-feature resolution
    queries: torch.Tensor  # final decoder queries [B, Q, d] (before the instance reference)


class QueryInstanceSegmenter(nn.Module):
    """Mask2Former-like network; the reference modules are present only when asked for."""

    def __init__(self, *, num_classes: int, dim: int = 64, num_queries: int = 20, num_heads: int = 4,
                 ffn_dim: int = 256, num_layers: int = 3, widths: Sequence[int] = (32, 64, 96, 128),
                 mask_stride: int = 4, feature_reference: str | None = None, instance_reference: bool = False) -> None:
        super().__init__()
        self.num_classes, self.num_heads, self.dim = num_classes, num_heads, dim
        # Mask2Former's pyramid: masks at mask_stride, the decoder at 8x / 4x / 2x it (4 -> 32 / 16 / 8)
        self.backbone = ConvBackbone(widths=widths, feature_strides=tuple(mask_stride * 2 ** level for level in range(4)))
        self.pixel_decoder = FPNPixelDecoder(in_channels=widths, dim=dim)
        self.query_features = nn.Embedding(num_queries, dim)
        self.query_position = nn.Embedding(num_queries, dim)
        self.level_embedding = nn.Embedding(3, dim)
        self.layers = nn.ModuleList(MaskedAttentionLayer(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim)
                                    for _ in range(num_layers))
        self.heads = PredictionHeads(dim=dim, num_classes=num_classes, num_heads=num_heads)
        self.feature_reference = FeatureReference(dim=dim, num_heads=num_heads, mode=feature_reference) \
            if feature_reference else None
        self.instance_reference = InstanceReference(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim) \
            if instance_reference else None

    def encode(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.pixel_decoder(self.backbone(images))

    def reweight(self, scales: list[torch.Tensor], references: References | None) -> list[torch.Tensor]:
        if self.feature_reference is None or references is None or references.centres is None:
            return scales
        return [self.feature_reference(features, sine_position_encoding(*features.shape[-2:], self.dim, device=features.device),
                                       references.centres[index], references.centre_valid, index)
                for index, features in enumerate(scales)]

    def decode(self, scales: list[torch.Tensor], mask_features: torch.Tensor) -> DecoderOutput:
        batch = mask_features.shape[0]
        memories, positions, sizes = [], [], []
        for level, features in enumerate(scales):
            sizes.append(tuple(features.shape[-2:]))
            positions.append(sine_position_encoding(*sizes[-1], self.dim, device=features.device)[None])
            memories.append(features.flatten(2).transpose(1, 2) + self.level_embedding.weight[level][None, None])
        queries = self.query_features.weight[None].repeat(batch, 1, 1)  # a copy: FlopCounterMode breaks on expanded parameters
        query_pos = self.query_position.weight[None].repeat(batch, 1, 1)
        class_logits, mask_logits, blocked = self.heads(queries, mask_features, sizes[0])
        all_classes, all_masks = [class_logits], [mask_logits]
        for index, layer in enumerate(self.layers):
            level = index % len(scales)
            queries = layer(queries, query_pos, memories[level], positions[level], blocked)
            next_size = sizes[(index + 1) % len(scales)]
            class_logits, mask_logits, blocked = self.heads(queries, mask_features, next_size)
            all_classes.append(class_logits)
            all_masks.append(mask_logits)
        return DecoderOutput(all_classes, all_masks, queries)

    def forward(self, images: torch.Tensor, references: References | None = None) -> DecoderOutput:
        scales, mask_features = self.encode(images)
        output = self.decode(self.reweight(scales, references), mask_features)
        if self.instance_reference is not None and references is not None and references.support_queries is not None \
                and len(references.support_queries):
            linked = self.instance_reference(output.queries, references.support_queries)
            class_logits, mask_logits, _ = self.heads(linked, mask_features)
            output.class_logits[-1], output.mask_logits[-1] = class_logits, mask_logits
            output.queries = linked
        return output
