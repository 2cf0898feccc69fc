"""Random search: every decision uniform and independent (the baseline every search must beat)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pipeline.controllers.base import (
    check_batch,
    check_proposal_count,
    check_state_header,
    option_counts,
    set_python_rng_state,
)


class RandomController:
    kind = "random"

    def __init__(self, decisions: Sequence[Any], seed: int = 0) -> None:
        self.option_counts = option_counts(decisions)
        self.config: dict[str, Any] = {}
        self.rng = random.Random(seed)
        self.updates = 0

    def propose(self, n: int) -> list[list[int]]:
        check_proposal_count(n)
        return [[self.rng.randrange(k) for k in self.option_counts] for _ in range(n)]

    def update(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> dict[str, float]:
        _, rewards = check_batch(self.option_counts, choices, rewards)
        self.updates += 1
        return {
            "reward_mean": sum(rewards) / len(rewards),
            "reward_max": max(rewards),
            "updates": float(self.updates),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "option_counts": self.option_counts,
            "config": dict(self.config),
            "rng": self.rng.getstate(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_header(self.kind, self.option_counts, self.config, state)
        set_python_rng_state(self.rng, state["rng"])
        self.updates = int(state["updates"])
