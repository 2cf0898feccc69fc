"""Where Pearl keeps what it can rebuild: latency-only exports, the measurement database, layer
files for latency tables and teacher logits.  Every default location is under one folder,
``$PEARL_CACHE_DIR`` (relative to the current directory), else ``~/.cache/pearl``; the tests set
the variable to a temporary folder.

A config names the folder as ``$PEARL_CACHE_DIR`` (``pipeline.config_paths.resolve_path``
replaces it by `cache_root()`, set or not).  No heavy imports: every package may use this module.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "PEARL_CACHE_DIR"
CACHE_DIR_VARIABLE = "$" + CACHE_DIR_ENV  # how a config names the folder

# What lives in it (table builds keep their layer and network files in the root itself):
ARTIFACTS_DIR = "artifacts"  # latency-only exports by arch key (`pearl bench ARCH`, searches)
MEASUREMENTS_FILE = "measurements.sqlite"  # device_bench.cache
TEACHER_LOGITS_DIR = "teacher_logits"  # pipeline.teacher_cache


def cache_root() -> Path:
    """``$PEARL_CACHE_DIR`` if set, else ``~/.cache/pearl`` (may not exist yet)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "pearl"
