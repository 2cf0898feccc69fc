"""The error of an unusable config and the check that raises it, shared by every config
section (`pipeline.config`, `pipeline.run_config`, `pipeline.kdas_config`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override is unusable; the message names the key and the fix."""


def require(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: {what}")
