"""The MnasNet weighted-product reward that AKD uses as its "KD-guided reward".

MnasNet (Tan et al., CVPR 2019, eq. 2) and AKD (Liu et al., CVPR 2020, sec. 3.1)::

    reward = ACC(m) * (COST(m) / T) ** w,   w = alpha if COST(m) <= T else beta

With the *soft* preset (alpha = beta = -0.07) a model twice as slow as another needs about 5%
more accuracy for the same reward (2 ** -0.07 = 0.9526).  The *hard* preset (alpha = 0,
beta = -1) leaves models within the target unpenalised and divides the accuracy of slower ones
by how far they overshoot.  AKD's main searches use a latency target; its Table 8 swaps in a
FLOPs (MACs) target; KDAS constrains parameters; ``memory_mb`` is the inference memory
(`models.memory` estimates it, a phone measures it: ``MEMORY_SOURCES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CostName = Literal["latency_ms", "macs", "params", "memory_mb"]
COST_NAMES: tuple[str, ...] = ("latency_ms", "macs", "params", "memory_mb")
MEMORY_SOURCES: tuple[str, ...] = ("estimate", "measured")  # where a row's memory_mb comes from

SOFT: tuple[float, float] = (-0.07, -0.07)  # (alpha, beta), MnasNet's soft constraint
HARD: tuple[float, float] = (0.0, -1.0)  # MnasNet's hard constraint
PRESETS: dict[str, tuple[float, float]] = {"soft": SOFT, "hard": HARD}


def reward(accuracy: float, cost: float, target: float, alpha: float, beta: float) -> float:
    """``accuracy * (cost / target) ** w`` with ``w = alpha if cost <= target else beta``.

    ``accuracy`` is a fraction in [0, 1]; ``cost`` and ``target`` are positive numbers in the same
    unit (milliseconds, MACs, parameters or MB).  Raises ValueError otherwise.
    """
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target must be a positive finite number, got {target}")
    if not (math.isfinite(cost) and cost > 0):
        raise ValueError(f"cost must be a positive finite number, got {cost}")
    weight = alpha if cost <= target else beta
    return accuracy * (cost / target) ** weight


@dataclass(frozen=True)
class RewardSpec:
    """A reward definition: the cost it constrains, the target and the exponents.

    ``RewardSpec.preset("soft", 15.0)`` is AKD's 15 ms latency search;
    ``RewardSpec.preset("soft", 300e6, cost="macs")`` its FLOPs-target variant (Table 8).
    """

    target: float
    alpha: float = SOFT[0]
    beta: float = SOFT[1]
    cost: CostName = "latency_ms"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"reward target must be a positive finite number, got {self.target}")
        if self.cost not in COST_NAMES:
            raise ValueError(f"unknown reward cost {self.cost!r}; choose one of {COST_NAMES}")
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"alpha and beta must be finite, got {self.alpha}, {self.beta}")

    @classmethod
    def preset(cls, name: str, target: float, cost: CostName = "latency_ms") -> RewardSpec:
        """The ``"soft"`` or ``"hard"`` MnasNet exponents with the given target and cost."""
        if name not in PRESETS:
            raise ValueError(f"unknown reward preset {name!r}; choose one of {sorted(PRESETS)}")
        alpha, beta = PRESETS[name]
        return cls(target=target, alpha=alpha, beta=beta, cost=cost)

    def __call__(self, accuracy: float, cost: float) -> float:
        """The reward of a model with this ``accuracy`` and ``cost`` (in ``self.cost`` units)."""
        return reward(accuracy, cost, self.target, self.alpha, self.beta)
