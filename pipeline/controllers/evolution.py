"""Regularised (aging) evolution, Real et al., "Regularized Evolution for Image Classifier
Architecture Search" (AAAI 2019), Algorithm 1.

The population is a queue of the last ``population_size`` evaluated individuals.  Until it is
full, `propose` returns uniformly random individuals.  Afterwards each proposal is a child: draw
``sample_size`` individuals uniformly at random (with replacement, as in Algorithm 1), take the
one with the highest reward and mutate it; a mutation picks one decision that has more than one
option and changes it to a different option, uniformly.  `update` appends the evaluated
individuals to the queue and removes the oldest ones ("aging"), whatever their reward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from pipeline.controllers.base import (
    PythonRandomController,
    check_batch,
    check_proposal_count,
    keyword_options,
)


class EvolutionController(PythonRandomController):
    kind = "evolution"

    def __init__(
        self,
        decisions: Sequence[Any],
        seed: int = 0,
        *,
        population_size: int = 32,
        sample_size: int = 8,
    ) -> None:
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(
                f"sample_size must be in 1..population_size ({population_size}), got {sample_size}"
            )
        super().__init__(decisions, seed, keyword_options(EvolutionController.__init__, locals()))
        self.population: deque[tuple[list[int], float]] = deque(maxlen=population_size)
        self._mutable = [step for step, k in enumerate(self.option_counts) if k > 1]

    def propose(self, n: int) -> list[list[int]]:
        check_proposal_count(n)
        if len(self.population) < self.config["population_size"]:
            return self._uniform(n)
        return [self._mutate(self._tournament_winner()) for _ in range(n)]

    def _tournament_winner(self) -> list[int]:
        sample = [self.rng.choice(self.population) for _ in range(self.config["sample_size"])]
        return max(sample, key=lambda individual: individual[1])[0]

    def _mutate(self, parent: list[int]) -> list[int]:
        child = list(parent)
        if self._mutable:
            step = self.rng.choice(self._mutable)
            other = self.rng.randrange(self.option_counts[step] - 1)
            child[step] = other if other < child[step] else other + 1  # any option but the old
        return child

    def update(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> dict[str, float]:
        choices, rewards = check_batch(self.option_counts, choices, rewards)
        self.population.extend(zip(choices, rewards, strict=True))  # maxlen drops the oldest
        self.updates += 1
        population_rewards = [reward for _, reward in self.population]
        return {
            "reward_mean": sum(rewards) / len(rewards),
            "reward_max": max(rewards),
            "population": float(len(self.population)),
            "population_reward_mean": sum(population_rewards) / len(population_rewards),
            "population_reward_max": max(population_rewards),
            "updates": float(self.updates),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"population": [(list(c), r) for c, r in self.population]}  # oldest first

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.population.clear()
        self.population.extend((list(c), float(r)) for c, r in state["population"])
