"""Random search: every decision uniform and independent (the baseline every search must beat)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.controllers.base import PythonRandomController, check_batch, check_proposal_count


class RandomController(PythonRandomController):
    kind = "random"

    def __init__(self, decisions: Sequence[Any], seed: int = 0) -> None:
        super().__init__(decisions, seed, config={})

    def propose(self, n: int) -> list[list[int]]:
        check_proposal_count(n)
        return self._uniform(n)

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
