"""PyTorch networks from `Arch`es.

Modules are registered in the order torchvision uses for MobileNetV2 and MNASNet (stem, layers,
head conv, classifier; inside a layer: expand, depthwise, SE, project, shortcut), so a torchvision
state dict maps onto a build by position (`load_state_dict_by_order`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from models.arch import Arch
from models.layers import LayerSpec, conv_output_size, expand_layers

_ACTIVATIONS = {"re": nn.ReLU, "r6": nn.ReLU6, "hs": nn.Hardswish}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name](inplace=True)


class ConvBN(nn.Sequential):
    """Bias-free conv, batch norm, optional activation ('same' padding for odd kernels)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, act: str | None = None):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MnasNet SE: global pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid gate (hard-sigmoid in
    hard-swish networks, as MobileNetV3), scale."""

    def __init__(self, channels: int, squeeze_channels: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = nn.Hardsigmoid() if act == "hs" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(scale))))


class Layer(nn.Module):
    """One layer of a block (see `models.arch.BlockSpec` for what each op is)."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        cin, cout, mid, k, s = (
            spec.in_channels,
            spec.out_channels,
            spec.mid_channels,
            spec.kernel,
            spec.stride,
        )
        body: list[nn.Module] = []
        if spec.op == "conv":
            body.append(ConvBN(cin, cout, k, s, act=spec.act))
        else:
            if spec.op == "mb":
                body.append(ConvBN(cin, mid, 1, act=spec.act))
            body.append(ConvBN(mid, mid, k, s, groups=mid, act=spec.act))
        if spec.se_channels:
            body.append(SqueezeExcite(mid, spec.se_channels, spec.act))
        if spec.op != "conv":
            body.append(ConvBN(mid, cout, 1))
        self.body = nn.Sequential(*body)
        self.shortcut: nn.Module | None = None
        if spec.skip == "id":
            self.shortcut = nn.Identity()
        elif spec.skip == "pool":
            # Zero padding counts in the border averages: this lowers to PAD + AVERAGE_POOL_2D,
            # which XNNPACK runs and the int8 quantiser handles; excluding the padding lowers
            # to ops XNNPACK does not take (STABLEHLO_REDUCE_WINDOW + DIV).
            pool = nn.AvgPool2d(3, s, padding=1)
            project = [ConvBN(cin, cout, 1)] if spec.projects_shortcut else []
            self.shortcut = nn.Sequential(pool, *project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class LayerNet(nn.Module):
    """Stem, layers, head conv and classifier.  `layers` are `models.layers.LayerSpec`s (an
    Arch, `Student`) or anything with their fields (``mnasw:``, `models.widths_mnas`): both
    build the same modules under the same names."""

    def __init__(self, network, stem, layers, head, dropout: float = 0.2):
        super().__init__()
        self.network = network
        self.stem = ConvBN(3, stem.out_channels, stem.kernel, stem.stride, act=stem.act)
        self.layers = nn.Sequential(*[Layer(spec) for spec in layers])
        channels = layers[-1].out_channels
        self.head: nn.Module = nn.Identity()
        if head.channels:
            self.head = ConvBN(channels, head.channels, 1, act=head.act)
            channels = head.channels
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(channels, network.num_classes)
        )
        _init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # keepdim + flatten: a plain mean over (2, 3) puts a TRANSPOSE in the NHWC TFLite graph
        return self.classifier(self.features(x).mean((2, 3), keepdim=True).flatten(1))


class Student(LayerNet):
    def __init__(self, arch: Arch, dropout: float = 0.2):
        super().__init__(arch, arch.stem, expand_layers(arch), arch.head, dropout)
        self.arch = arch


def build(arch: Arch, dropout: float = 0.2) -> Student:
    """An initialised PyTorch network for `arch` (NCHW input, `arch.input_size` square)."""
    return Student(arch, dropout)


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def load_state_dict_by_order(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict whose tensors come in the same order and shapes as `model`'s own.

    This is how a torchvision MobileNetV2 or MNASNet checkpoint maps onto the same network
    built from an `Arch`: names differ, order and shapes do not.  Any mismatch is an error
    naming both tensors.
    """
    own = model.state_dict()
    if len(own) != len(state_dict):
        raise ValueError(
            f"state dict has {len(state_dict)} tensors, the model has {len(own)}: "
            "not the same architecture"
        )
    mapped = {}
    for (name, tensor), (src_name, src) in zip(own.items(), state_dict.items(), strict=True):
        if tensor.shape != src.shape:
            raise ValueError(
                f"shape mismatch: model {name} {tuple(tensor.shape)} vs "
                f"checkpoint {src_name} {tuple(src.shape)}"
            )
        mapped[name] = src
    model.load_state_dict(mapped)


def count_module_costs(model: Student) -> tuple[int, int]:
    """(MACs, parameters) measured on the built module with forward hooks, for cross-checking
    `models.costs` (conv and linear MACs; parameters as `numel` of all parameters)."""
    macs = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] ** 2
        macs += output[0].numel() * per_output

    def linear_hook(module: nn.Linear, _inputs, _output) -> None:
        nonlocal macs
        macs += module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    size = model.arch.input_size
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return macs, params


__all__ = ["LayerNet", "Student", "build", "conv_output_size", "load_state_dict_by_order"]
