"""`pearl` in a child process, and killing it at a chosen moment (tests of resume after a kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pearl_process(args, **env) -> subprocess.Popen:
    """``pearl ARGS`` running from this tree (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from pipeline.cli import main; main()", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_once_exists(process: subprocess.Popen, path: Path, timeout_s: float = 300) -> None:
    """SIGKILL `process` as soon as `path` exists (or it has ended, or `timeout_s` passed)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
