"""File paths in a config: made absolute when a run starts (so a saved run folder resumes from
anywhere), with two folder variables that have defaults even when unset:

* ``$PEARL_DATA``: the data folder (`pipeline.data.default_data_dir`: the variable, else
  ``../shared/data`` beside the checkout);
* ``$PEARL_CACHE_DIR``: the cache folder (`models.cache_dir.cache_root`: the variable, else
  ``~/.cache/pearl``).

A relative path is taken from the config file's folder (the caller passes it as `base`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from device_bench.spec import BackendSpec
from models.cache_dir import CACHE_DIR_ENV, cache_root
from pipeline.config import SearchConfig


def _data_dir() -> Path:
    from pipeline.data import default_data_dir

    return default_data_dir()


FOLDER_VARIABLES: dict[str, Callable[[], Path]] = {
    "PEARL_DATA": _data_dir,
    CACHE_DIR_ENV: cache_root,
}


def resolve_path(text: str, base: Path | None = None) -> Path:
    """`text` with the folder variables, other environment variables and ``~`` expanded; a
    relative path is taken from `base` (default the current directory)."""
    for name, folder in FOLDER_VARIABLES.items():
        if name in text:
            value = str(folder())
            text = text.replace("${" + name + "}", value).replace("$" + name, value)
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    if not path.is_absolute() and base is not None:
        path = base / path
    return path.resolve()


def _absolute_teacher_spec(spec: str, base: Path) -> str:
    parts = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.startswith("builtin:"):
            parts.append(part)
        elif part.startswith("torchvision:"):
            name, sep, weights = part.partition("=")
            parts.append(f"{name}{sep}{resolve_path(weights, base)}" if sep else part)
        else:
            parts.append(str(resolve_path(part, base)))
    return ",".join(parts)


def _absolute_backend(spec: str, base: Path) -> str:
    parsed = BackendSpec.parse(spec)
    return str(parsed.with_absolute_path(base)) if parsed.is_table else spec


def with_absolute_paths(config: SearchConfig, base: Path | None = None) -> SearchConfig:
    """`config` with every file path made absolute (`resolve_path`: relative ones taken from
    `base`, the config file's folder; default the current directory), so a saved run folder
    can be resumed from anywhere."""
    base = base or Path.cwd()
    latency = config.latency
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, path=str(resolve_path(config.data.path, base))),
        teacher=dataclasses.replace(
            config.teacher,
            spec=_absolute_teacher_spec(config.teacher.spec, base),
            cache_dir=str(resolve_path(config.teacher.cache_dir, base)),
        ),
        latency=dataclasses.replace(
            latency,
            backends=tuple(_absolute_backend(s, base) for s in latency.backends),
            export_cache_dir=str(resolve_path(latency.export_cache_dir, base)),
            measurement_cache=(
                str(resolve_path(latency.measurement_cache, base))
                if latency.measurement_cache not in ("", "none")
                else latency.measurement_cache
            ),
        ),
    )
