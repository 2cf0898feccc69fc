"""The controller interface and the helpers every controller shares.

A controller proposes architectures as *choice vectors* (one option index per decision of a
`models.space.SearchSpace`) and learns from their rewards.  Its `state_dict` holds everything
needed to continue exactly where it stopped (weights, optimiser, RNG, baselines, population): a
controller restored from it proposes and updates exactly as the uninterrupted one would.  State
dicts hold only tensors, numbers, strings, lists, tuples and dicts, so
``torch.save`` / ``torch.load(..., weights_only=True)`` round-trip them.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Choices = list[int]


@runtime_checkable
class Controller(Protocol):
    """What the search loop drives: propose, evaluate elsewhere, update."""

    option_counts: tuple[int, ...]

    def propose(self, n: int) -> list[Choices]:
        """``n`` choice vectors, each with one index in ``range(count)`` per decision."""
        ...

    def update(
        self, choices: Sequence[Sequence[int]], rewards: Sequence[float]
    ) -> dict[str, float]:
        """Learn from evaluated choice vectors and their rewards; returns training statistics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the full state (later calls do not change it)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict` of a controller built with the same decisions."""
        ...


def option_counts(decisions: Sequence[Any]) -> tuple[int, ...]:
    """Option count per decision; accepts `models.space.Decision`-like objects or plain ints."""
    counts = tuple(len(d.options) if hasattr(d, "options") else int(d) for d in decisions)
    if not counts:
        raise ValueError("a controller needs at least one decision")
    if any(count < 1 for count in counts):
        raise ValueError(f"every decision needs at least one option, got counts {counts}")
    return counts


def keyword_options(init: Callable[..., Any], call_locals: Mapping[str, Any]) -> dict[str, Any]:
    """A controller's hyperparameters: the keyword-only parameters of its ``__init__`` with the
    values of this call (``call_locals``: ``locals()`` inside that ``__init__``), in signature
    order, so the saved config lists every option once and in a fixed order."""
    return {
        name: call_locals[name]
        for name, parameter in inspect.signature(init).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_proposal_count(n: int) -> None:
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"number of proposals must be a non-negative int, got {n!r}")


def check_batch(
    counts: tuple[int, ...], choices: Sequence[Sequence[int]], rewards: Sequence[float]
) -> tuple[list[Choices], list[float]]:
    """Validated copies of an update batch; ValueError says which entry is wrong."""
    if len(choices) != len(rewards):
        raise ValueError(f"got {len(choices)} choice vectors but {len(rewards)} rewards")
    if not choices:
        raise ValueError("update needs at least one (choices, reward) pair")
    clean_choices, clean_rewards = [], []
    for index, (vector, value) in enumerate(zip(choices, rewards, strict=True)):
        vector = [int(c) for c in vector]
        if len(vector) != len(counts):
            raise ValueError(
                f"choice vector {index} has {len(vector)} entries; expected {len(counts)}"
            )
        for step, (choice, count) in enumerate(zip(vector, counts, strict=True)):
            if not 0 <= choice < count:
                raise ValueError(
                    f"choice vector {index}: index {choice} at decision {step} is out of "
                    f"range 0..{count - 1}"
                )
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"reward {index} is not finite: {value}")
        clean_choices.append(vector)
        clean_rewards.append(value)
    return clean_choices, clean_rewards


def check_state_header(
    kind: str, counts: tuple[int, ...], config: dict[str, Any], state: dict[str, Any]
) -> None:
    """ValueError unless ``state`` comes from the same kind of controller, built for the same
    decisions with the same hyperparameters (a resumed search must continue the same run)."""
    if state.get("kind") != kind:
        raise ValueError(f"state is from a {state.get('kind')!r} controller, not {kind!r}")
    saved = tuple(state.get("option_counts", ()))
    if saved != counts:
        raise ValueError(
            f"state was saved for decisions with option counts {saved}, this controller has "
            f"{counts}; build it from the same search space"
        )
    saved_config = dict(state.get("config", {}))
    if saved_config != config:
        changed = sorted(
            key
            for key in set(saved_config) | set(config)
            if saved_config.get(key) != config.get(key)
        )
        details = ", ".join(
            f"{k}: saved {saved_config.get(k)!r}, now {config.get(k)!r}" for k in changed
        )
        raise ValueError(
            f"state was saved with other {kind} options ({details}); build the controller with "
            "the saved options to resume"
        )


def set_python_rng_state(rng: random.Random, state: Sequence) -> None:
    """`random.Random.setstate`, tolerant of tuples turned into lists by serialisers."""
    version, internal, gauss_next = state
    rng.setstate((version, tuple(internal), gauss_next))


class PythonRandomController:
    """What the random and evolution controllers share: the decisions, the hyperparameters, one
    `random.Random` seeded with ``seed`` for all their randomness, the update count, and
    (de)serialising them.  Subclasses implement `propose` and `update` and keep any extra state
    in `_extra_state` / `_load_extra_state`."""

    kind = "python-random"

    def __init__(self, decisions: Sequence[Any], seed: int, config: dict[str, Any]) -> None:
        self.option_counts = option_counts(decisions)
        self.config = dict(config)
        self.rng = random.Random(seed)
        self.updates = 0

    def _uniform(self, n: int) -> list[Choices]:
        """``n`` choice vectors with every decision uniform and independent."""
        return [[self.rng.randrange(k) for k in self.option_counts] for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "option_counts": self.option_counts,
            "config": dict(self.config),
            "rng": self.rng.getstate(),
            **self._extra_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_header(self.kind, self.option_counts, self.config, state)
        set_python_rng_state(self.rng, state["rng"])
        self._load_extra_state(state)
        self.updates = int(state["updates"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass
