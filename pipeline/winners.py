"""Which searched architectures win: one rule, used by `pearl search` (``best_arch.json``) and
`pearl run` (``winners.json``, the models that go on to final training).

For every latency target: **the most accurate candidate whose cost is within the target**, ties
broken by the lower cost; its ``reward`` is the MnasNet reward at that target.  A target is a
budget the student must meet on the phone, so a slower candidate never wins it, whatever the
reward's exponents (with the *soft* preset the search itself may prefer a slightly slower,
more accurate arch: that steers the search, it does not move the budget).  When no candidate is
within a target, the entry holds the candidate with the best reward at that target, marked
``"within_target": false`` with a note, so a run still has something to train and says why.

An optional parameter budget (KDAS eq. 7: parameter memory |m| <= M, given as ``max_params``)
comes first: only candidates with at most that many parameters compete, for accuracy within the
target as above.  When none fits, the rule picks among all candidates as without a budget, and
the entry is marked ``"within_memory": false`` with a note.  Pure functions over candidate rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.reward import RewardSpec

WINNER_FIELDS = (
    "key",
    "accuracy",
    "latency_ms",
    "latency_source",
    "latency_spec",
    "macs",
    "params",
    "generation",
    "arch",
)


def pick_winners(
    rows: Iterable[Any],
    targets: Sequence[float],
    spec: RewardSpec,
    max_params: int | None = None,
) -> list[dict[str, Any]]:
    """One entry per target: ``{"target", "reward", "within_target", **WINNER_FIELDS}`` of the
    winner (module docstring), or ``{"target", "arch": None}`` when no candidate has an accuracy
    and a cost.

    `rows` are `pipeline.store.Candidate`-like objects (``accuracy``, ``cost(name)``, and the
    fields above); `spec` gives the exponents and the cost name, its target is replaced by each
    target in turn.  With `max_params`, entries also hold ``max_params`` and ``within_memory``."""
    scored = [r for r in rows if r.accuracy is not None and r.cost(spec.cost) is not None]
    fits = [r for r in scored if max_params is None or r.params <= max_params]
    winners = []
    for target in targets:
        at_target = RewardSpec(target=target, alpha=spec.alpha, beta=spec.beta, cost=spec.cost)
        pool = fits or scored  # nothing fits the memory budget: the rule without it
        within = [r for r in pool if r.cost(spec.cost) <= target]
        if within:
            best = max(within, key=lambda r: (r.accuracy, -r.cost(spec.cost)))
        else:
            best = max(
                pool,
                key=lambda r: (at_target(r.accuracy, float(r.cost(spec.cost))), -r.cost(spec.cost)),
                default=None,
            )
        if best is None:
            winners.append({"target": target, "arch": None})
            continue
        entry = {
            "target": target,
            "reward": at_target(best.accuracy, float(best.cost(spec.cost))),
            "within_target": bool(within),
        }
        entry.update({name: getattr(best, name) for name in WINNER_FIELDS})
        if not within:
            entry["note"] = (
                f"no scored candidate has {spec.cost} <= {target:g}: this is the best reward; "
                "raise the budget or the target"
            )
        if max_params is not None:
            entry.update(max_params=max_params, within_memory=bool(fits))
            if not fits:
                entry["note"] = (
                    f"no scored candidate has at most {max_params:,} parameters (the memory "
                    "budget), so it was left out; raise kdas.memory_factor or memory_mb"
                )
        winners.append(entry)
    return winners
