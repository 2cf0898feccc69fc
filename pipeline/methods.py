"""Search methods: what differs between AKD, KDAS and Gu & Tresp (DESIGN.md "Search methods and
where they run"); everything after "a candidate has a score" is shared.

A method is made of three parts:

* a **space** (`CandidateSpace`, from ``[space]``): the choices a proposer makes, turned into
  arch strings that decode, cost, build, export and time like every other network
  (`models.arch`, `models.builder`);
* a **proposer** or an **optimiser**: a `pipeline.controllers.Controller` that proposes choice
  vectors and learns from rewards (AKD's PPO, KDAS's REINFORCE), or an optimiser that derives
  candidates itself (Gu & Tresp's gates);
* an **evaluator**: the `pipeline.executor.Executor` that scores a candidate (proxy training
  with the configured loss: KD, CE or oracle KD).

The method drives; the `pipeline.search.Search` it is given owns the rest: the results store
and resume, reuse of duplicate archs, the latency chain, the reward, the budget, the progress
bar, the winners and the report.  Its whole contract (`SearchMethod`):

* ``restore(state)``: continue from the state saved with the last finished generation;
* ``run(search)``: until ``search.next_batch_size()`` is 0, hand archs to
  ``search.evaluate(archs, choices)`` (stored, timed and rewarded rows come back, in order),
  then ``search.finish_generation(state, rewards, stats)`` (one transaction: what a resume
  continues from).

Methods are registered by name in `pipeline.registry.SEARCH_METHODS`, each with the function that
builds its space from the config (``search.method`` picks one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from models.arch import Arch
    from pipeline.config import SearchConfig
    from pipeline.search import Search


class CandidateSpace(Protocol):
    """What a method's space provides (`models.space.SearchSpace` is one)."""

    input_size: int
    num_classes: int

    def decisions(self) -> Sequence[Any]: ...

    def arch_from(self, choices: Sequence[int]) -> Arch: ...

    def choices_of(self, arch: Arch) -> list[int]: ...


def mnas_space(config: SearchConfig) -> CandidateSpace:
    """AKD's space: the MnasNet space ``[space]`` describes (`models.space`)."""
    return config.space.build()


def addon_space(config: SearchConfig) -> CandidateSpace:
    """KDAS's space: add-on layers after the stages of ``[kdas]``'s backbone
    (`models.addon_space`), at ``[space]``'s input size and classes."""
    return config.kdas.build(config.space)


class SearchMethod(Protocol):
    def restore(self, state: dict[str, Any]) -> None: ...

    def run(self, search: Search) -> None: ...


class ControllerSearch:
    """AKD's loop (KDAS's too, with its space and REINFORCE): a controller proposes a batch of
    choice vectors, the shared evaluation scores them, the controller learns from the rewards."""

    def __init__(self, config: SearchConfig, space: CandidateSpace) -> None:
        from pipeline.controllers import make_controller

        self.space = space
        self.controller = make_controller(
            config.controller.name,
            space.decisions(),
            config.search.seed,
            **config.controller.options,
        )

    def restore(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state)

    def begin(self, search: Search) -> None:
        """Before the first generation (a subclass hands restored state to the search)."""

    def state(self, search: Search) -> dict[str, Any]:
        """What `restore` continues from, saved with each finished generation."""
        return self.controller.state_dict()

    def run(self, search: Search) -> None:
        self.begin(search)
        while n := search.next_batch_size():
            choices = self.controller.propose(n)
            rows = search.evaluate([self.space.arch_from(c) for c in choices], choices)
            rewards = [row.reward for row in rows]
            stats = self.controller.update(choices, rewards)
            search.finish_generation(self.state(search), rewards, stats)


def kdas_method(config: SearchConfig, space: CandidateSpace) -> SearchMethod:
    """KDAS: the controller loop; with ``kdas.evaluation = "shared"`` the one that saves the
    shared weights with each generation (`pipeline.kdas_shared`)."""
    if config.kdas.evaluation == "shared":
        from pipeline.kdas_shared import SharedWeightSearch

        return SharedWeightSearch(config, space)
    return ControllerSearch(config, space)
