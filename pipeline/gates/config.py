"""``[gates]``: the Gu & Tresp gate search (``search.method = "gates"``), defaults the paper's."""

from __future__ import annotations

from dataclasses import dataclass

GATE_LOSSES = ("kd", "np")  # KL to the teacher (the paper) | cross-entropy ("network pruning")
# alpha_j = F_j / max F | 1 | measured ms per channel / max (`pipeline.gates.latency`)
GATE_WEIGHTINGS = ("flops", "uniform", "latency")


@dataclass(frozen=True)
class GatesConfig:
    target_mmacs: float = 0.0  # stop when the extracted network has at most this many MMACs
    target_ms: float = 0.0  # or: when its predicted latency (`pipeline.gates.latency`) is <= this
    loss: str = "kd"
    temperature: float = 4.0  # tau of the KL term
    weighting: str = "flops"
    eta: float = 0.01  # gate step size
    lambda2: float = 1e-3  # weight of the cost-weighted L1 term
    momentum: float = 0.9  # mu of eq. 4
    weight_lr: float = 0.01  # SGD on the weights (momentum 0.9), from the teacher's
    weight_decay: float = 1e-4  # 2 * lambda1 of eq. 3
    batch_size: int = 64
    steps_per_generation: int = 50  # gate steps between two snapshots handed to the search
    max_steps: int = 2000  # step budget: past it the search stops short of the target

    @property
    def needs_latency(self) -> bool:
        """Latency weights or a latency target: the search must time networks."""
        return self.weighting == "latency" or self.target_ms > 0

    def __post_init__(self) -> None:
        from pipeline.config import _require

        _require(self.loss in GATE_LOSSES, "gates.loss", f"must be one of {GATE_LOSSES}")
        _require(self.weighting in GATE_WEIGHTINGS, "gates.weighting", f"one of {GATE_WEIGHTINGS}")
        _require(self.target_mmacs >= 0, "gates.target_mmacs", "must be >= 0")
        _require(self.target_ms >= 0, "gates.target_ms", "must be >= 0")
        _require(
            not (self.target_mmacs and self.target_ms),
            "gates.target_ms",
            "set either gates.target_mmacs or gates.target_ms, not both",
        )
        for key in ("temperature", "eta", "lambda2", "weight_lr"):
            _require(getattr(self, key) > 0, f"gates.{key}", "must be > 0")
        _require(0 <= self.momentum < 1, "gates.momentum", "must be in [0, 1)")
        _require(self.weight_decay >= 0, "gates.weight_decay", "must be >= 0")
        for key in ("batch_size", "steps_per_generation", "max_steps"):
            _require(getattr(self, key) >= 1, f"gates.{key}", "must be >= 1")
