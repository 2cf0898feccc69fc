"""Named baseline networks written in the architecture language.

``mobilenet_v2`` (and width-scaled ``mobilenet_v2_0.75``, ``_0.5``, ``_0.35``), ``mnasnet_b1``
(torchvision's ``mnasnet1_0``) and ``mnasnet_a1`` (MnasNet-A1 with SE, as in the MnasNet paper).
At inputs of 64 px or less they use the CIFAR stride layout (see `models.space`), so the same
name gives a sensible CIFAR network.
"""

from __future__ import annotations

from models.arch import Arch, BlockSpec, HeadSpec, StemSpec, make_divisible
from models.network import Network, decode_network
from models.space import MOBILENET_V2_BLOCKS, STRIDE_LAYOUTS, default_layout

# (op, expand, kernel, channels, layers, se_ratio, skip) per block; strides come from the layout.
_MNASNET_B1 = (
    ("ds", 1, 3, 16, 1, 0.0, "noskip"),
    ("mb", 3, 3, 24, 3, 0.0, "id"),
    ("mb", 3, 5, 40, 3, 0.0, "id"),
    ("mb", 6, 5, 80, 3, 0.0, "id"),
    ("mb", 6, 3, 96, 2, 0.0, "id"),
    ("mb", 6, 5, 192, 4, 0.0, "id"),
    ("mb", 6, 3, 320, 1, 0.0, "id"),
)
_MNASNET_A1 = (
    ("ds", 1, 3, 16, 1, 0.0, "noskip"),
    ("mb", 6, 3, 24, 2, 0.0, "id"),
    ("mb", 3, 5, 40, 3, 0.25, "id"),
    ("mb", 6, 3, 80, 4, 0.0, "id"),
    ("mb", 6, 3, 112, 2, 0.25, "id"),
    ("mb", 6, 5, 160, 3, 0.25, "id"),
    ("mb", 6, 3, 320, 1, 0.0, "id"),
)


def _arch(rows, input_size, num_classes, stem_channels, head_channels, act, layout) -> Arch:
    strides = STRIDE_LAYOUTS[layout]
    blocks = tuple(
        BlockSpec(
            op=op,
            expand=expand,
            kernel=kernel,
            stride=stride,
            out_channels=channels,
            layers=layers,
            se_ratio=se,
            skip=skip,
            act=act,
        )
        for (op, expand, kernel, channels, layers, se, skip), stride in zip(
            rows, strides.block_strides, strict=True
        )
    )
    return Arch(
        input_size=input_size,
        num_classes=num_classes,
        stem=StemSpec(stem_channels, kernel=3, stride=strides.stem_stride, act=act),
        blocks=blocks,
        head=HeadSpec(head_channels, act=act),
    )


def mobilenet_v2(
    width: float = 1.0, input_size: int = 224, num_classes: int = 1000, layout: str | None = None
) -> Arch:
    """MobileNetV2 with torchvision's width scaling (channels rounded to multiples of 8)."""
    rows = [
        ("ds" if i == 0 else "mb", 1 if i == 0 else 6, 3, make_divisible(c * width), n, 0.0, "id")
        for i, (c, n) in enumerate(MOBILENET_V2_BLOCKS)
    ]
    return _arch(
        rows,
        input_size,
        num_classes,
        stem_channels=make_divisible(32 * width),
        head_channels=make_divisible(1280 * max(1.0, width)),
        act="r6",
        layout=layout or default_layout(input_size),
    )


def mnasnet_b1(input_size: int = 224, num_classes: int = 1000, layout: str | None = None) -> Arch:
    return _arch(
        _MNASNET_B1, input_size, num_classes, 32, 1280, "re", layout or default_layout(input_size)
    )


def mnasnet_a1(input_size: int = 224, num_classes: int = 1000, layout: str | None = None) -> Arch:
    return _arch(
        _MNASNET_A1, input_size, num_classes, 32, 1280, "re", layout or default_layout(input_size)
    )


BASELINES = {
    "mobilenet_v2": lambda **kw: mobilenet_v2(1.0, **kw),
    "mobilenet_v2_0.75": lambda **kw: mobilenet_v2(0.75, **kw),
    "mobilenet_v2_0.5": lambda **kw: mobilenet_v2(0.5, **kw),
    "mobilenet_v2_0.35": lambda **kw: mobilenet_v2(0.35, **kw),
    "mnasnet_b1": mnasnet_b1,
    "mnasnet_a1": mnasnet_a1,
}


def baseline(name: str, input_size: int = 224, num_classes: int = 1000) -> Arch:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](input_size=input_size, num_classes=num_classes)


def resolve_arch(
    text: str, input_size: int | None = None, num_classes: int | None = None
) -> Network:
    """A network from a baseline name or an arch string of any family (`models.network`):
    what every CLI command accepts.

    For a baseline, input size and class count default to 224 and 1000.  An arch string carries
    its own; giving different ones is an error rather than a silent override.
    """
    if text in BASELINES:
        return baseline(text, input_size or 224, num_classes or 1000)
    if "|" not in text and ":" not in text:
        raise ValueError(
            f"{text!r} is neither a baseline name ({', '.join(sorted(BASELINES))}) "
            "nor an arch string like 'in32_cls10|stem_...|...|head_...'"
        )
    arch = decode_network(text)
    for flag, given, actual in (
        ("--input", input_size, arch.input_size),
        ("--classes", num_classes, arch.num_classes),
    ):
        if given is not None and given != actual:
            raise ValueError(
                f"{flag} {given} contradicts the arch string, which says {actual}; "
                f"drop {flag} or edit the string"
            )
    return arch
