"""The config of `pearl run`: a search config (`pipeline.config`) plus two sections for the
stages after the search::

    [train]   final training of the winners and of a baseline, with KD and/or cross-entropy
    [export]  formats of the shipped bundle and the device the exported files are re-timed on

Every key is optional; unknown sections or keys are errors, as for `pearl search`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from models.export.common import DEFAULT_FORMATS, FORMATS
from pipeline.config import SECTIONS, ConfigError, SearchConfig, _backend_spec, _require
from pipeline.config_paths import resolve_path, with_absolute_paths
from pipeline.config_toml import plain
from pipeline.registry import LOSSES
from pipeline.train_settings import TrainRecipe


@dataclass(frozen=True)
class TrainStageConfig(TrainRecipe):
    """``[train]``: the training recipe (`pipeline.train_settings.TrainRecipe`: epochs, lr,
    schedule, KD temperature and weight...) and what it trains."""

    data: str = ""  # dataset of the final training and its test split ("": [data].path)
    train_images: int = 0  # first N training images (0: all; for quick trials)
    test_images: int = 0  # first N test images (0: all)
    losses: tuple[str, ...] = ("kd", "ce")  # both: the report shows the KD - CE gain
    baseline: str = "mobilenet_v2_0.5"  # trained the same way for comparison ("": none)
    threads: int = 0  # torch threads (0: all usable cores)

    def __post_init__(self) -> None:
        for name, problem in self.problems():
            raise ConfigError(f"config key train.{name}: {problem}")
        _require(bool(self.losses), "train.losses", "needs at least one of kd, ce, od")
        for loss in self.losses:
            _require(loss in LOSSES, "train.losses", f"{loss!r} is not one of {LOSSES.names}")
        _require(len(set(self.losses)) == len(self.losses), "train.losses", "has duplicates")
        _require(self.threads >= 0, "train.threads", "must be >= 0")
        _require(self.train_images >= 0, "train.train_images", "must be >= 0 (0: all)")
        _require(self.test_images >= 0, "train.test_images", "must be >= 0 (0: all)")


@dataclass(frozen=True)
class ExportStageConfig:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calib_images: int = 300  # training images that calibrate int8
    device: str = ""  # re-time the .tflite files here ("": the first adb: or host: backend)

    def __post_init__(self) -> None:
        for name in self.formats:
            _require(name in FORMATS, "export.formats", f"{name!r} not in {tuple(FORMATS)}")
        _require(self.calib_images >= 1, "export.calib_images", "must be >= 1")
        if self.device:
            _require(
                _backend_spec(self.device, "export.device").artifact_format == "tflite",
                "export.device",
                "must be adb:SERIAL, adb:HOST:PORT or host:tflite (a table cannot time a file)",
            )


RUN_SECTIONS: dict[str, type] = {
    **SECTIONS,
    "train": TrainStageConfig,
    "export": ExportStageConfig,
}


@dataclass(frozen=True)
class RunConfig(SearchConfig):
    train: TrainStageConfig = field(default_factory=TrainStageConfig)
    export: ExportStageConfig = field(default_factory=ExportStageConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(LOSSES[loss].needs_teacher for loss in self.train.losses) and not self.teacher.spec:
            raise ConfigError("train.losses has kd/od, which needs teacher.spec")

    def to_dict(self) -> dict[str, Any]:
        return {name: plain(dataclasses.asdict(getattr(self, name))) for name in RUN_SECTIONS}

    def search_config(self) -> SearchConfig:
        """The search part alone: the search stage's hash does not change with [train]/[export]."""
        return SearchConfig(**{name: getattr(self, name) for name in SECTIONS})

    def train_data(self) -> str:
        return self.train.data or self.data.path


def run_config_with_absolute_paths(config: RunConfig, base=None) -> RunConfig:
    searched = with_absolute_paths(config.search_config(), base)
    train = config.train
    if train.data:
        train = dataclasses.replace(train, data=str(resolve_path(train.data, base)))
    return RunConfig(
        **{name: getattr(searched, name) for name in SECTIONS}, train=train, export=config.export
    )
