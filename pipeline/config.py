"""Search configuration: frozen dataclasses with defaults, read from TOML, overridden by CLI flags.

A config file has one table per section; every key is optional (the dataclass default applies)
and an unknown section or key is an error that names it and lists the valid ones::

    [data]        dataset and the mini-train / mini-val split
    [space]       search space, input size, classes
    [teacher]     teacher spec and the teacher-logit cache
    [proxy]       proxy training (loss kd | ce | od, epochs, ..., early termination)
    [reward]      MnasNet reward: preset, target, cost
    [controller]  name and its hyper-parameters ([controller.options])
    [search]      candidates per generation, budget, seed, latency targets for the report
    [latency]     backend chain, export format and caches
    [compute]     where every trainer runs (device, mixed precision, determinism)
    [ray]         the Ray executor (``search.executor = "ray"``)
    [kdas]        KDAS's add-on space and memory budget (``search.method = "kdas"``)

`SearchConfig` is the whole file.  A later command (``pearl run``: search + final training +
export) extends it by adding sections: `load_sections` takes the section classes as a mapping,
so a subclass config adds ``[train]`` / ``[export]`` without touching the parser.  The resolved
config is saved in the run folder as TOML together with its hash (`config_hash`); paths in it
are resolved by `pipeline.config_paths`.

The generic TOML reading (types, unknown keys, overrides) is `pipeline.config_toml`; the hash
and the saved file are `pipeline.config_hash`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from device_bench.spec import BackendSpec
from latency_tables.identity import PRECISIONS
from models.cache_dir import (
    ARTIFACTS_DIR,
    CACHE_DIR_VARIABLE,
    TEACHER_LOGITS_DIR,
)
from pipeline.config_errors import ConfigError
from pipeline.config_errors import require as _require
from pipeline.config_toml import merge, plain, read_toml, section
from pipeline.gates.config import GatesConfig
from pipeline.kdas_config import KdasConfig
from pipeline.registry import CONTROLLERS, LOSSES, SEARCH_METHODS
from pipeline.reward import COST_NAMES, MEMORY_SOURCES, PRESETS

CONFIG_FILE_NAME = "config.toml"


@dataclass(frozen=True)
class DataConfig:
    path: str = "$PEARL_DATA/cifar10_small.npz"  # see `resolve_path`
    val_fraction: float = 0.2  # held out of the training split as mini-val (stratified)
    split_seed: int = 0
    train_images: int = 0  # first N mini-train images (0: all)
    val_images: int = 0  # first N mini-val images (0: all)

    def __post_init__(self) -> None:
        _require(0 < self.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        _require(self.train_images >= 0, "data.train_images", "must be >= 0 (0: all)")
        _require(self.val_images >= 0, "data.val_images", "must be >= 0 (0: all)")


@dataclass(frozen=True)
class SpaceConfig:
    name: str = "mnas-cifar"  # mnas-cifar | mnas-imagenet (stride layouts, see README)
    input_size: int = 32
    num_classes: int = 10
    # optional overrides of the MnasNet space (empty / 0: the space's own values)
    width_multipliers: tuple[float, ...] = ()
    layer_deltas: tuple[int, ...] = ()
    stem_channels: int = 0
    head_channels: int = 0

    def __post_init__(self) -> None:
        from models.space import SPACE_DEFAULTS

        _require(
            self.name in SPACE_DEFAULTS, "space.name", f"must be one of {sorted(SPACE_DEFAULTS)}"
        )
        _require(self.input_size >= 8, "space.input_size", "must be >= 8 pixels")
        _require(self.num_classes >= 2, "space.num_classes", "must be >= 2")
        _require(all(w > 0 for w in self.width_multipliers), "space.width_multipliers", "> 0")
        _require(self.stem_channels >= 0 and self.head_channels >= 0, "space", "channels >= 0")

    def build(self):
        """The `models.space.SearchSpace` this section describes."""
        from models.space import get_space

        space = get_space(self.name, self.input_size, self.num_classes)
        overrides: dict[str, Any] = {}
        if self.width_multipliers:
            overrides["width_multipliers"] = tuple(self.width_multipliers)
        if self.layer_deltas:
            overrides["layer_deltas"] = tuple(self.layer_deltas)
        if self.stem_channels:
            overrides["stem_channels"] = self.stem_channels
        if self.head_channels:
            overrides["head_channels"] = self.head_channels
        return dataclasses.replace(space, **overrides) if overrides else space


@dataclass(frozen=True)
class TeacherConfig:
    # a Pearl .pt checkpoint, "torchvision:NAME=PATH", an ensemble spec file (ensemble.json
    # of `pearl teacher train --seeds`), or a comma-separated list (ensemble);
    # empty only with proxy.loss = "ce"
    spec: str = ""
    cache_dir: str = f"{CACHE_DIR_VARIABLE}/{TEACHER_LOGITS_DIR}"  # shared by searches


@dataclass(frozen=True)
class ProxyConfig:
    loss: str = "kd"  # kd (Hinton, AKD), ce (plain NAS), od (oracle KD, ensembles)
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: int = 1
    temperature: float = 1.0
    alpha: float = 0.9
    threads: int = 0  # torch threads for training (0: all cores)
    # early termination: after `early_stop_epoch` epochs (0: off), stop a candidate whose
    # mini-val accuracy is below early_stop_ratio x the best seen at that epoch in this search
    early_stop_epoch: int = 0
    early_stop_ratio: float = 0.5

    def __post_init__(self) -> None:
        _require(self.loss in LOSSES, "proxy.loss", f"must be one of {LOSSES.names}")
        _require(self.epochs >= 1, "proxy.epochs", "must be >= 1")
        _require(self.batch_size >= 1, "proxy.batch_size", "must be >= 1")
        _require(0 <= self.warmup_epochs <= self.epochs, "proxy.warmup_epochs", "0..epochs")
        _require(
            0 <= self.early_stop_epoch < self.epochs or self.early_stop_epoch == 0,
            "proxy.early_stop_epoch",
            "must be 0 (off) or less than proxy.epochs",
        )
        _require(0 < self.early_stop_ratio < 1, "proxy.early_stop_ratio", "must be in (0, 1)")
        _require(self.threads >= 0, "proxy.threads", "must be >= 0 (0: all cores)")


@dataclass(frozen=True)
class RewardConfig:
    preset: str = "soft"  # soft (-0.07, -0.07) or hard (0, -1), MnasNet
    target: float = 1.0  # in the unit of `cost`
    cost: str = "latency_ms"  # latency_ms | macs | params | memory_mb
    memory_source: str = "estimate"  # memory_mb from: estimate (models.memory) | measured (phone)
    max_memory_mb: float = 0.0  # winners need memory_mb <= this (0: no budget; README)

    def __post_init__(self) -> None:
        _require(self.preset in PRESETS, "reward.preset", f"must be one of {sorted(PRESETS)}")
        _require(self.cost in COST_NAMES, "reward.cost", f"must be one of {COST_NAMES}")
        _require(self.target > 0, "reward.target", "must be > 0")
        _require(self.memory_source in MEMORY_SOURCES, "reward.memory_source", str(MEMORY_SOURCES))
        _require(self.max_memory_mb >= 0, "reward.max_memory_mb", "must be >= 0 (0: no budget)")

    @property
    def needs_memory(self) -> bool:
        """Does every candidate need a ``memory_mb`` (the cost or a budget)?"""
        return self.cost == "memory_mb" or self.max_memory_mb > 0

    def measured_memory_error(self, backends: tuple[str, ...]) -> str | None:
        """Why measured memory cannot come from these latency backends (None: it can)."""
        if not (self.needs_memory and self.memory_source == "measured"):
            return None
        silent = [b for b in backends if not _backend_spec(b, "latency.backends").is_phone]
        if backends and not silent:
            return None
        return (
            "reward.memory_source = 'measured' takes memory_mb from phones (benchmark_model's "
            f"memory footprint), but latency.backends {list(backends)} has "
            f"{', '.join(silent) or 'none'}, which report none: list only adb: phones, or set "
            "reward.memory_source = 'estimate' (no device)"
        )

    def spec(self):
        from pipeline.reward import RewardSpec

        return RewardSpec.preset(self.preset, self.target, cost=self.cost)


@dataclass(frozen=True)
class ControllerConfig:
    name: str = "ppo"
    options: dict[str, Any] = field(default_factory=dict)  # keyword hyper-parameters

    def __post_init__(self) -> None:
        _require(self.name in CONTROLLERS, "controller.name", f"must be one of {CONTROLLERS.names}")


@dataclass(frozen=True)
class SearchSection:
    batch_size: int = 8  # candidates per generation (one controller update each)
    max_candidates: int = 64  # budget in proposals (0: no limit, then max_hours must be set)
    max_hours: float = 0.0  # budget in wall-clock hours (0: no limit)
    seed: int = 0
    # latency targets (in reward.cost units) for the best-arch report; empty: [reward.target]
    report_targets: tuple[float, ...] = ()
    executor: str = "inprocess"  # inprocess | ray (where candidates train; see [ray])
    method: str = "akd"  # SEARCH_METHODS: akd (a controller proposes) | kdas | gates (Gu & Tresp)

    def __post_init__(self) -> None:
        _require(self.method in SEARCH_METHODS, "search.method", f"one of {SEARCH_METHODS.names}")
        _require(self.batch_size >= 1, "search.batch_size", "must be >= 1")
        _require(self.max_candidates >= 0, "search.max_candidates", "must be >= 0")
        _require(self.max_hours >= 0, "search.max_hours", "must be >= 0")
        _require(
            self.max_candidates > 0 or self.max_hours > 0,
            "search.max_candidates",
            "set a budget: max_candidates > 0 and/or max_hours > 0",
        )
        _require(self.seed >= 0, "search.seed", "must be >= 0")
        _require(self.executor in EXECUTORS, "search.executor", f"must be one of {EXECUTORS}")


@dataclass(frozen=True)
class LatencyConfig:
    # tried in order: phones (adb:SERIAL), then a table (table:FILE), then host:tflite|host:onnx
    backends: tuple[str, ...] = ("host:tflite",)
    export_cache_dir: str = f"{CACHE_DIR_VARIABLE}/{ARTIFACTS_DIR}"  # shared with `pearl bench`
    measurement_cache: str = ""  # SQLite file; "": device_bench's default; "none": no cache
    threads: int = 1  # inference threads on host backends
    overlap: bool = True  # export candidates in a background process while training
    direct_files: bool = True  # write .tflite latency files directly (no converter), guarded
    direct_check_every: int = 20  # ...and convert every Nth arch (and every winner) to compare
    remeasure_top: int = 3  # re-measure this many front-runners when a better backend returns
    precision: str = "fp32"  # of the files timed and the tables used: fp32 | fp16 | int8

    def __post_init__(self) -> None:
        _require(self.threads >= 1, "latency.threads", "must be >= 1")
        _require(self.precision in PRECISIONS, "latency.precision", f"must be one of {PRECISIONS}")
        for spec in self.backends:
            backend = _backend_spec(spec, "latency.backends")
            _require(
                self.precision == "fp32" or backend.artifact_format in (None, "tflite"),
                "latency.backends",
                f"{spec} times fp32 .onnx files only; with latency.precision = "
                f"{self.precision!r} use .tflite backends (host:tflite, adb:SERIAL, table:FILE)",
            )
        _require(self.remeasure_top >= 0, "latency.remeasure_top", "must be >= 0")
        _require(self.direct_check_every >= 1, "latency.direct_check_every", "must be >= 1")


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ComputeConfig:
    """Where every trainer runs (teacher, proxy and final training, teacher logits, evaluation)."""

    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16); never on CPU
    deterministic: bool = False  # on a GPU: deterministic kernels (slower); CPU always is

    def __post_init__(self) -> None:
        _require(
            DEVICE_PATTERN.fullmatch(self.device) is not None,
            "compute.device",
            f"{self.device!r} is not one of auto, cpu, cuda, cuda:N, mps",
        )


EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class RayConfig:
    """The Ray executor (``search.executor = "ray"``)."""

    address: str = ""  # "": start a local Ray; "auto" or "ray://HOST:PORT": join a cluster
    cpus_per_candidate: float = 1.0
    gpus_per_candidate: float = 0.0  # fractions share a GPU between candidates
    max_retries: int = 2  # a worker lost mid-candidate is retried this often

    def __post_init__(self) -> None:
        _require(self.cpus_per_candidate > 0, "ray.cpus_per_candidate", "must be > 0")
        _require(self.gpus_per_candidate >= 0, "ray.gpus_per_candidate", "must be >= 0")
        _require(self.max_retries >= 0, "ray.max_retries", "must be >= 0")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "space": SpaceConfig,
    "teacher": TeacherConfig,
    "proxy": ProxyConfig,
    "reward": RewardConfig,
    "controller": ControllerConfig,
    "search": SearchSection,
    "latency": LatencyConfig,
    "compute": ComputeConfig,
    "ray": RayConfig,
    "kdas": KdasConfig,
    "gates": GatesConfig,
}


@dataclass(frozen=True)
class SearchConfig:
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    search: SearchSection = field(default_factory=SearchSection)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    kdas: KdasConfig = field(default_factory=KdasConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)

    def __post_init__(self) -> None:
        """Each section checked itself when it was made; here the rules across sections."""
        if LOSSES[self.proxy.loss].needs_teacher and not self.teacher.spec:
            raise ConfigError(
                f"proxy.loss = {self.proxy.loss!r} needs a teacher: set teacher.spec to a "
                "checkpoint (or use proxy.loss = 'ce')"
            )
        if self.search.method == "gates" and not (self.gates.target_mmacs or self.gates.target_ms):
            raise ConfigError(
                "search.method = 'gates' needs gates.target_mmacs or gates.target_ms (> 0)"
            )
        if self.search.method == "gates" and self.gates.needs_latency:
            if self.reward.cost != "latency_ms":
                raise ConfigError(
                    "gates.weighting = 'latency' and gates.target_ms time networks on the "
                    "search's latency chain: set reward.cost = 'latency_ms' and latency.backends "
                    "(e.g. ['host:tflite'] or an adb: phone)"
                )
        if self.reward.cost == "latency_ms" and not self.latency.backends:
            raise ConfigError(
                "reward.cost = 'latency_ms' needs latency.backends (e.g. ['host:tflite']); or "
                "use reward.cost = 'macs', 'params' or 'memory_mb'"
            )
        problem = self.reward.measured_memory_error(self.latency.backends)
        if problem:
            raise ConfigError(problem)
        self.max_params()  # a KDAS memory budget below the backbone is an error here
        if self.search.method == "kdas" and self.kdas.evaluation == "shared":
            _require(
                self.search.executor == "inprocess",
                "search.executor",
                "kdas.evaluation = 'shared' trains one shared network in this process: "
                "use search.executor = 'inprocess' (or kdas.evaluation = 'proxy' on Ray)",
            )

    def max_params(self) -> int | None:
        """KDAS's parameter budget M (a parameter count), else None (all the winner rule's
        memory budgets: `pipeline.winners.memory_budgets`)."""
        return self.kdas.max_params(self.space) if self.search.method == "kdas" else None

    def to_dict(self) -> dict[str, Any]:
        return {name: plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}


# --------------------------------------------------------------------------------------------
# Parsing


def load_sections(
    raw: Mapping[str, Any], config_cls: type = SearchConfig, sections: Mapping[str, type] = SECTIONS
) -> Any:
    """Build `config_cls` from a parsed TOML mapping; unknown sections/keys are errors."""
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(f'[{u}]' for u in unknown)}; "
            f"valid sections: {', '.join(f'[{s}]' for s in sections)}"
        )
    built = {name: section(name, cls, raw[name]) for name, cls in sections.items() if name in raw}
    try:
        return config_cls(**built)
    except TypeError as error:  # a section class not accepted by config_cls
        raise ConfigError(str(error)) from None


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_cls: type = SearchConfig,
    sections: Mapping[str, type] = SECTIONS,
) -> Any:
    """Defaults <- the TOML file at `path` (if given) <- `overrides` (nested mapping)."""
    raw = read_toml(path) if path is not None else {}
    return load_sections(merge(raw, overrides or {}), config_cls, sections)


def _backend_spec(spec: str, key: str) -> BackendSpec:
    try:
        return BackendSpec.parse(spec)
    except ValueError as error:
        raise ConfigError(f"config key {key}: {error}") from None
