"""EMO network: the inverted Residual Mobile Block (iRMB) and the 4-stage EMO models (plain nn.Modules).

Follows ``zhangzjn/EMO`` ``model/emo.py`` + ``model/basic_modules.py`` (see ``papers/emo.md`` §1-2 and
the docstring of ``modules/emo/__init__.py`` for the deviations). A registry of named configurations
(``EMO_CONFIGS``: EMO-1M/2M/5M/6M and the halved EMO-1M/2 for CI) feeds ``create_emo``, which also
applies the small-image geometry of the paper spec's CPU profile (stem and stage-1 stride 1,
window 4: maps 32/32/16/8/4 at 32², the same attention pattern as 112/56/28/14/7 at 224²).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

NORM_EPS = 1e-6  # every BN and LN of the official code (get_norm)
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "bn": partial(nn.BatchNorm2d, eps=NORM_EPS),
    "ln": partial(LayerNorm2d, eps=NORM_EPS),  # LayerNorm over channels at every pixel
}
ACT_LAYERS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}
WINDOW_LAYOUTS = ("dilated", "contiguous")


# ----------------------------------------------------------------------------------------------
# Window partition
# ----------------------------------------------------------------------------------------------
def window_partition(x: torch.Tensor, window_size: int, layout: str = "dilated") -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, C, H, W] (H, W multiples of ``window_size``) -> ([B·nh·nw, C, ws, ws], (nh, nw)).

    ``dilated`` is the official ``rearrange('b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1')`` with
    h1 = ws: pixel (i, j) goes to window (i mod nh, j mod nw), i.e. every window is a ws×ws grid
    with stride (nh, nw) spanning the whole map. ``contiguous`` is the Swin-style ws×ws patch
    (the EMO-contig ablation)."""
    batch, channels, height, width = x.shape
    grid_h, grid_w = height // window_size, width // window_size
    if layout == "dilated":
        windows = x.view(batch, channels, window_size, grid_h, window_size, grid_w).permute(0, 3, 5, 1, 2, 4)
    elif layout == "contiguous":
        windows = x.view(batch, channels, grid_h, window_size, grid_w, window_size).permute(0, 2, 4, 1, 3, 5)
    else:
        raise ValueError(f"window layout must be one of {WINDOW_LAYOUTS}, got {layout!r}")
    return windows.reshape(batch * grid_h * grid_w, channels, window_size, window_size), (grid_h, grid_w)


def window_reverse(windows: torch.Tensor, grid: tuple[int, int], layout: str = "dilated") -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    grid_h, grid_w = grid
    batch_windows, channels, window_size, _ = windows.shape
    batch = batch_windows // (grid_h * grid_w)
    x = windows.view(batch, grid_h, grid_w, channels, window_size, window_size)
    if layout == "dilated":
        x = x.permute(0, 3, 4, 1, 5, 2)  # b c h1 n1 w1 n2
    else:
        x = x.permute(0, 3, 1, 4, 2, 5)  # b c n1 h1 n2 w1
    return x.reshape(batch, channels, grid_h * window_size, grid_w * window_size)


