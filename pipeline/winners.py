"""Which searched architectures go on to final training: for every latency target, the one with
the best reward under that target (MnasNet reward with the run's exponents), ties broken by the
lower measured cost.  Pure functions over candidate rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.reward import RewardSpec

WINNER_FIELDS = (
    "key",
    "arch",
    "accuracy",
    "latency_ms",
    "latency_source",
    "latency_spec",
    "macs",
    "params",
    "generation",
)


def pick_winners(
    rows: Iterable[Any], targets: Sequence[float], spec: RewardSpec
) -> list[dict[str, Any]]:
    """One entry per target: ``{"target", "reward", **WINNER_FIELDS}`` of the best candidate, or
    ``{"target", "arch": None}`` when no candidate has an accuracy and a cost.

    `rows` are `pipeline.store.Candidate`-like objects (``accuracy``, ``cost(name)``, and the
    fields above); `spec` gives the exponents and the cost name, its target is replaced by each
    target in turn."""
    scored = [r for r in rows if r.accuracy is not None and r.cost(spec.cost) is not None]
    winners = []
    for target in targets:
        at_target = RewardSpec(target=target, alpha=spec.alpha, beta=spec.beta, cost=spec.cost)
        best = max(
            scored,
            key=lambda r: (at_target(r.accuracy, float(r.cost(spec.cost))), -r.cost(spec.cost)),
            default=None,
        )
        if best is None:
            winners.append({"target": target, "arch": None})
            continue
        entry = {"target": target, "reward": at_target(best.accuracy, float(best.cost(spec.cost)))}
        entry.update({name: getattr(best, name) for name in WINNER_FIELDS})
        winners.append(entry)
    return winners
