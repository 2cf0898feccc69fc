"""Reading config TOML and ``--set`` overrides into section dataclasses, whatever the sections:
type coercion with errors that name the key, unknown keys listed with the valid ones, and the
merge of a file with overrides.  `pipeline.config` says which sections a config has."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config_errors import ConfigError


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively (TOML/JSON friendly)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """`value` converted to the field's declared type, or ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif annotation in (int, float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (annotation is float or isinstance(value, int)):
            return annotation(value)
        if isinstance(value, str):
            try:
                return annotation(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            return tuple(_coerce(f"{key}[{i}]", item_type, v) for i, v in enumerate(value))
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    kind = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {key}: expected {kind}, got {value!r}")


def section(name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"config section [{name}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"valid keys in [{name}]: {', '.join(valid)}"
        )
    values = {key: _coerce(f"{name}.{key}", hints[key], value) for key, value in table.items()}
    return cls(**values)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["proxy.epochs=3", "latency.backends=host:onnx"]`` -> nested mapping (values are
    strings here; `load_sections` converts them to the declared types)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. proxy.epochs=3")
        nested.setdefault(section, {})[name] = value.strip()
    return nested


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = dict(values) if isinstance(values, dict) else values
    return merged


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing .toml file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