# ----------------------------------------------------------------------------------------------
# iRMB
# ----------------------------------------------------------------------------------------------
class InvertedResidualMobileBlock(nn.Module):
    """iRMB: ``x + proj(u)``, ``u = v + SE(DW(v))``, ``v = act(1×1_expand(EW-MHSA(norm(x))))``.

    ``head_dim=None`` means no attention (``v = act(1×1(norm(x)))``, MobileNetV2's IRB with a
    pre-norm). ``attn_pre=True`` (all released models) applies the window attention to the
    un-expanded C channels before the expansion; ``False`` expands first (the paper's text).
    The residual and the skip around the DW conv exist only when ``has_skip`` and the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, *, expansion: float, norm: str = "bn",
                 act: str = "silu", dw_kernel: int = 3, stride: int = 1, has_skip: bool = True,
                 norm_in: bool = True, expand: bool = True, se_ratio: float = 0.0, head_dim: int | None = None,
                 window_size: int = 7, window_layout: str = "dilated", attn_pre: bool = True,
                 qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        mid_channels = int(in_channels * expansion)
        self.has_skip = has_skip and in_channels == out_channels and stride == 1
        self.norm = NORM_LAYERS[norm](in_channels) if norm_in else nn.Identity()
        self.head_dim = head_dim
        if head_dim is not None:
            if in_channels % head_dim:
                raise ValueError(f"iRMB: {in_channels} channels are not divisible by head_dim {head_dim}")
            if window_layout not in WINDOW_LAYOUTS:
                raise ValueError(f"window layout must be one of {WINDOW_LAYOUTS}, got {window_layout!r}")
            self.num_heads = in_channels // head_dim
            self.window_size = window_size  # <= 0: one global window
            self.window_layout = window_layout
            self.attn_pre = attn_pre
            self.qk = nn.Conv2d(in_channels, 2 * in_channels, kernel_size=1, bias=qkv_bias)
        else:
            self.qk = None
        if head_dim is not None or expand:
            self.v = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=qkv_bias),
                                   ACT_LAYERS[act]())
        else:  # stage-0 block: no expansion conv at all
            self.v = nn.Identity()
        # The DW conv always has BN + SiLU, whatever the stage's norm and activation.
        self.conv_local = nn.Sequential(
            nn.Conv2d(mid_channels, mid_channels, kernel_size=dw_kernel, stride=stride, padding=dw_kernel // 2,
                      groups=mid_channels, bias=False),
            NORM_LAYERS["bn"](mid_channels), nn.SiLU())
        self.se = SqueezeExcite(mid_channels, rd_ratio=se_ratio, act_layer=ACT_LAYERS[act]) if se_ratio > 0 else nn.Identity()
        self.proj = nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """EW-MHSA on zero-padded, unmasked windows (the padding tokens take part, as officially)."""
        _, _, height, width = x.shape
        window_h = self.window_size if self.window_size > 0 else height
        window_w = self.window_size if self.window_size > 0 else width
        if window_h != window_w:
            raise ValueError("global attention (window_size <= 0) needs a square feature map")
        pad_bottom, pad_right = (-height) % window_h, (-width) % window_w
        x = F.pad(x, (0, pad_right, 0, pad_bottom))
        windows, grid = window_partition(x, window_h, self.window_layout)
        batch, channels, win_h, win_w = windows.shape
        tokens = win_h * win_w
        qk = self.qk(windows).view(batch, 2, self.num_heads, self.head_dim, tokens).transpose(-1, -2)
        query, key = qk.unbind(dim=1)  # [b, heads, tokens, head_dim]
        values = windows if self.attn_pre else self.v(windows)
        values = values.reshape(batch, self.num_heads, -1, tokens).transpose(-1, -2)
        # softmax(q kᵀ / √head_dim) · values, the official scale (values may be wider than q/k)
        mixed = F.scaled_dot_product_attention(query, key, values, scale=self.head_dim ** -0.5)
        mixed = mixed.transpose(-1, -2).reshape(batch, -1, win_h, win_w)
        if self.attn_pre:
            mixed = self.v(mixed)
        out = window_reverse(mixed, grid, self.window_layout)
        return out[:, :, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        x = self.window_attention(x) if self.qk is not None else self.v(x)
        local = self.se(self.conv_local(x))
        x = self.proj(x + local if self.has_skip else local)
        return shortcut + self.drop_path(x) if self.has_skip else x


# ----------------------------------------------------------------------------------------------
# EMO
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EMOConfig:
    """One EMO variant (official values; all tuples are per stage 1-4)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    expansions: tuple[float, ...]
    head_dims: tuple[int, ...]
    drop_path: float
    stem_channels: int = 24
    dw_kernels: tuple[int, ...] = (3, 3, 5, 5)
    norms: tuple[str, ...] = ("bn", "bn", "ln", "ln")
    acts: tuple[str, ...] = ("silu", "silu", "gelu", "gelu")
    attention: tuple[bool, ...] = (False, False, True, True)


