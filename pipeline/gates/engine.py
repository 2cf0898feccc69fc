"""One gate search: the teacher's network with a gate per channel, trained on batches until the
network left by its closed gates reaches the target (Gu & Tresp sec. 3).

`GateEngine` owns the gated copy of the teacher, the weight optimiser (SGD with momentum) and the
gate iterates (`ProximalState`); each `step` updates both on one batch.  `shrunk()` is the
network with the closed channels removed (spec only); `extract()` also moves the weights (closed
gates exactly 0, open ones folded into their BN), so the module it returns computes what the
gated network computes.  Device-agnostic: it runs where its tensors are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.gates.config import GatesConfig
from pipeline.gates.layout import gates_for
from pipeline.gates.optim import (
    GatedNetwork,
    ProximalState,
    cost_weights,
    open_gates,
    proximal_step,
    search_loss,
)


@dataclass(frozen=True)
class TrajectoryPoint:
    step: int
    macs: int
    params: int
    open_gates: int
    predicted_ms: float | None = None  # with a latency fit (`pipeline.gates.latency`)


class GateEngine:
    def __init__(
        self,
        network,
        weights: dict[str, torch.Tensor],
        settings: GatesConfig,
        device: torch.device | str = "cpu",
    ) -> None:
        self.network = network
        self.helper = gates_for(network)
        self.settings = settings
        self.device = torch.device(device)
        model = network.build()
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            message = f"the teacher's weights do not fit {network.encode()[:60]}: {error}"
            raise ValueError(message) from None
        self.gated = GatedNetwork(model, self.helper.layout).to(self.device)
        self.latency = None  # a LatencyFit, once `use_latency` gives one
        if settings.weighting != "latency":  # latency weights come with `use_latency`
            self.set_weights(cost_weights(self.helper, settings.weighting))
        else:
            self.set_weights(torch.ones(self.helper.layout.size))
        self.state = ProximalState.start(self.helper.layout.size, self.device)
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=settings.weight_lr,
            momentum=0.9,
            weight_decay=settings.weight_decay,
        )
        self.steps = 0
        self.trajectory: list[TrajectoryPoint] = []
        self.record()

    def set_weights(self, alpha: torch.Tensor) -> None:
        """alpha_j of eq. 3 (one per gate): the soft threshold is ``eta lambda2 alpha_j``."""
        self.alpha = alpha.to(self.device)
        self.threshold = self.settings.eta * self.settings.lambda2 * self.alpha

    def use_latency(self, fit) -> None:
        """Predict each snapshot's latency with `fit`; with ``weighting = "latency"`` also take
        its alpha.  Call before the first step."""
        self.latency = fit
        if self.settings.weighting == "latency":
            self.set_weights(fit.alpha())
        if self.trajectory and self.trajectory[-1].predicted_ms is None:
            self.trajectory[-1] = self._point()

    # -- optimisation -------------------------------------------------------------------------

    def step(self, images: torch.Tensor, labels: torch.Tensor, teacher_logits) -> float:
        """One joint update on a batch: weights by SGD, gates by eq. 4.  Returns the loss."""
        gates = self.gated.gates
        with torch.no_grad():
            gates.copy_(self.state.g)
        self.gated.train()
        logits = self.gated(images)
        loss = search_loss(
            logits, teacher_logits, labels, self.settings.loss, self.settings.temperature
        )
        self.optimizer.zero_grad(set_to_none=True)
        gates.grad = None
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.state = proximal_step(
                self.state,
                gates.grad,
                eta=self.settings.eta,
                mu=self.settings.momentum,
                threshold=self.threshold,
                layout=self.helper.layout,
            )
        self.steps += 1
        return float(loss.detach())

    def advance(self, loader, teacher: nn.Module, end_step: int, reached) -> None:
        """Step on `loader`'s batches (a `pipeline.batches.BatchLoader`, epochs numbered by
        step) with the `teacher`'s logits until step `end_step` or until ``reached()``."""
        loader.set_epoch(self.steps // max(1, len(loader)))
        while self.steps < end_step and not reached():
            for images, labels in loader:
                with torch.no_grad():
                    teacher_logits = teacher(images)
                self.step(images, labels, teacher_logits)
                if self.steps >= end_step or reached():
                    break

    # -- what is left -------------------------------------------------------------------------

    def keep(self) -> torch.Tensor:
        return (~self.state.closed).cpu()

    def shrunk(self):
        """The network with the closed channels removed (a width-family spec)."""
        return self.helper.shrink(self.keep())

    def record(self) -> TrajectoryPoint:
        self.trajectory.append(self._point())
        return self.trajectory[-1]

    def _point(self) -> TrajectoryPoint:
        cost = self.shrunk().cost()
        keep = self.keep()
        predicted = None if self.latency is None else round(self.latency.predict_ms(keep), 4)
        return TrajectoryPoint(self.steps, cost.macs, cost.params, int(keep.sum()), predicted)

    def extract(self) -> tuple[Any, nn.Module]:
        """``(network, module)``: the shrunk network with the gated network's weights."""
        gates = open_gates(self.state).detach().cpu()
        model = self.gated.model
        was = model.training
        cpu_model = _cpu_copy(model).eval()
        model.train(was)
        return self.helper.transfer(cpu_model, gates, self.keep())

    def gated_eval(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the gated network in eval mode with closed gates exactly 0."""
        with torch.no_grad():
            self.gated.gates.copy_(open_gates(self.state))
            self.gated.eval()
            return self.gated(images)

    def kept_per_group(self) -> list[int]:
        keep = self.keep()
        return [int(keep[g.start : g.stop].sum()) for g in self.helper.layout.groups]

    # -- resume -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "gates": self.state.state_dict(),
            "weights": {k: v.detach().cpu() for k, v in self.gated.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "trajectory": [point.__dict__ for point in self.trajectory],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        gates = state["gates"]
        self.state = ProximalState(*(gates[key].to(self.device) for key in ("g", "v", "closed")))
        self.gated.model.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.trajectory = [TrajectoryPoint(**point) for point in state["trajectory"]]


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()
