"""Network families: the languages in which Pearl describes the networks it searches, trains,
exports and times.

Every network is one canonical string in one family's language.  A family is a class with a
``decode(text)`` classmethod whose instances provide `Network`: ``input_size``,
``num_classes``, ``encode()`` (the canonical string, ``decode(encode(n)) == n``), ``key()`` (a
stable 16-hex-digit identity), ``cost()`` (MACs and parameters without building anything) and
``build(dropout)`` (a freshly initialised ``torch.nn.Module`` taking NCHW float input and
returning logits).  A family may also offer ``rows()``: the parts that cost something, with the
keys `pipeline.cli_arch.describe_rows` gives for MnasNet strings (``pearl arch describe``).
Search, training, export, latency and reports only use this protocol, so a new family (a
search method's own space) plugs in by adding a `Family` below.

A family's strings start with ``<prefix>:``; strings without a known prefix are MnasNet-space
`models.arch.Arch` strings (the first family, so every string written before families existed
still decodes).  This module is pure Python; a family's module is imported when first used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn

    from models.costs import Cost


class Network(Protocol):
    input_size: int
    num_classes: int

    def encode(self) -> str: ...

    def key(self) -> str: ...

    def cost(self) -> Cost: ...

    def build(self, dropout: float = 0.2) -> nn.Module: ...


def describe_row(
    name: str,
    block,
    op: str,
    kernel,
    stride,
    cin: int,
    cout: int,
    size_in: int,
    size_out: int,
    cost: Cost,
    **extra,
) -> dict[str, Any]:
    """One row of a family's ``rows()`` (`pearl arch describe`): the part, where it sits
    (``block``), what it is, its channels and feature-map sides, MACs and parameters; `extra`
    fills ``se_percent``, ``skip`` (the skip built) and ``skip_asked`` (None: not applicable)."""
    fields = {"se_percent": None, "skip": None, "skip_asked": None, **extra}
    return {
        "row": name,
        "block": block,
        "op": op,
        "kernel": kernel,
        "stride": stride,
        **fields,
        "in_channels": cin,
        "out_channels": cout,
        "input_px": size_in,
        "output_px": size_out,
        "macs": cost.macs,
        "params": cost.params,
    }


@dataclass(frozen=True)
class Family:
    name: str
    prefix: str  # "" for the MnasNet language (no prefix); else strings start "<prefix>:"
    target: str  # "module:Class", the class with ``decode(text)``
    summary: str

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


FAMILIES: tuple[Family, ...] = (
    Family("mnas", "", "models.arch:Arch", "MnasNet-style blocks (AKD's space), `models.arch`"),
    Family(
        "addon",
        "addon",
        "models.addon_net:AddonNet",
        "a CIFAR ResNet or WRN backbone with searched add-on layers after each stage (KDAS), "
        "`models.addon_net`",
    ),
    Family(
        "resnetw",
        "resnetw",
        "models.widths_resnet:ResNetW",
        "CIFAR ResNets with per-layer widths (Gu & Tresp students), `models.widths_resnet`",
    ),
    Family(
        "densenet",
        "densenet",
        "models.widths_densenet:DenseNetW",
        "DenseNet-BC with per-layer kept channels (Gu & Tresp), `models.widths_densenet`",
    ),
    Family(
        "mnasw",
        "mnasw",
        "models.widths_mnas:MnasW",
        "MnasNet-space networks with per-layer widths (Gu & Tresp), `models.widths_mnas`",
    ),
)


def family_of(text: str) -> Family:
    """The family whose language `text` is written in (by its ``prefix:``)."""
    head, colon, _ = text.partition(":")
    if colon and "|" not in head:
        for family in FAMILIES:
            if family.prefix and family.prefix == head:
                return family
        known = ", ".join(f"{f.prefix}:" for f in FAMILIES if f.prefix) or "none"
        raise ValueError(
            f"unknown network family {head!r} in {text[:40]!r}; known prefixes: {known} "
            "(or an unprefixed MnasNet arch string 'in32_cls10|stem_...')"
        )
    return FAMILIES[0]


def decode_network(text: str) -> Network:
    """The network a canonical string describes, in whichever family's language it is written;
    a malformed string is a ValueError that points at the bad token."""
    if not isinstance(text, str):
        raise ValueError(f"an arch string must be text, not {type(text).__name__}: {text!r:.60}")
    return family_of(text.strip()).load().decode(text.strip())
