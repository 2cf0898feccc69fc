"""Which searched architectures win: one rule, used by `pearl search` (``best_arch.json``) and
`pearl run` (``winners.json``, the models that go on to final training).

For every latency target: **the most accurate candidate whose cost is within the target**, ties
broken by the lower cost; its ``reward`` is the MnasNet reward at that target.  A target is a
budget the student must meet on the phone, so a slower candidate never wins it, whatever the
reward's exponents (with the *soft* preset the search itself may prefer a slightly slower,
more accurate arch: that steers the search, it does not move the budget).  When no candidate is
within a target, the entry holds the candidate with the best reward at that target, marked
``"within_target": false`` with a note, so a run still has something to train and says why.

Memory budgets (`MemoryBudget`) come first: only candidates within every budget compete, for
accuracy within the target as above.  There are two, set in the config and found by
`memory_budgets`: KDAS's parameter memory (eq. 7: |m| <= M, a
parameter count ``max_params`` from ``kdas.memory_factor`` / ``kdas.memory_mb``) and
``reward.max_memory_mb`` (the candidates' ``memory_mb``, any method).  A budget is a hard filter
here, not a factor of the reward.  When no candidate fits, the rule picks among all candidates
as without a budget, and the entry is marked ``"within_memory": false`` with a note.  Pure
functions over candidate rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    "memory_mb",
    "memory_source",
    "generation",
    "arch",
)


@dataclass(frozen=True)
class MemoryBudget:
    """A hard limit of the winner rule: a candidate's `column` (``params``: KDAS's parameter
    count; ``memory_mb``) must be at most `limit`; `setting` names the config keys that set it
    (for the note when nothing fits).  Winner entries hold it as ``max_<column>``."""

    column: str
    limit: float
    setting: str

    @property
    def entry_key(self) -> str:
        return f"max_{self.column}"

    def fits(self, row: Any) -> bool:
        value = getattr(row, self.column)
        return value is not None and value <= self.limit

    def describe(self) -> str:
        return f"{limits_text({self.entry_key: self.limit})} ({self.setting})"


def limits_text(entry: dict[str, Any]) -> str:
    """``params <= 540,000 and memory_mb <= 4.5``: the budgets a winner entry holds."""
    parts = [
        f"{key[4:]} <= {entry[key]:,}" if key == "max_params" else f"{key[4:]} <= {entry[key]:g}"
        for key in ("max_params", "max_memory_mb")
        if key in entry
    ]
    return " and ".join(parts)


def memory_budgets(config: Any) -> list[MemoryBudget]:
    """The budgets a `pipeline.config.SearchConfig` sets: KDAS's M (``search.method = "kdas"``)
    and ``reward.max_memory_mb`` (when > 0)."""
    budgets = []
    if (max_params := config.max_params()) is not None:
        budgets.append(MemoryBudget("params", max_params, "kdas.memory_factor or memory_mb"))
    if config.reward.max_memory_mb:
        budgets.append(
            MemoryBudget("memory_mb", config.reward.max_memory_mb, "reward.max_memory_mb")
        )
    return budgets


def pick_winners(
    rows: Iterable[Any],
    targets: Sequence[float],
    spec: RewardSpec,
    budgets: Sequence[MemoryBudget] = (),
) -> list[dict[str, Any]]:
    """One entry per target: ``{"target", "reward", "within_target", **WINNER_FIELDS}`` of the
    winner (module docstring), or ``{"target", "arch": None}`` when no candidate has an accuracy
    and a cost.

    `rows` are `pipeline.store.Candidate`-like objects (``accuracy``, ``cost(name)``, and the
    fields above); `spec` gives the exponents and the cost name, its target is replaced by each
    target in turn.  With `budgets`, entries also hold each ``max_<column>`` and
    ``within_memory``."""
    scored = [r for r in rows if r.accuracy is not None and r.cost(spec.cost) is not None]
    fits = [r for r in scored if all(b.fits(r) for b in budgets)]
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
        if budgets:
            entry.update({b.entry_key: b.limit for b in budgets}, within_memory=bool(fits))
            if not fits:
                entry["note"] = (
                    "no scored candidate fits the memory budget "
                    f"({'; '.join(b.describe() for b in budgets)}), so it was left out; raise "
                    f"{' or '.join(b.setting for b in budgets)}"
                )
        winners.append(entry)
    return winners
