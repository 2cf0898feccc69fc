"""``[kdas]``: KDAS's add-on space and memory budget (``search.method = "kdas"``; README "KDAS").
Pure Python: reading a config imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.memory import BYTES_PER_VALUE, MEGABYTE
from pipeline.config_errors import require

if TYPE_CHECKING:
    from pipeline.config import SpaceConfig


@dataclass(frozen=True)
class KdasConfig:
    """``[kdas]`` (with ``search.method = "kdas"``): the add-on space (`models.addon_space`)
    over a backbone, at ``[space]``'s input size and classes, and the memory budget M of the
    winner rule (KDAS eq. 7: the best candidate with parameter memory <= M)."""

    backbone: str = "resnet20"  # resnet20|32|44|56|110, wrn16-1|16-2|16-4|40-1|40-2
    layers_per_stage: int = 2  # add-on layers searched after each stage (L)
    evaluation: str = "proxy"  # proxy: each trained on its own; shared: ENAS weight sharing
    memory_factor: float = 2.0  # M = factor x the backbone's parameter memory (the paper's 2x)
    memory_mb: float = 0.0  # M in MB of float32 parameters; > 0 replaces memory_factor

    def __post_init__(self) -> None:
        from models.addon_net import BACKBONES

        require(self.backbone in BACKBONES, "kdas.backbone", f"must be one of {tuple(BACKBONES)}")
        require(0 <= self.layers_per_stage <= 6, "kdas.layers_per_stage", "must be 0..6")
        require(
            self.evaluation in ("proxy", "shared"), "kdas.evaluation", "must be proxy or shared"
        )
        require(self.memory_factor > 0, "kdas.memory_factor", "must be > 0")
        require(self.memory_mb >= 0, "kdas.memory_mb", "must be >= 0 (0: use memory_factor)")

    def build(self, space: SpaceConfig):
        """The `models.addon_space.AddonSpace` this section describes."""
        from models.addon_space import AddonSpace

        return AddonSpace(self.backbone, space.input_size, space.num_classes, self.layers_per_stage)

    def max_params(self, space: SpaceConfig) -> int:
        """M as a parameter count; ConfigError if it is below the backbone's own."""
        base = self.build(space).backbone_params()
        if self.memory_mb:
            limit, what = (
                int(self.memory_mb * MEGABYTE) // BYTES_PER_VALUE,
                f"kdas.memory_mb = {self.memory_mb:g}",
            )
        else:
            limit, what = (
                int(self.memory_factor * base),
                f"kdas.memory_factor = {self.memory_factor:g}",
            )
        limit_mb, base_mb = (count * BYTES_PER_VALUE / MEGABYTE for count in (limit, base))
        require(
            limit >= base,
            "kdas",
            f"{what} allows {limit:,} parameters ({limit_mb:.2f} MB), less than the backbone "
            f"{self.backbone} alone ({base:,}, {base_mb:.2f} MB); raise it "
            "(memory_factor >= 1, or memory_mb above the backbone's)",
        )
        return limit
