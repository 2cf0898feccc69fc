"""Gates in an MnasNet-space network (``mnasw:``, `models.widths_mnas`), and the smaller network
left when some close: the `pipeline.gates.layout` protocol (``layout``, ``signatures``,
``shrink``, ``transfer``) for the family.

**Streams (tied gates).**  A layer whose skip adds its input channel by channel (``id``, or
``pool`` without a projection) writes into the same channels it reads, so its input and output
are one *stream*; a stream is born at the stem or at a layer without such a skip (``noskip``, or
``poolp``, whose 1x1 conv-BN shortcut makes new channels).  One gate per stream channel (a
*lane*) multiplies that channel after every BN that writes into the stream: the stem's or the
birth layer's last BN, the last BN of every ``id`` / ``pool`` layer it passes, and a ``poolp``
shortcut's BN.  A ``ds`` layer's depthwise conv runs on its input channels one by one, so its BN
takes the gates of the input lanes too (closing a lane removes that depthwise channel).

**Inner channels.**  An ``mb`` layer's expanded channels have a gate each, on the expansion BN
and, tied, on the depthwise BN (the depthwise conv maps inner channel c to c).  The SE squeeze
width stays fixed (SE has no BN to gate): its 1x1 convs lose the closed inner channels' rows and
columns.  A ``conv`` layer's output BN is its output stream's.

**Head.**  The head's 1x1 conv-BN has a gate per channel.  Every group (each stream's lanes, each
``mb`` layer's inner channels, the head) keeps its last gate (keep-one), so no layer is emptied.
A closed gate multiplies its channel by exactly 0 before the activation (ReLU, ReLU6 and
hard-swish map 0 to 0), so removing the channel changes nothing; open gates fold into their
BN's scale and shift.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from models.widths_mnas import MnasLayer, MnasW
from pipeline.gates.layout import GateLayout, _copy_conv, _flags, _fold, _load_bn


def _body(layer: MnasLayer) -> dict[str, int]:
    """Index in ``Layer.body`` of each part of `layer`, as `models.builder.Layer` builds it."""
    names = {"conv": ["conv"], "ds": ["depthwise"], "mb": ["expand", "depthwise"]}[layer.op]
    if layer.squeeze:
        names.append("se")
    if layer.op != "conv":
        names.append("project")
    return {name: index for index, name in enumerate(names)}


class MnasGates:
    def __init__(self, network: MnasW) -> None:
        self.network = network
        layout = self.layout = GateLayout(0, [], {})
        lanes = list(layout.add("stem.out", network.stem.out_channels, True, 0))
        layout.points["stem.1"] = torch.tensor(lanes)
        self.stem = lanes
        self.plan: list[tuple[list[int], list[int], list[int]]] = []  # (in lanes, inner, out)
        for index, layer in enumerate(network.layers):
            name = f"layer{index + 1}"
            inner = []
            if layer.op == "mb":
                inner = list(layout.add(f"{name}.inner", layer.inner, True, index + 1))
            out = lanes
            if not layer.joins_input:
                out = list(layout.add(f"{name}.out", layer.out_channels, True, index + 1))
            self.plan.append((lanes, inner, out))
            for part, gates in self._bn_gates(index).items():
                layout.points[f"layers.{index}.{part}"] = torch.tensor(gates)
            lanes = out
        self.head: list[int] = []
        if network.head.channels:
            column = len(network.layers) + 1
            self.head = list(layout.add("head", network.head.channels, True, column))
            layout.points["head.1"] = torch.tensor(self.head)
        # the gates of one group are alike (the same lanes through the same layers)
        self.signatures = [i for i, g in enumerate(layout.groups) for _ in range(g.start, g.stop)]

    def _mid(self, index: int) -> list[int]:
        """The gates of layer `index`'s depthwise / SE channels."""
        lanes, inner, out = self.plan[index]
        return {"mb": inner, "ds": lanes, "conv": out}[self.network.layers[index].op]

    def _bn_gates(self, index: int) -> dict[str, list[int]]:
        """BN module (relative to the layer) -> the gate of each of its channels."""
        layer, (_, inner, out) = self.network.layers[index], self.plan[index]
        body = _body(layer)
        points = {
            f"body.{body[part]}.1": gates
            for part, gates in (
                ("conv", out),
                ("expand", inner),
                ("depthwise", self._mid(index)),
                ("project", out),
            )
            if part in body
        }
        if layer.project:
            points["shortcut.1.1"] = out
        return points

    # -- the network left ---------------------------------------------------------------------

    def shrink(self, keep) -> MnasW:
        return self._shrink(_flags(keep))

    def _shrink(self, keep: list[bool]) -> MnasW:
        def count(gates: list[int]) -> int:
            return sum(1 for gate in gates if keep[gate])

        network = self.network
        stem = replace(network.stem, out_channels=count(self.stem))
        layers = tuple(
            replace(layer, inner=count(inner), in_channels=count(lanes), out_channels=count(out))
            for layer, (lanes, inner, out) in zip(network.layers, self.plan, strict=True)
        )
        head = replace(network.head, channels=count(self.head))
        return MnasW(network.input_size, network.num_classes, stem, layers, head)

    def transfer(self, model: nn.Module, gates: torch.Tensor, keep):
        keep = _flags(keep)
        small = self._shrink(keep)
        out = small.build()

        def kept(indices: list[int]) -> list[int]:
            return [position for position, gate in enumerate(indices) if keep[gate]]

        def fold(target: nn.BatchNorm2d, source: nn.BatchNorm2d, indices: list[int]) -> None:
            rows = kept(indices)
            _load_bn(target, _fold(source, rows, gates[torch.tensor([indices[r] for r in rows])]))

        _copy_conv(out.stem[0], model.stem[0], kept(self.stem), [0, 1, 2])
        fold(out.stem[1], model.stem[1], self.stem)
        for index, layer in enumerate(self.network.layers):
            source, target = model.layers[index], out.layers[index]
            self._transfer_layer(index, layer, source, target, kept, fold)
        last = kept(self.plan[-1][2])
        if self.head:
            _copy_conv(out.head[0], model.head[0], kept(self.head), last)
            fold(out.head[1], model.head[1], self.head)
            last = kept(self.head)
        classes = list(range(small.num_classes))
        _copy_conv(out.classifier[1], model.classifier[1], classes, last)
        return small, out

    def _transfer_layer(self, index, layer, source, target, kept, fold) -> None:
        lanes, inner, out = self.plan[index]
        mid, body = self._mid(index), _body(layer)
        read = {"expand": lanes, "depthwise": None, "conv": lanes, "project": mid}
        write = {"expand": inner, "depthwise": mid, "conv": out, "project": out}
        for part, number in body.items():
            new, old = target.body[number], source.body[number]
            if part == "se":
                squeeze = list(range(layer.squeeze))
                _copy_conv(new.reduce, old.reduce, squeeze, kept(mid))
                _copy_conv(new.expand, old.expand, kept(mid), squeeze)
                continue
            columns = [0] if read[part] is None else kept(read[part])
            _copy_conv(new[0], old[0], kept(write[part]), columns)
            fold(new[1], old[1], write[part])
        if layer.project:
            new, old = target.shortcut[1], source.shortcut[1]
            _copy_conv(new[0], old[0], kept(out), kept(lanes))
            fold(new[1], old[1], out)
