"""The torch modules of the width families: `WidthResNet` (``resnetw:``) and `WidthDenseNet`
(``densenet:``).  Built only through ``network.build()``; the specs live in
`models.widths_resnet` and `models.widths_densenet`.

Pooling is ``mean((2, 3), keepdim=True).flatten(1)`` as in `models.builder.Student`, which keeps
the exported NHWC graph free of TRANSPOSE ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _init(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True).flatten(1)


class _Block(nn.Module):
    """A basic block; weights named as `models.teachers._BasicBlock`'s."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, front: int, back: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.front, self.back = stride, front, back

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.front or self.back:
            x = F.pad(x, (0, 0, 0, 0, self.front, self.back))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class WidthResNet(nn.Module):
    """A `models.widths_resnet.ResNetW`; with full widths its state dict is a `CifarResNet`'s."""

    def __init__(self, network) -> None:
        super().__init__()
        self.network = network
        width = network.stages[0].width
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.stages = nn.Sequential(
            *(
                _Block(cin, inner, cout, stride, front, back)
                for _, cin, inner, cout, stride, front, back, _ in network.blocks()
            )
        )
        self.classifier = nn.Linear(network.stages[-1].width, network.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn(self.conv(x))))
        return self.classifier(_pool(x))


class _Reads(nn.Module):
    """BN and ReLU on the channels a part reads from the concatenation (all, or a selection)."""

    def __init__(self, inputs: tuple[int, ...], width: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(len(inputs))
        everything = inputs == tuple(range(width))
        index = None if everything else torch.tensor(inputs, dtype=torch.long)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            x = x.index_select(1, self.index)
        return F.relu(self.bn(x))


class _DenseLayer(nn.Module):
    def __init__(self, part, width: int):
        super().__init__()
        self.reads = _Reads(part.inputs, width)
        self.conv1 = nn.Conv2d(len(part.inputs), part.bottleneck, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(part.bottleneck)
        self.conv2 = nn.Conv2d(part.bottleneck, part.out, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn2(self.conv1(self.reads(x)))))


class _Transition(nn.Module):
    def __init__(self, part, width: int):
        super().__init__()
        self.reads = _Reads(part.inputs, width)
        self.conv = nn.Conv2d(len(part.inputs), part.out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(self.reads(x)), 2)


class WidthDenseNet(nn.Module):
    """A `models.widths_densenet.DenseNetW`: ``parts[i]`` is the i-th part of the string."""

    def __init__(self, network) -> None:
        super().__init__()
        self.network = network
        self.stem = nn.Conv2d(3, network.stem, 3, 1, 1, bias=False)
        parts = []
        for part, width, _ in network.walk():
            if part.kind == "d":
                parts.append(_DenseLayer(part, width))
            elif part.kind == "t":
                parts.append(_Transition(part, width))
            else:
                parts.append(_Reads(part.inputs, width))
        self.parts = nn.ModuleList(parts)
        self.classifier = nn.Linear(len(network.parts[-1].inputs), network.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for spec, module in zip(self.network.parts, self.parts, strict=True):
            if spec.kind == "d":
                x = torch.cat([x, module(x)], 1)
            else:
                x = module(x)
        return self.classifier(_pool(x))
