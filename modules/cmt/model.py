"""CMT network blocks: backbones, coordinates encoding (image ray PE, BEV PE), position-guided
queries, the post-norm DETR decoder and the per-layer heads. Trainer logic lives in ``modules/cmt/__init__.py``;
matching and losses in ``modules/cmt/matching.py``. Sizes follow the paper spec's small-scale profile."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Fraction of queries' log-odds bias so that the initial foreground probability is 0.1 (official -2.19).
CLS_BIAS_INIT = -math.log((1 - 0.1) / 0.1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def pos2embed(positions: torch.Tensor, *, num_pos_feats: int) -> torch.Tensor:
    """Sin/cos embedding of normalised (x, y) -> [..., 2 * num_pos_feats], concatenated [y, x].

    Official quirk kept for parity: the frequency divisor is ``1 + 2 floor(k/2) / num_pos_feats``
    (not ``10000 ** (2 floor(k/2) / num_pos_feats)``), so every frequency lies in [pi, 2 pi]."""
    scaled = positions * (2 * math.pi)
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=positions.device)
    dim_t = 2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats + 1
    pos_x = scaled[..., 0, None] / dim_t
    pos_y = scaled[..., 1, None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=-1).flatten(-2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat((pos_y, pos_x), dim=-1)


def multiscale_pos2embed(positions: torch.Tensor, *, num_pos_feats: int, min_cycles: float = 0.5,
                         max_cycles: float = 16.0) -> torch.Tensor:
    """Sin/cos embedding of normalised (x, y) -> [..., 2 * num_pos_feats], concatenated [y, x], with
    ``num_pos_feats / 2`` frequencies spaced geometrically from ``min_cycles`` to ``max_cycles``
    cycles over the range (at 32 m: wavelengths 64 m down to 2 m = one BEV token). Replaces the
    official one-octave ``pos2embed`` for the BEV tokens and queries (see ``modules/cmt/__init__.py``)."""
    half = num_pos_feats // 2
    exponent = torch.arange(half, dtype=torch.float32, device=positions.device) / max(1, half - 1)
    frequencies = 2 * math.pi * min_cycles * (max_cycles / min_cycles) ** exponent
    pos_x = positions[..., 0, None] * frequencies
    pos_y = positions[..., 1, None] * frequencies
    pos_x = torch.stack((pos_x.sin(), pos_x.cos()), dim=-1).flatten(-2)
    pos_y = torch.stack((pos_y.sin(), pos_y.cos()), dim=-1).flatten(-2)
    return torch.cat((pos_y, pos_x), dim=-1)


BEV_EMBEDDINGS = {"official": pos2embed, "multiscale": multiscale_pos2embed}


class PresentSampleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics (batch and running) come only from the samples whose
    input is present (``present`` [N] bool); the absent ones (a modality zeroed by masked-modal
    training) are normalised with those statistics too, as at test time. ``present=None`` or all
    True is plain BatchNorm2d; none present normalises with the running statistics, no update.
    State-dict compatible with ``nn.BatchNorm2d`` (see deviation 11 in ``modules/cmt/__init__.py``)."""

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or present is None or bool(present.all()):
            return super().forward(x)
        if not bool(present.any()):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # statistics in fp32, as BatchNorm computes them under autocast (bf16 activations would not
        # lerp into the fp32 running buffers); the output keeps the input's dtype, as BatchNorm's does
        kept = x[present].float()
        mean, var = kept.mean(dim=(0, 2, 3)), kept.var(dim=(0, 2, 3), unbiased=False)
        with torch.no_grad():  # as nn.BatchNorm2d: running var is the unbiased estimate
            count = kept.numel() // kept.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / max(count - 1, 1), self.momentum)
            self.num_batches_tracked.add_(1)
        shape = (1, -1, 1, 1)
        normalised = (x.float() - mean.view(shape)) * (var.view(shape) + self.eps).rsqrt()
        return (normalised * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def forward_with_presence(module: nn.Module, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    """Run a (nested) Sequential, handing ``present`` to its ``PresentSampleBatchNorm2d`` layers."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = forward_with_presence(layer, x, present)
        return x
    return module(x, present) if isinstance(module, PresentSampleBatchNorm2d) else module(x)


def conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         PresentSampleBatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ImageBackbone(nn.Module):
    """4 stride-2 conv-BN-ReLU blocks (32-64-64-128 by default) -> stride 16, 1x1 to ``embed_dim``."""

    def __init__(self, *, widths: tuple[int, ...] = (32, 64, 64, 128), embed_dim: int = 128) -> None:
        super().__init__()
        blocks, channels = [], 3
        for width in widths:
            blocks.append(conv_bn_relu(channels, width, stride=2))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.project = nn.Conv2d(channels, embed_dim, 1)

    def forward(self, images: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """[B, V, 3, H, W] -> [B, V, C, h, w]; ``present`` [B]: samples whose images are not zeroed."""
        batch, views = images.shape[:2]
        present = None if present is None else present.repeat_interleave(views)
        features = self.project(forward_with_presence(self.blocks, images.flatten(0, 1), present))
        return features.unflatten(0, (batch, views))


class PillarBackbone(nn.Module):
    """Mean pillar features (x, y, z, intensity, offsets to the pillar centre, occupancy, then the
    points' columns after the fourth up to ``point_features``, e.g. a sweep's time lag) on a BEV grid,
    then a 2D CNN (one conv per width, the later ones stride 2: stride 4 for three widths) and a
    1x1 conv to ``embed_dim``."""

    def __init__(self, *, point_cloud_range: tuple[float, ...], pillar_size: float = 0.5,
                 widths: tuple[int, ...] = (32, 64, 128), embed_dim: int = 128, point_features: int = 4) -> None:
        super().__init__()
        self.extra_features = point_features - 4  # columns after (x, y, z, intensity)
        self.register_buffer("pc_range", torch.tensor(point_cloud_range, dtype=torch.float32), persistent=False)
        self.pillar_size = pillar_size
        self.grid = (round((point_cloud_range[4] - point_cloud_range[1]) / pillar_size),
                     round((point_cloud_range[3] - point_cloud_range[0]) / pillar_size))
        layers, channels = [], 7 + self.extra_features
        for index, width in enumerate(widths):
            layers.append(conv_bn_relu(channels, width, stride=1 if index == 0 else 2))
            channels = width
        self.cnn = nn.Sequential(*layers, nn.Conv2d(channels, embed_dim, 1), PresentSampleBatchNorm2d(embed_dim),
                                 nn.ReLU(inplace=True))

    def scatter(self, points: torch.Tensor, point_mask: torch.Tensor) -> torch.Tensor:
        batch = points.shape[0]
        rows, cols = self.grid
        low, high = self.pc_range[:3], self.pc_range[3:]
        column = ((points[..., 0] - low[0]) / self.pillar_size).floor().long()
        row = ((points[..., 1] - low[1]) / self.pillar_size).floor().long()
        valid = point_mask & (column >= 0) & (column < cols) & (row >= 0) & (row < rows)
        centre_x = low[0] + (column.float() + 0.5) * self.pillar_size
        centre_y = low[1] + (row.float() + 0.5) * self.pillar_size
        features = torch.stack([(points[..., 0] - low[0]) / (high[0] - low[0]), (points[..., 1] - low[1]) / (high[1] - low[1]),
                                (points[..., 2] - low[2]) / (high[2] - low[2]), points[..., 3],
                                (points[..., 0] - centre_x) / self.pillar_size, (points[..., 1] - centre_y) / self.pillar_size,
                                torch.ones_like(points[..., 0]), *points[..., 4:4 + self.extra_features].unbind(-1)],
                               dim=-1) * valid[..., None]
        flat_index = (torch.arange(batch, device=points.device)[:, None] * rows * cols + row.clamp(0, rows - 1) * cols
                      + column.clamp(0, cols - 1))
        channels = features.shape[-1]
        sums = torch.zeros(batch * rows * cols, channels, device=points.device).index_add_(0, flat_index.reshape(-1),
                                                                                           features.reshape(-1, channels))
        counts = sums[:, 6:7].clamp(min=1)
        means = torch.cat([sums[:, :6] / counts, (sums[:, 6:7] > 0).float(), sums[:, 7:] / counts], dim=1)
        return means.reshape(batch, rows, cols, channels).permute(0, 3, 1, 2)

    def forward(self, points: torch.Tensor, point_mask: torch.Tensor,
                present: torch.Tensor | None = None) -> torch.Tensor:  # -> [B, C, h, w]
        """``present`` [B]: samples whose points are not zeroed (BN statistics come from those)."""
        return forward_with_presence(self.cnn, self.scatter(points, point_mask), present)


class CoordinatesEncoding(nn.Module):
    """The CEM: 3D ray position encodings of image tokens, BEV PE of BEV cells, and query PEs."""

    def __init__(self, *, embed_dim: int, point_cloud_range: tuple[float, ...], depth_num: int = 16,
                 depth_start: float = 1.0, depth_max: float = 20.0, bev_pe: str = "multiscale",
                 pe_gain: float = 1.0) -> None:
        super().__init__()
        if bev_pe not in BEV_EMBEDDINGS:
            raise ValueError(f"bev_pe must be one of {sorted(BEV_EMBEDDINGS)}, not {bev_pe!r}")
        self.embed_dim = embed_dim
        self.bev_pos2embed = BEV_EMBEDDINGS[bev_pe]
        self.register_buffer("pc_range", torch.tensor(point_cloud_range, dtype=torch.float32), persistent=False)
        bin_size = (depth_max - depth_start) / depth_num
        self.register_buffer("depths", depth_start + bin_size * torch.arange(depth_num, dtype=torch.float32),
                             persistent=False)
        self.image_embedding = nn.Sequential(nn.Linear(3 * depth_num, 4 * embed_dim), nn.ReLU(inplace=True),
                                             nn.Linear(4 * embed_dim, embed_dim))
        self.bev_embedding = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.ReLU(inplace=True),
                                           nn.Linear(embed_dim, embed_dim))
        # pe_gain scales the last layer's initial weights: with PyTorch's default Linear init the PEs
        # come out at ~0.16 RMS, far below the unit-RMS LayerNorm'd query content and BEV features,
        # so the positional part of the attention logits starts ~30x too small (see modules/cmt/__init__.py).
        with torch.no_grad():
            for mlp in (self.image_embedding, self.bev_embedding):
                mlp[-1].weight.mul_(pe_gain)

    def ray_points(self, pixels: torch.Tensor, lidar2img: torch.Tensor) -> torch.Tensor:
        """Points [B, V, P, D, 3] of the rays through pixels [B, V, P, 2] (padded-image coords) at every
        depth bin: (u d, v d, d, 1) mapped by inv(lidar2img), normalised by the range (no clamp)."""
        depths = self.depths.view(1, 1, 1, -1, 1)
        coords = torch.cat([pixels[..., None, :] * depths, depths.expand(*pixels.shape[:3], -1, 1),
                            torch.ones_like(depths).expand(*pixels.shape[:3], -1, 1)], dim=-1)  # [B, V, P, D, 4]
        img2lidar = torch.linalg.inv(lidar2img.float())  # [B, V, 4, 4]
        points = torch.einsum("bvij,bvpdj->bvpdi", img2lidar, coords)[..., :3]
        low, high = self.pc_range[:3], self.pc_range[3:]
        return (points - low) / (high - low)

    def ray_embedding(self, pixels: torch.Tensor, lidar2img: torch.Tensor) -> torch.Tensor:
        """The image PE [B, V, P, C]: the D x 3 ray coordinates -> MLP (3D -> 4C -> ReLU -> C)."""
        return self.image_embedding(self.ray_points(pixels, lidar2img).flatten(-2))

    def image_tokens_pe(self, feature_shape: tuple[int, int], image_shape: tuple[int, int],
                        lidar2img: torch.Tensor) -> torch.Tensor:
        """PE [B, V*h*w, C] of the image feature cells; (u, v) = cell corner in image pixels."""
        height, width = feature_shape
        v, u = torch.meshgrid(torch.arange(height, device=lidar2img.device, dtype=torch.float32) * image_shape[0] / height,
                              torch.arange(width, device=lidar2img.device, dtype=torch.float32) * image_shape[1] / width,
                              indexing="ij")
        pixels = torch.stack([u, v], dim=-1).reshape(1, 1, -1, 2).expand(*lidar2img.shape[:2], -1, -1)
        return self.ray_embedding(pixels, lidar2img).flatten(1, 2)

    def bev_tokens_pe(self, feature_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """PE [h*w, C] of BEV cell centres (row = y, column = x)."""
        height, width = feature_shape
        y, x = torch.meshgrid((torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height,
                              (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width, indexing="ij")
        return self.bev_embedding(self.bev_pos2embed(torch.stack([x, y], dim=-1).reshape(-1, 2), num_pos_feats=self.embed_dim))

    def query_pe(self, anchors: torch.Tensor, *, lidar2img: torch.Tensor | None, image_shape: tuple[int, int]) -> torch.Tensor:
        """Query PE [B, Q, C] of normalised anchors [B, Q, 3]: BEV PE of (x, y) plus, when cameras are
        used, the sum over views of the image ray PE at the anchor's projection (masked to views where
        it lies in front of the camera and inside the image)."""
        pe = self.bev_embedding(self.bev_pos2embed(anchors[..., :2], num_pos_feats=self.embed_dim))
        if lidar2img is None:
            return pe
        low, high = self.pc_range[:3], self.pc_range[3:]
        xyz = anchors * (high - low) + low
        homogeneous = torch.cat([xyz, torch.ones_like(xyz[..., :1])], dim=-1)
        projected = torch.einsum("bvij,bqj->bvqi", lidar2img.float(), homogeneous)  # [B, V, Q, 4]
        depth = projected[..., 2:3]
        pixels = projected[..., :2] / depth.clamp(min=1e-5)
        inside = ((depth[..., 0] > 0) & (pixels[..., 0] >= 0) & (pixels[..., 0] < image_shape[1])
                  & (pixels[..., 1] >= 0) & (pixels[..., 1] < image_shape[0]))
        # Only (view, query) pairs inside the image contribute, so the MLP runs on those alone (a
        # query is seen by about one of the 4 views); the others are the mask's zeros.
        pe = pe.clone()
        for view in range(lidar2img.shape[1]):
            batch_index, query_index = inside[:, view].nonzero(as_tuple=True)
            if len(batch_index):
                rays = self.ray_embedding(pixels[batch_index, view, query_index][:, None, None],
                                          lidar2img[batch_index, view][:, None])[:, 0, 0]
                pe = pe.index_put((batch_index, query_index), rays, accumulate=True)
        return pe


class DecoderLayer(nn.Module):
    """Post-norm DETR layer: self-attn -> LN -> cross-attn -> LN -> FFN(ReLU) -> LN; PEs added to q/k.

    ``self_attention=False`` (the first layer, whose query content is identically zero) leaves the
    self-attention block out: on zero content it can only add its learned bias, and the post-norm LN
    of that near-zero constant is degenerate (see ``modules/cmt/__init__.py``)."""

    def __init__(self, *, embed_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, self_attention: bool = True) -> None:
        super().__init__()
        self.self_attention = (nn.MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout, batch_first=True)
                               if self_attention else None)
        self.cross_attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(embed_dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, embed_dim))
        # Without self-attention the first LN has nothing to normalise (an Identity keeps the indices
        # and leaves no unused parameters for DDP).
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dim) if self_attention else nn.Identity(),
                                    nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries, query_pos, keys, key_pos, attention_mask=None):
        if self.self_attention is not None:
            q = queries + query_pos
            queries = self.norms[0](queries + self.dropout(self.self_attention(q, q, queries, attn_mask=attention_mask,
                                                                              need_weights=False)[0]))
        attended = self.cross_attention(queries + query_pos, keys + key_pos, keys, need_weights=False)[0]
        queries = self.norms[1](queries + self.dropout(attended))
        return self.norms[2](queries + self.dropout(self.ffn(queries)))


def task_branch(embed_dim: int, out_dim: int, *, hidden: int = 64, bias_init: float | None = None) -> nn.Sequential:
    branch = nn.Sequential(nn.Linear(embed_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                           nn.Linear(hidden, out_dim))
    if bias_init is not None:
        nn.init.constant_(branch[-1].bias, bias_init)
    return branch


class DetectionHead(nn.Module):
    """One decoder layer's heads: center 2, height 1, dim 3, rot 2, vel 2 (concatenated in that
    order = the box code of ``modules/cmt/matching.py``), cls (sigmoid logits)."""

    BRANCHES = (("center", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))

    def __init__(self, *, embed_dim: int, num_classes: int, point_cloud_range: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("pc_range", torch.tensor(point_cloud_range, dtype=torch.float32), persistent=False)
        self.branches = nn.ModuleDict({name: task_branch(embed_dim, size) for name, size in self.BRANCHES})
        self.classifier = task_branch(embed_dim, num_classes, bias_init=CLS_BIAS_INIT)

    def forward(self, queries: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.pc_range[:3], self.pc_range[3:]
        centre = (self.branches["center"](queries) + inverse_sigmoid(anchors[..., :2])).sigmoid() * (high[:2] - low[:2]) + low[:2]
        height = (self.branches["height"](queries) + inverse_sigmoid(anchors[..., 2:3])).sigmoid() * (high[2] - low[2]) + low[2]
        boxes = torch.cat([centre, height] + [self.branches[name](queries) for name in ("dim", "rot", "vel")], dim=-1)
        return self.classifier(queries), boxes
