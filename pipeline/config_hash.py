"""Which settings identify a run: the config hash a search stores with every row, what may
change when a run is resumed (budget, executor, compute), and the saved ``config.toml``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from models.files import atomic_write
from pipeline.config import CONFIG_FILE_NAME

BUDGET_KEYS = ("max_candidates", "max_hours", "report_targets")
# What says how big, where and how fast a run is, not what its rows mean: left out of the hash,
# so a run can be resumed with a bigger budget, on a GPU or on a cluster (None: whole section).
UNHASHED: dict[str, tuple[str, ...] | None] = {
    "search": (*BUDGET_KEYS, "executor"),
    "gates": ("max_steps",),
    "compute": None,
    "ray": None,
}


# Sections only one search method reads: hashed only in that method's runs, so a run's hash does
# not change when another method gains settings (AKD runs from before methods existed keep
# theirs: an "akd" method is left out too).
METHOD_SECTIONS: dict[str, str] = {"kdas": "kdas", "gates": "gates"}


def may_change_on_resume(section: str, key: str) -> bool:
    keys = UNHASHED.get(section, ())
    return keys is None or key in keys


def config_hash(config: Any) -> str:
    """First 16 hex digits of the sha256 of the config's canonical JSON, leaving out what
    `UNHASHED` names and the sections of other methods (`METHOD_SECTIONS`), so configs from
    before those keys existed keep their hash."""
    data = {
        section: {k: v for k, v in values.items() if not may_change_on_resume(section, k)}
        for section, values in config.to_dict().items()
    }
    method = data["search"].get("method")
    for section, owner in METHOD_SECTIONS.items():
        if owner != method:
            data.pop(section, None)
    if method == "akd":
        del data["search"]["method"]
    if data.get("gates", {}).get("target_ms") == 0:  # gate runs from before latency targets
        del data["gates"]["target_ms"]
    for key, default in (("memory_source", "estimate"), ("max_memory_mb", 0)):
        if data["reward"].get(key) == default:  # runs from before memory costs
            del data["reward"][key]
    if data.get("latency", {}).get("precision") == "fp32":  # runs from before precisions
        del data["latency"]["precision"]
    data = {section: values for section, values in data.items() if values}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(config: Any, run_dir: str | os.PathLike) -> str:
    """Write ``RUN_DIR/config.toml`` atomically (with the hash as a comment); returns the hash."""
    import tomli_w

    digest = config_hash(config)
    path = Path(run_dir) / CONFIG_FILE_NAME
    atomic_write(
        path, f"# resolved pearl config, hash {digest}\n" + tomli_w.dumps(config.to_dict())
    )
    return digest


def saved_config_hash(path: str | os.PathLike) -> str | None:
    """The hash `save_config` wrote in the first line of a saved config, if it is there."""
    first = Path(path).read_text().partition("\n")[0]
    prefix = "# resolved pearl config, hash "
    return first[len(prefix) :].strip() if first.startswith(prefix) else None