EMO_CONFIGS: dict[str, EMOConfig] = {
    "emo_1m": EMOConfig(depths=(2, 2, 8, 3), widths=(32, 48, 80, 168), expansions=(2.0, 2.5, 3.0, 3.5),
                        head_dims=(16, 16, 20, 21), drop_path=0.04036),
    "emo_2m": EMOConfig(depths=(3, 3, 9, 3), widths=(32, 48, 120, 200), expansions=(2.0, 2.5, 3.0, 3.5),
                        head_dims=(16, 16, 20, 20), drop_path=0.05),
    "emo_5m": EMOConfig(depths=(3, 3, 9, 3), widths=(48, 72, 160, 288), expansions=(2.0, 3.0, 4.0, 4.0),
                        head_dims=(24, 24, 32, 32), drop_path=0.05),
    "emo_6m": EMOConfig(depths=(3, 3, 9, 3), widths=(48, 72, 160, 320), expansions=(2.0, 3.0, 4.0, 5.0),
                        head_dims=(16, 24, 20, 32), drop_path=0.05),
    # Not official: EMO-1M with halved widths (heads halved, head size kept), for CI and smoke runs.
    "emo_1m_half": EMOConfig(depths=(2, 2, 8, 3), widths=(16, 24, 40, 84), expansions=(2.0, 2.5, 3.0, 3.5),
                             head_dims=(16, 16, 20, 21), drop_path=0.04036, stem_channels=12),
}
# Official fvcore numbers at 1×3×224×224 with 1000 classes (resources/EMO_*/log_train.txt).
OFFICIAL_224_PARAMS_M = {"emo_1m": 1.361, "emo_2m": 2.377, "emo_5m": 5.109, "emo_6m": 6.168}
OFFICIAL_224_FVCORE_GFLOPS = {"emo_1m": 0.261, "emo_2m": 0.439, "emo_5m": 0.903, "emo_6m": 0.961}


class EMO(nn.Module):
    """Stem (conv3×3 + BN, then a DW+SE block) → 4 stages of iRMBs → LayerNorm2d → GAP → Linear.

    The first block of every stage downsamples (no attention, no skips, expansion 2λ, DW stride
    ``stage_strides[i]``). ``stem_stride=1, stage_strides=(1, 2, 2, 2), window_sizes=4`` is the
    small-image geometry (output stride 8)."""

    def __init__(self, config: EMOConfig, *, num_classes: int = 1000, in_channels: int = 3, stem_stride: int = 2,
                 stage_strides: tuple[int, ...] = (2, 2, 2, 2), window_sizes: tuple[int, ...] = (7, 7, 7, 7),
                 window_layout: str = "dilated", attn_pre: bool = True, attention: tuple[bool, ...] | None = None,
                 drop_path: float | None = None) -> None:
        super().__init__()
        attention = config.attention if attention is None else tuple(attention)
        drop_path = config.drop_path if drop_path is None else drop_path
        stem = config.stem_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, kernel_size=3, stride=stem_stride, padding=1, bias=True),
                                  NORM_LAYERS[config.norms[0]](stem))
        self.stem_block = InvertedResidualMobileBlock(
            stem, stem, expansion=1.0, norm=config.norms[0], act=config.acts[0], dw_kernel=config.dw_kernels[0],
            has_skip=False, norm_in=False, expand=False, se_ratio=1.0)
        # Drop-path rises linearly over the blocks of stages 1-4 (the stem has none).
        rates = torch.linspace(0, drop_path, sum(config.depths)).tolist()
        stages, previous = [], stem
        for i, (depth, width) in enumerate(zip(config.depths, config.widths)):
            blocks = []
            for j in range(depth):
                first = j == 0
                blocks.append(InvertedResidualMobileBlock(
                    previous, width, expansion=config.expansions[i] * (2 if first else 1), norm=config.norms[i],
                    act=config.acts[i], dw_kernel=config.dw_kernels[i], stride=stage_strides[i] if first else 1,
                    has_skip=not first, head_dim=config.head_dims[i] if attention[i] and not first else None,
                    window_size=window_sizes[i], window_layout=window_layout, attn_pre=attn_pre,
                    drop_path=rates[sum(config.depths[:i]) + j]))
                previous = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = NORM_LAYERS[config.norms[-1]](previous)
        self.head = nn.Linear(previous, num_classes)
        self.num_features = previous
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem_block(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.forward_features(x)).mean(dim=(2, 3)))


def _init_weights(module: nn.Module) -> None:
    """Official init: Linear trunc-normal(.02) + zero bias; norms 1/0; convs keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def create_emo(name: str, *, num_classes: int = 1000, in_channels: int = 3, small_images: bool = False,
               window_size: int | None = None, **overrides) -> EMO:
    """A registered EMO variant. ``small_images=True``: the 32² geometry of the CPU profile
    (stem and stage-1 stride 1, window 4, output stride 8); ``window_size`` overrides either."""
    if name not in EMO_CONFIGS:
        raise ValueError(f"unknown EMO variant {name!r} (known: {', '.join(EMO_CONFIGS)})")
    geometry: dict = {"stem_stride": 1, "stage_strides": (1, 2, 2, 2)} if small_images else {}
    size = window_size if window_size is not None else (4 if small_images else 7)
    geometry["window_sizes"] = (size,) * 4
    return EMO(EMO_CONFIGS[name], num_classes=num_classes, in_channels=in_channels, **{**geometry, **overrides})
