"""The names a Pearl config or command line may use, each list kept once, here.

Every entry names what it stands for as ``"module:attribute"``, imported only when used, so
reading a config (and ``pearl --help``) imports no torch.  Config checks, CLI choices and
factories all derive from these registries:

* `LOSSES`: the training losses (proxy and final training), with what each needs of a teacher;
* `CONTROLLERS`: what proposes architectures in a controller-driven search;
* `SEARCH_METHODS`: the search methods (DESIGN.md "Search methods and where they run").
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attribute"
    summary: str

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class LossKind(Entry):
    teacher: str = "none"  # "none" | "logits" (one teacher) | "members" (per ensemble member)

    @property
    def needs_teacher(self) -> bool:
        return self.teacher != "none"


@dataclass(frozen=True)
class MethodKind(Entry):
    space: str = "pipeline.methods:mnas_space"  # "module:function": config -> its space

    def build_space(self, config: Any) -> Any:
        module, _, attribute = self.space.partition(":")
        return getattr(importlib.import_module(module), attribute)(config)


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Named entries in a fixed order; an unknown name is a ValueError listing the known ones."""

    def __init__(self, kind: str, entries: list[E]) -> None:
        self.kind = kind
        self._entries = {entry.name: entry for entry in entries}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __getitem__(self, name: str) -> E:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names)}")
        return self._entries[name]


LOSSES: Registry[LossKind] = Registry(
    "loss",
    [
        LossKind("ce", "pipeline.losses:cross_entropy", "cross-entropy, no teacher (plain NAS)"),
        LossKind("kd", "pipeline.losses:hinton_kd", "Hinton KD (AKD)", teacher="logits"),
        LossKind(
            "od", "pipeline.losses:oracle_kd", "oracle KD of an ensemble (KDAS)", teacher="members"
        ),
    ],
)

CONTROLLERS: Registry[Entry] = Registry(
    "controller",
    [
        Entry("ppo", "pipeline.controllers.ppo:PPOController", "LSTM actor-critic, PPO (AKD)"),
        Entry(
            "reinforce",
            "pipeline.controllers.reinforce:ReinforceController",
            "LSTM policy, REINFORCE with an EMA baseline (KDAS)",
        ),
        Entry("random", "pipeline.controllers.random_search:RandomController", "uniform random"),
        Entry(
            "evolution",
            "pipeline.controllers.evolution:EvolutionController",
            "regularised (aging) evolution",
        ),
    ],
)

SEARCH_METHODS: Registry[MethodKind] = Registry(
    "search method",
    [
        MethodKind(
            "akd",
            "pipeline.methods:ControllerSearch",
            "a controller proposes archs of the space; KD proxy training scores them (AKD)",
        ),
        MethodKind(
            "kdas",
            "pipeline.methods:kdas_method",
            "a controller proposes add-on layers after a backbone's stages ([kdas]); proxy "
            "training or shared weights with the configured loss (oracle KD) score them (KDAS)",
            space="pipeline.methods:addon_space",
        ),
        MethodKind(
            "gates",
            "pipeline.gates.method:GateSearch",
            "gates on the teacher's channels close under a cost-weighted L1 term (Gu & Tresp)",
        ),
    ],
)
