"""CIFAR ResNets (He et al. 2016, section 4.2): ResNet-20/32/44/56/110 and the CI-sized ResNet-8.

The 6n+2 design: conv3x3(16) + BN + ReLU, three stages of n BasicBlocks with widths 16/32/64
(stride 2 at the first block of stages 2 and 3), global average pooling, one Linear layer.
Shortcuts are **option A** (parameter-free: subsample x[:, :, ::2, ::2] and zero-pad the new
channels), as in the paper and in the code base LRPET builds on (akamaster/pytorch_resnet_cifar10).
Convolutions carry no bias and Conv2d/Linear weights are Kaiming-normal initialised.

Every Conv2d is followed by the BatchNorm2d that normalises its output, in module order, so
pairing the i-th conv with the i-th BN (what low-rank projection with BN rectification needs) is
right for these networks.

``resnet_cifar(depth=20)`` builds a named configuration; ``widths`` scales the network when a
profile needs a smaller one. ResNet-20: 0.27M parameters, 40.8M MACs; ResNet-56: 0.85M, 125.5M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESNET_CIFAR_BLOCKS = {8: 1, 14: 2, 20: 3, 32: 5, 44: 7, 56: 9, 110: 18}  # depth -> blocks per stage


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: spatial subsampling by ``stride`` and zero channels up to ``out_channels``."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        subsampled = inputs[:, :, :: self.stride, :: self.stride]
        # Pad the new channels symmetrically (as the reference implementation does).
        half = self.extra_channels // 2
        return F.pad(subsampled, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ZeroPadShortcut(in_channels=in_channels, out_channels=out_channels, stride=stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.bn1(self.conv1(inputs)))
        return F.relu(self.bn2(self.conv2(hidden)) + self.shortcut(inputs))


class CifarResNet(nn.Module):
    def __init__(self, *, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for stage_index, width in enumerate(widths):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(in_channels=channels, out_channels=width, stride=stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.bn1(self.conv1(inputs)))
        hidden = self.layer3(self.layer2(self.layer1(hidden)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(hidden, 1), 1))


def resnet_cifar(*, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int] | list[int] = (16, 32, 64)) -> CifarResNet:
    """ResNet-``depth`` for 32x32 inputs; ``depth`` is one of ``RESNET_CIFAR_BLOCKS``."""
    if depth not in RESNET_CIFAR_BLOCKS:
        raise ValueError(f"CIFAR ResNet depth {depth} is not one of {sorted(RESNET_CIFAR_BLOCKS)} (6n+2)")
    if len(widths) != 3:
        raise ValueError(f"widths must name the three stage widths, got {widths!r}")
    return CifarResNet(blocks_per_stage=RESNET_CIFAR_BLOCKS[depth], num_classes=num_classes,
                       in_channels=in_channels, widths=tuple(int(w) for w in widths))
