"""Where the gates sit in a width-family network, and the smaller network that is left when some
close (Gu & Tresp sec. 3.1).

All gates of a network are one flat vector ``g`` (M entries).  A `GateLayout` says which BN
layer each gate multiplies (`points`: BN module name -> index into ``g`` per BN channel, so one
gate may serve several BN layers: tied gates) and how the gates group into layers (`groups`,
for the keep-one rule and the heat map).  ``family.shrink(keep)`` is the network without the
closed channels (spec only, for costs); ``family.transfer(model, gates, keep)`` also moves the
weights, with each gate folded into its BN's scale and shift, so the result computes exactly
what the gated network computes.

**ResNet (tied gates).**  Every block of a stage adds into the stage's residual stream, and the
next stage inherits it through the parameter-free shortcut, so a stream channel is one *lane*
from the stage where it is born (the stem, or zero padding in a later stage's first block) to
the classifier.  One gate per lane multiplies that channel after the stem BN and after the
second BN of every block it passes: closing it zeroes the lane everywhere.  Inner channels (after
each block's first BN) have a gate each.

**DenseNet.**  Each part's first BN runs on the channels it reads from the concatenation: one
gate per read channel, so a connection to an earlier layer disappears when all its gates close.
Each dense layer's bottleneck BN has a gate per channel.  A layer's output channel that no open
gate reads anymore is removed; a layer none of whose outputs is read is removed whole.

**MnasNet-space networks** (``mnasw:``): `pipeline.gates.layout_mnas` (tied residual streams,
tied expansion / depthwise gates).

**Keep-one rule.**  Groups marked ``keep_one`` (a ResNet block's inner channels, the lanes born
at the stem, each DenseNet part's reads and bottleneck) never close their last gate (the
optimiser keeps the largest open), so no layer is ever left with no channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.widths_densenet import DenseNetW, Part
from models.widths_resnet import ResNetStage, ResNetW


@dataclass(frozen=True)
class Group:
    name: str  # "stage2.block1.inner", "lanes.stage1", "part3.reads", ...
    start: int  # its gates are g[start:stop]
    stop: int
    keep_one: bool
    layer: int  # column of the heat map (the layer it belongs to, in forward order)


@dataclass
class GateLayout:
    size: int
    groups: list[Group]
    points: dict[str, torch.Tensor]  # BN module name -> LongTensor of gate indices

    def add(self, name: str, count: int, keep_one: bool, layer: int) -> range:
        self.groups.append(Group(name, self.size, self.size + count, keep_one, layer))
        self.size += count
        return range(self.size - count, self.size)


def _fold(bn: nn.BatchNorm2d, rows: list[int], gate: torch.Tensor) -> nn.BatchNorm2d:
    """The BN of the kept `rows`, its output multiplied by `gate` (folded into scale/shift)."""
    out = nn.BatchNorm2d(len(rows), eps=bn.eps, momentum=bn.momentum)
    index = torch.tensor(rows, dtype=torch.long)
    with torch.no_grad():
        out.weight.copy_(bn.weight[index] * gate)
        out.bias.copy_(bn.bias[index] * gate)
        out.running_mean.copy_(bn.running_mean[index])
        out.running_var.copy_(bn.running_var[index])
    return out


def _copy_conv(target: nn.Conv2d | nn.Linear, source, rows: list[int], cols: list[int]) -> None:
    with torch.no_grad():
        target.weight.copy_(source.weight[rows][:, cols])
        if getattr(source, "bias", None) is not None:
            target.bias.copy_(source.bias[rows])


def _flags(keep) -> list[bool]:
    """`keep` as a list of bools (indexing a tensor element by element is slow)."""
    return keep.tolist() if isinstance(keep, torch.Tensor) else list(keep)


def _load_bn(target: nn.BatchNorm2d, folded: nn.BatchNorm2d) -> None:
    target.load_state_dict(folded.state_dict())


# -- ResNet -----------------------------------------------------------------------------------


class ResNetGates:
    def __init__(self, network: ResNetW) -> None:
        self.network = network
        self.layout = GateLayout(0, [], {})
        self.lanes: list[list[int]] = []  # per stage: gate index of each stream channel
        previous: list[int] = []
        for index, stage in enumerate(network.stages):
            back = stage.width - len(previous) - stage.front
            born = self.layout.add(f"lanes.stage{index + 1}", stage.front + back, not index, 0)
            born = list(born)
            self.lanes.append(born[: stage.front] + previous + born[stage.front :])
            previous = self.lanes[-1]
        self.inner: list[list[int]] = []
        for number, (stage, _, inner, *_rest) in enumerate(network.blocks()):
            name = f"stage{stage + 1}.block{number + 1}.inner"
            self.inner.append(list(self.layout.add(name, inner, True, number + 1)))
            self.layout.points[f"stages.{number}.bn1"] = torch.tensor(self.inner[-1])
            self.layout.points[f"stages.{number}.bn2"] = torch.tensor(self.lanes[stage])
        self.layout.points["bn"] = torch.tensor(self.lanes[0])
        # gates of one group are alike (the same lanes' birth stage, the same block)
        self.signatures = [
            index for index, g in enumerate(self.layout.groups) for _ in range(g.start, g.stop)
        ]

    def _kept(self, indices: list[int], keep: list[bool]) -> list[int]:
        return [position for position, gate in enumerate(indices) if keep[gate]]

    def shrink(self, keep: torch.Tensor) -> ResNetW:
        keep = _flags(keep)
        stages, block = [], 0
        for index, stage in enumerate(self.network.stages):
            lanes = self.lanes[index]
            front = sum(1 for gate in lanes[: stage.front] if keep[gate])
            inner = []
            for _ in stage.inner:
                inner.append(len(self._kept(self.inner[block], keep)))
                block += 1
            width = len(self._kept(lanes, keep))
            stages.append(ResNetStage(width, front, tuple(inner)))
        return ResNetW(self.network.input_size, self.network.num_classes, tuple(stages))

    def transfer(self, model: nn.Module, gates: torch.Tensor, keep: torch.Tensor):
        small = self.shrink(keep)
        out = small.build()
        keep = _flags(keep)
        lanes = [self._kept(stage_lanes, keep) for stage_lanes in self.lanes]

        def gate(indices: list[int], rows: list[int]) -> torch.Tensor:
            return gates[torch.tensor([indices[r] for r in rows])]

        _copy_conv(out.conv, model.conv, lanes[0], [0, 1, 2])
        _load_bn(out.bn, _fold(model.bn, lanes[0], gate(self.lanes[0], lanes[0])))
        previous = lanes[0]
        for number, (stage, *_rest) in enumerate(self.network.blocks()):
            source, target = model.stages[number], out.stages[number]
            inner = self._kept(self.inner[number], keep)
            _copy_conv(target.conv1, source.conv1, inner, previous)
            _load_bn(target.bn1, _fold(source.bn1, inner, gate(self.inner[number], inner)))
            _copy_conv(target.conv2, source.conv2, lanes[stage], inner)
            folded = _fold(source.bn2, lanes[stage], gate(self.lanes[stage], lanes[stage]))
            _load_bn(target.bn2, folded)
            previous = lanes[stage]
        _copy_conv(out.classifier, model.classifier, list(range(small.num_classes)), previous)
        return small, out


# -- DenseNet ---------------------------------------------------------------------------------


class DenseNetGates:
    def __init__(self, network: DenseNetW) -> None:
        self.network = network
        self.layout = GateLayout(0, [], {})
        self.reads: list[list[int]] = []
        self.mids: list[list[int]] = []
        for index, part in enumerate(network.parts):
            prefix = f"parts.{index}"
            reads = list(self.layout.add(f"part{index + 1}.reads", len(part.inputs), True, index))
            self.reads.append(reads)
            self.layout.points[f"{prefix}.reads.bn" if part.kind != "f" else f"{prefix}.bn"] = (
                torch.tensor(reads)
            )
            mids: list[int] = []
            if part.kind == "d":
                mids = list(
                    self.layout.add(f"part{index + 1}.bottleneck", part.bottleneck, True, index)
                )
                self.layout.points[f"{prefix}.bn2"] = torch.tensor(mids)
            self.mids.append(mids)
        # per part: the (producer part index, or -1 for the stem; channel) of each channel of
        # the concatenation it reads from
        self.sources = [self._sources(i, width) for i, (_, width, _) in enumerate(network.walk())]
        # closing one gate of the full network saves the same MACs as closing another with the
        # same signature: the same part, and a source channel of the same producer read by as
        # many parts (the last reader also removes the producer's channel)
        readers: dict[tuple[int, int], int] = {}
        for index, part in enumerate(network.parts):
            for channel in part.inputs:
                source = self.sources[index][channel]
                readers[source] = readers.get(source, 0) + 1
        self.signatures: list[tuple] = []
        for index, part in enumerate(network.parts):
            for channel in part.inputs:
                source = self.sources[index][channel]
                self.signatures.append(("read", index, source[0], readers[source]))
            self.signatures += [("mid", index)] * (part.bottleneck if part.kind == "d" else 0)

    def _plan(self, keep: torch.Tensor):
        """Per part: kept read positions (in the part's input order), kept bottleneck rows,
        kept output rows and whether it is live; and the kept stem rows."""
        keep = _flags(keep)
        parts = self.network.parts
        reads = [[i for i, gate in enumerate(g) if keep[gate]] for g in self.reads]
        mids = [[i for i, gate in enumerate(g) if keep[gate]] for g in self.mids]
        used: set[tuple[int, int]] = set()  # (producer part index or -1 for stem, channel)
        live = [True] * len(parts)
        sources = self.sources
        for index in reversed(range(len(parts))):
            part = parts[index]
            if part.kind == "d":
                live[index] = any((index, c) in used for c in range(part.out))
            if live[index]:
                for position in reads[index]:
                    used.add(sources[index][part.inputs[position]])
        outs = [[c for c in range(p.out) if (i, c) in used] for i, p in enumerate(parts)]
        stem = [c for c in range(self.network.stem) if (-1, c) in used]
        return reads, mids, outs, live, stem, sources

    def connections(self, keep) -> list[list[float | None]]:
        """The paper's Fig. 5: ``[consumer part][producer]`` (producer 0 the stem, i + 1 part
        i), the fraction of the producer's channels the consumer still reads; None where it
        never read any."""
        keep = _flags(keep)
        parts = self.network.parts
        matrix: list[list[float | None]] = [[None] * (len(parts) + 1) for _ in parts]
        for index, part in enumerate(parts):
            counts: dict[int, list[int]] = {}
            for position, gate in enumerate(self.reads[index]):
                producer = self.sources[index][part.inputs[position]][0]
                total_kept = counts.setdefault(producer, [0, 0])
                total_kept[0] += 1
                total_kept[1] += keep[gate]
            for producer, (total, kept) in counts.items():
                matrix[index][producer + 1] = kept / total
        return matrix

    def _sources(self, index: int, width: int) -> list[tuple[int, int]]:
        parts, start = self.network.parts, index
        while start > 0 and parts[start - 1].kind == "d":
            start -= 1
        origin = start - 1  # the transition that starts the block, or -1: the stem
        channels = self.network.stem if origin < 0 else parts[origin].out
        sources = [(origin, c) for c in range(channels)]
        for producer in range(start, index):
            sources += [(producer, c) for c in range(parts[producer].out)]
        assert len(sources) == width
        return sources

    def shrink(self, keep: torch.Tensor) -> DenseNetW:
        return self._shrink(keep)[0]

    def _shrink(self, keep: torch.Tensor):
        reads, mids, outs, live, stem, sources = self._plan(keep)
        new_position: dict[tuple[int, int], int] = {}
        block = [(-1, c) for c in stem]
        parts = []
        for index, part in enumerate(self.network.parts):
            if not live[index]:
                continue
            new_position = {source: i for i, source in enumerate(block)}
            inputs = tuple(
                sorted(new_position[sources[index][part.inputs[p]]] for p in reads[index])
            )
            if part.kind == "d":
                parts.append(Part("d", inputs, len(mids[index]), len(outs[index])))
                block += [(index, c) for c in outs[index]]
            elif part.kind == "t":
                parts.append(Part("t", inputs, out=len(outs[index])))
                block = [(index, c) for c in outs[index]]
            else:
                parts.append(Part("f", inputs))
        network = self.network
        small = DenseNetW(network.input_size, network.num_classes, len(stem), tuple(parts))
        return small, (reads, mids, outs, live, stem, sources)

    def transfer(self, model: nn.Module, gates: torch.Tensor, keep: torch.Tensor):
        small, (reads, mids, outs, live, stem, sources) = self._shrink(keep)
        out = small.build()
        _copy_conv(out.stem, model.stem, stem, [0, 1, 2])
        target_index = 0
        for index, part in enumerate(self.network.parts):
            if not live[index]:
                continue
            source, target = model.parts[index], out.parts[target_index]
            target_index += 1
            spec = small.parts[target_index - 1]
            # the new part reads its inputs in sorted new positions: order the old reads alike
            order = _in_new_order(reads[index], index, part, sources, spec)
            read_gates = gates[torch.tensor([self.reads[index][p] for p in order])]
            bn = source.reads.bn if part.kind != "f" else source.bn
            folded = _fold(bn, order, read_gates)
            _load_bn(target.reads.bn if part.kind != "f" else target.bn, folded)
            if part.kind == "d":
                mid_gates = gates[torch.tensor([self.mids[index][m] for m in mids[index]])]
                _copy_conv(target.conv1, source.conv1, mids[index], order)
                _load_bn(target.bn2, _fold(source.bn2, mids[index], mid_gates))
                _copy_conv(target.conv2, source.conv2, outs[index], mids[index])
            elif part.kind == "t":
                _copy_conv(target.conv, source.conv, outs[index], order)
            else:
                rows = list(range(small.num_classes))
                _copy_conv(out.classifier, model.classifier, rows, order)
        return small, out


def _in_new_order(kept_reads, index, part, sources, spec) -> list[int]:
    """The kept read positions of the old part, ordered as the new part reads them (by the
    position of their source channel in the new concatenation: block origin first, then the
    producers in order, each channel ascending)."""

    def rank(position: int) -> tuple[int, int]:
        producer, channel = sources[index][part.inputs[position]]
        return producer, channel

    ordered = sorted(kept_reads, key=rank)
    assert len(ordered) == len(spec.inputs)
    return ordered


def gates_for(network):
    """The gate layout helper of a width-family network; a clear error for any other."""
    if isinstance(network, ResNetW):
        return ResNetGates(network)
    if isinstance(network, DenseNetW):
        return DenseNetGates(network)
    from models.widths_mnas import MnasW

    if isinstance(network, MnasW):
        from pipeline.gates.layout_mnas import MnasGates

        return MnasGates(network)
    raise ValueError(
        f"Gu & Tresp gates need a teacher of the resnetw:, densenet: or mnasw: family (a CIFAR "
        f"ResNet, DenseNet-BC or MnasNet-space network with BN layers to gate); got "
        f"{network.encode()[:60]!r}"
    )
