"""KDAS's search space over add-on networks (`models.addon_net`): after each stage of a backbone,
L add-on layers; per layer one decision for its op (7 options) and one 0/1 decision per earlier
add-on layer of its stage (the skip bits), so a controller samples ops and skips per layer."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from models.addon_net import OPS, AddonLayer, AddonNet, backbone
from models.space import Decision

SKIP_OPTIONS = (0, 1)


@dataclass(frozen=True)
class AddonSpace:
    backbone: str
    input_size: int
    num_classes: int
    layers_per_stage: int

    def __post_init__(self) -> None:
        backbone(self.backbone)  # ValueError naming the known backbones
        if self.layers_per_stage < 0:
            raise ValueError(f"layers_per_stage must be >= 0, got {self.layers_per_stage}")

    @property
    def name(self) -> str:
        return f"addon-{self.backbone}-L{self.layers_per_stage}"

    @property
    def stages(self) -> int:
        return len(backbone(self.backbone).widths)

    def decisions(self) -> tuple[Decision, ...]:
        """In order, per stage s and layer j: ``sS.aJ.op``, then ``sS.aJ.skipI`` for I < J."""
        steps = []
        for s in range(1, self.stages + 1):
            for j in range(1, self.layers_per_stage + 1):
                steps.append(Decision(f"s{s}.a{j}.op", OPS))
                steps += [Decision(f"s{s}.a{j}.skip{i}", SKIP_OPTIONS) for i in range(1, j)]
        return tuple(steps)

    def arch_from(self, choices: Sequence[int]) -> AddonNet:
        """The network for one option index per decision."""
        decisions = self.decisions()
        if len(choices) != len(decisions):
            raise ValueError(
                f"space {self.name} has {len(decisions)} decisions, got {len(choices)}"
            )
        for decision, choice in zip(decisions, choices, strict=True):
            if not 0 <= choice < len(decision.options):
                raise ValueError(
                    f"choice {choice} for {decision.name} of space {self.name}: "
                    f"expected 0..{len(decision.options) - 1}"
                )
        values = iter(choices)
        stages = []
        for _ in range(self.stages):
            layers = []
            for j in range(1, self.layers_per_stage + 1):
                op = OPS[next(values)]
                layers.append(
                    AddonLayer(op, tuple(SKIP_OPTIONS[next(values)] for _ in range(j - 1)))
                )
            stages.append(tuple(layers))
        return AddonNet(self.backbone, self.input_size, self.num_classes, tuple(stages))

    def choices_of(self, arch: AddonNet) -> list[int]:
        """The inverse of `arch_from`, or ValueError if `arch` is not in this space."""
        if not isinstance(arch, AddonNet) or (
            arch.backbone,
            arch.input_size,
            arch.num_classes,
        ) != (self.backbone, self.input_size, self.num_classes):
            raise ValueError(f"{arch} is not a network of space {self.name}")
        choices = []
        for layers in arch.stages:
            if len(layers) != self.layers_per_stage:
                raise ValueError(
                    f"{arch} has {len(layers)} add-on layers in a stage; space {self.name} "
                    f"has {self.layers_per_stage}"
                )
            for layer in layers:
                choices += [OPS.index(layer.op), *layer.skips]
        return choices

    def sample(self, rng: random.Random) -> AddonNet:
        return self.arch_from([rng.randrange(len(d.options)) for d in self.decisions()])

    def backbone_params(self) -> int:
        """Parameters of the backbone alone (what the memory budget is a multiple of)."""
        empty = ((),) * self.stages
        return AddonNet(self.backbone, self.input_size, self.num_classes, empty).cost().params
