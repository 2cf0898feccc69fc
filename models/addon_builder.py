"""The PyTorch module of an add-on network (`models.addon_net`): the backbone's stem and basic
blocks (`models.teachers.BasicBlock`, as the CIFAR ResNet teachers), the add-on layers after each
stage, then global average pooling and a linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from models.addon_net import AddonNet, backbone
from models.teachers import BasicBlock, WideBasicBlock


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
        return run_addons(x, self.ops, self.skips)


def run_addons(x: torch.Tensor, ops, skips) -> torch.Tensor:
    """``y_j = ops[j](y_{j-1}) + sum of y_i for i in skips[j]``; returns the last ``y``."""
    outputs: list[torch.Tensor] = []
    for op, adds in zip(ops, skips, strict=True):
        x = op(x)
        for i in adds:
            x = x + outputs[i]
        outputs.append(x)
    return x


def backbone_parts(name: str) -> tuple[nn.Module, list[tuple[list[nn.Module], int]], nn.Module]:
    """The stem, ``(blocks, output channels)`` of each stage, and what comes before the pool
    (BN + ReLU for pre-activation backbones) of backbone `name` (`models.addon_net.Backbone`)."""
    spec = backbone(name)
    stem: list[nn.Module] = [nn.Conv2d(3, spec.stem_channels, 3, 1, 1, bias=False)]
    if not spec.preact:
        stem += [nn.BatchNorm2d(spec.stem_channels), nn.ReLU()]
    block = WideBasicBlock if spec.preact else BasicBlock
    stages, channels = [], spec.stem_channels
    for width, stride in zip(spec.widths, spec.strides, strict=True):
        blocks = []
        for b in range(spec.blocks):
            blocks.append(block(channels, width, stride if b == 0 else 1))
            channels = width
        stages.append((blocks, channels))
    head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if spec.preact else nn.Identity()
    return nn.Sequential(*stem), stages, head


def _init(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)


class AddonModule(nn.Module):
    def __init__(self, network: AddonNet, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = network  # what `models.builder.count_module_costs` reads
        self.stem, stages, self.head = backbone_parts(network.backbone)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(*blocks, AddonStage(layers, channels))
                for (blocks, channels), layers in zip(stages, network.stages, strict=True)
            )
        )
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(stages[-1][1], network.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(self.dropout(x.mean((2, 3))))


class SharedAddonModule(nn.Module):
    """ENAS-style weight sharing over an add-on space (KDAS evaluation "shared"): the backbone
    and *every* op at every add-on slot, once; ``forward(x, network)`` runs the backbone with
    the ops and skips `network` chooses (its other ops get no gradient)."""

    def __init__(self, backbone_name: str, num_classes: int, layers_per_stage: int) -> None:
        from models.addon_net import OPS

        super().__init__()
        self.stem, stages, self.head = backbone_parts(backbone_name)
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks, _ in stages)
        self.slots = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleDict({op: addon_op(op, channels) for op in OPS})
                for _ in range(layers_per_stage)
            )
            for _, channels in stages
        )
        self.classifier = nn.Linear(stages[-1][1], num_classes)
        _init(self)

    def forward(self, x: torch.Tensor, network: AddonNet) -> torch.Tensor:
        x = self.stem(x)
        for blocks, slots, layers in zip(self.stages, self.slots, network.stages, strict=True):
            ops = [slot[layer.op] for slot, layer in zip(slots, layers, strict=True)]
            skips = [[i for i, bit in enumerate(layer.skips) if bit] for layer in layers]
            x = run_addons(blocks(x), ops, skips)
        return self.classifier(self.head(x).mean((2, 3)))
