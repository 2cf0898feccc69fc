"""The gate optimiser of Gu & Tresp (sec. 3.2-3.3): gated network, loss (eq. 3), cost weights
and the accelerated proximal gradient step (eq. 4).  Device-agnostic: every tensor lives where
the gates live.

Loss (eq. 3)::

    T^2 KL(softmax(teacher/T) || softmax(student/T))  [or CE(student, y): "np"]
      + lambda1 ||w||^2        (the weight optimiser's weight decay)
      + lambda2 sum_j alpha_j |g_j|    (not differentiated: the proximal step's threshold)

alpha_j = F_j / max_k F_k, F_j the MACs saved by closing gate j alone in the full teacher
(``weighting="flops"``) or 1 (``"uniform"``).  They are **fixed at the start**: the paper
defines them on the teacher; a fixed weighting keeps eq. 3 one objective for the whole run (a
recomputed one changes the problem under the momentum) and costs one pass over the gates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.gates.layout import GateLayout


def soft_threshold(z: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``S(z)_i = sign(z_i) * max(|z_i| - threshold_i, 0)``."""
    return z.sign() * (z.abs() - threshold).clamp_min(0.0)


def keep_one(shrunk: torch.Tensor, z: torch.Tensor, layout: GateLayout) -> torch.Tensor:
    """`shrunk` with, in every ``keep_one`` group that it closes entirely, the gate of largest
    ``|z|`` left at ``z`` (the keep-one rule of `pipeline.gates.layout`)."""
    out = shrunk.clone()
    for group in layout.groups:
        if group.keep_one and group.stop > group.start:
            if not out[group.start : group.stop].any():
                best = group.start + int(z[group.start : group.stop].abs().argmax())
                out[best] = z[best]
    return out


@dataclass
class ProximalState:
    """Eq. 4's iterates: gates ``g``, momentum ``v``, and which gates are closed (S(z) == 0)."""

    g: torch.Tensor
    v: torch.Tensor
    closed: torch.Tensor

    @classmethod
    def start(cls, size: int, device=None) -> ProximalState:
        ones = torch.ones(size, device=device)
        return cls(ones, torch.zeros_like(ones), torch.zeros(size, dtype=torch.bool, device=device))

    def state_dict(self) -> dict:
        return {"g": self.g.cpu(), "v": self.v.cpu(), "closed": self.closed.cpu()}


def proximal_step(
    state: ProximalState,
    grad: torch.Tensor,
    *,
    eta: float,
    mu: float,
    threshold: torch.Tensor,
    layout: GateLayout,
) -> ProximalState:
    """One step of eq. 4: ``z = g - eta grad``; ``v = S(z) - g + mu v``; ``g = S(z) + mu v``,
    with the per-gate soft threshold ``threshold`` (``eta * lambda2 * alpha_j``)."""
    z = state.g - eta * grad
    shrunk = keep_one(soft_threshold(z, threshold), z, layout)
    v = shrunk - state.g + mu * state.v
    return ProximalState(shrunk + mu * v, v, shrunk == 0)


def open_gates(state: ProximalState) -> torch.Tensor:
    """The gate values of the network with closed channels removed: g, closed ones exactly 0."""
    return state.g * (~state.closed)


class GatedNetwork(nn.Module):
    """`model` with each BN output multiplied by its gates (forward hooks from the layout)."""

    def __init__(self, model: nn.Module, layout: GateLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.gates = nn.Parameter(torch.ones(layout.size))
        modules = dict(model.named_modules())
        missing = [name for name in layout.points if name not in modules]
        if missing or not layout.points:
            raise ValueError(f"the network has no BN layers to gate at {missing or 'all'}")
        for name, index in layout.points.items():
            self.register_buffer(f"index_{name.replace('.', '_')}", index, persistent=False)
            modules[name].register_forward_hook(self._hook(f"index_{name.replace('.', '_')}"))

    def _hook(self, buffer: str):
        def multiply(module, inputs, output):
            return output * self.gates[getattr(self, buffer)].view(1, -1, 1, 1)

        return multiply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def cost_weights(helper, weighting: str) -> torch.Tensor:
    """alpha_j (see the module docstring): ``"flops"`` or ``"uniform"``."""
    size = helper.layout.size
    if weighting == "uniform":
        return torch.ones(size)
    if weighting != "flops":
        raise ValueError(f"unknown gate weighting {weighting!r}; choose flops or uniform")
    keep = [True] * size
    full = helper.shrink(keep).cost().macs
    saved = torch.zeros(size)
    known: dict = {}  # signature -> MACs saved (gates with one signature save alike)
    for j, signature in enumerate(helper.signatures):
        if signature not in known:
            keep[j] = False
            try:
                known[signature] = full - helper.shrink(keep).cost().macs
            except ValueError:  # the last gate of its layer: the keep-one rule never closes it
                known[signature] = 0
            keep[j] = True
        saved[j] = known[signature]
    if saved.max() <= 0:
        raise ValueError("no gate saves any MACs: nothing to weight")
    return saved / saved.max()


def search_loss(student: torch.Tensor, teacher: torch.Tensor, labels, kind: str, tau: float):
    """The data term of eq. 3: ``"kd"`` (KL at temperature tau, times tau^2) or ``"np"``
    (network pruning: cross-entropy with the labels, no teacher)."""
    from pipeline.losses import cross_entropy, hinton_kd

    if kind == "np":
        return cross_entropy(student, labels)
    if kind != "kd":
        raise ValueError(f"unknown gate search loss {kind!r}; choose kd or np")
    return hinton_kd(student, teacher, labels, temperature=tau, alpha=1.0)
