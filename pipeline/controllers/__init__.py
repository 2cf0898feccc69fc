"""Search controllers: what proposes the next architectures and learns from their rewards.

``make_controller(name, space.decisions(), seed, **options)`` builds one of

* ``"ppo"``: AKD's LSTM actor-critic trained with PPO (`PPOController`);
* ``"reinforce"``: KDAS's LSTM policy trained with REINFORCE and an EMA baseline
  (`ReinforceController`);
* ``"random"``: uniform random search (`RandomController`);
* ``"evolution"``: regularised (aging) evolution, Real et al. 2019 (`EvolutionController`).

All follow the `Controller` protocol: ``propose(n)``, ``update(choices, rewards)``,
``state_dict()`` / ``load_state_dict(state)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from pipeline.controllers.base import Controller, option_counts
from pipeline.controllers.evolution import EvolutionController
from pipeline.controllers.ppo import PPOController
from pipeline.controllers.random_search import RandomController
from pipeline.controllers.reinforce import ReinforceController
from pipeline.registry import CONTROLLERS as CONTROLLER_REGISTRY

CONTROLLERS: dict[str, type] = {entry.name: entry.load() for entry in CONTROLLER_REGISTRY}


def make_controller(
    name: str, decisions: Sequence[Any], seed: int = 0, **options: Any
) -> Controller:
    """The controller called ``name`` (`pipeline.registry.CONTROLLERS`) for these decisions;
    ``options`` are its keyword hyperparameters (ValueError names the accepted ones when one is
    unknown)."""
    cls = CONTROLLER_REGISTRY[name].load()
    accepted = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for controller {name!r}; accepted: {accepted or 'none'}"
        )
    return cls(decisions, seed, **options)


__all__ = [
    "CONTROLLERS",
    "Controller",
    "EvolutionController",
    "PPOController",
    "RandomController",
    "ReinforceController",
    "make_controller",
    "option_counts",
]
