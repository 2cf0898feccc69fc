"""The PyTorch module of an add-on network (`models.addon_net`): the backbone's stem and basic
blocks (`models.teachers.BasicBlock`, as the CIFAR ResNet teachers), the add-on layers after each
stage, then global average pooling and a linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.addon_net import AddonNet, backbone
from models.teachers import BasicBlock


def _conv_bn_relu(channels: int, kernel: int, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(channels, channels, kernel, 1, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(channels), nn.ReLU()]


def addon_op(op: str, channels: int) -> nn.Module:
    """One add-on op (stride 1, channels kept; see `models.addon_net`)."""
    if op == "id":
        return nn.Identity()
    if op.startswith("conv"):
        return nn.Sequential(*_conv_bn_relu(channels, int(op[-1])))
    if op.startswith("sep"):
        kernel = int(op[-1])
        return nn.Sequential(
            *_conv_bn_relu(channels, kernel, groups=channels), *_conv_bn_relu(channels, 1)
        )
    if op == "max3":
        return nn.MaxPool2d(3, 1, padding=1)
    if op == "avg3":
        return nn.AvgPool2d(3, 1, padding=1)
    raise ValueError(f"unknown add-on op {op!r}")


class AddonStage(nn.Module):
    """The add-on layers after one stage: ``y_j = op_j(y_{j-1}) + sum of y_i over its skip
    bits`` (``y_0``: the stage's output); returns ``y_L``."""

    def __init__(self, layers, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(addon_op(layer.op, channels) for layer in layers)
        self.skips = [[i for i, bit in enumerate(layer.skips) if bit] for layer in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for op, skips in zip(self.ops, self.skips, strict=True):
            x = op(x)
            for i in skips:
                x = x + outputs[i]
            outputs.append(x)
        return x


class AddonModule(nn.Module):
    def __init__(self, network: AddonNet, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = network  # what `models.builder.count_module_costs` reads
        spec = backbone(network.backbone)
        self.conv = nn.Conv2d(3, spec.stem_channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(spec.stem_channels)
        stages, channels = [], spec.stem_channels
        for width, stride, layers in zip(spec.widths, spec.strides, network.stages, strict=True):
            blocks = []
            for b in range(spec.blocks):
                blocks.append(BasicBlock(channels, width, stride if b == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks, AddonStage(layers, channels)))
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(channels, network.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn(self.conv(x))))
        return self.classifier(self.dropout(x.mean((2, 3))))
