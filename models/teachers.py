"""Teacher networks: CIFAR ResNets (He et al. 2016, sec. 4.2) and ensembles of teachers.

The CIFAR ResNets are 6n+2 layers deep: a 3x3 conv with 16 filters, three stages of n basic
blocks with 16, 32 and 64 filters (the first block of stages 2 and 3 halves the resolution), then
global average pooling and a linear classifier.  Shortcuts are parameter-free ("option A"):
identity, or stride-2 subsampling with zero-padded channels where the shape changes, so
ResNet-20/32/56/110 have 0.27M/0.46M/0.85M/1.7M parameters as in the paper's Table 6.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and an option-A shortcut (also the stages of `models.addon_net`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class WideBasicBlock(nn.Module):
    """The pre-activation block of Wide ResNets (Zagoruyko & Komodakis 2016): BN, ReLU, 3x3
    conv, BN, ReLU, 3x3 conv, plus the input (through a 1x1 conv of the activated input where
    the shape changes).  Used by the WRN backbones of `models.addon_net`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        changes = in_channels != out_channels or stride != 1
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if changes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if depth not in CIFAR_RESNET_DEPTHS and (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. 20, 56), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        stages, channels = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn(self.conv(x))))
        return self.classifier(x.mean((2, 3)))


class Ensemble(nn.Module):
    """Several teachers seen as one: `forward` averages their logits; `member_logits` stacks
    them (M, B, C) for oracle KD (KDAS eq. 4)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(0)


def cifar_resnet(name: str, num_classes: int = 10) -> CifarResNet:
    """``resnet20``, ``resnet32``, ``resnet44``, ``resnet56`` or ``resnet110``."""
    depth = name.removeprefix("resnet")
    if not depth.isdigit() or int(depth) not in CIFAR_RESNET_DEPTHS:
        names = ", ".join(f"resnet{d}" for d in CIFAR_RESNET_DEPTHS)
        raise ValueError(f"unknown CIFAR ResNet {name!r}; choose one of {names}")
    return CifarResNet(int(depth), num_classes)
