"""Third-party noise on stderr, silenced by `pearl` unless it runs with ``-v``: the one place
that knows what the noise is and how each piece is turned off.

`pearl` calls `set_quiet` before any command runs; it records the choice in ``$PEARL_QUIET``, so
the processes it starts (export workers, timing processes) follow it.  Library use without the
CLI changes nothing.  What is silenced, and how (measured with ai-edge-litert 2.3,
litert-torch 0.10, torch 2.14):

* C++ INFO logs of the converter, e.g. ``flatbuffer_export.cc] Estimated count of arithmetic
  ops``: ``TF_CPP_MIN_LOG_LEVEL=1``, read when the library loads (set before it loads).
* What the converter prints while it loads, before it reads that variable: absl's ``WARNING: All
  log messages before absl::InitializeLog() ...``, ``oneDNN custom operations are on ...`` and
  torch's ``_pytree`` deprecation of ``register_constant`` for Enum classes;
* LiteRT's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, written to fd 2 by the
  C++ runtime (once per process, when the first interpreter applies the delegate) with no
  setting that turns it off:
  both by `native_noise_filtered`, which catches fd 2 around the import or the interpreter's
  creation and writes back every line that is not one of `NOISE` (errors still show).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

QUIET_ENV = "PEARL_QUIET"  # "1": silence third-party noise (set by `pearl` without -v)
QUIET_LIBRARY_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1"}  # C++ logs: warnings and errors only

NOISE = tuple(
    re.compile(pattern)
    for pattern in (
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
        r"\] oneDNN custom operations are on\.",
        r"torch/utils/_pytree\.py:\d+\] .* is deprecated",
        r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
    )
)


# fd 2 belongs to the whole process: two threads swapping it at once could leave it pointing at
# a closed temporary file, so one block at a time (re-entrant: blocks may nest in one thread)
_FD2_LOCK = threading.RLock()


def set_quiet(quiet: bool) -> None:
    """Silence (or not) third-party noise in this process and the ones it starts."""
    os.environ[QUIET_ENV] = "1" if quiet else "0"
    if quiet:
        for name, value in QUIET_LIBRARY_ENV.items():
            os.environ.setdefault(name, value)  # a value the user set wins


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


def is_noise(line: str) -> bool:
    return any(pattern.search(line) for pattern in NOISE)


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Around a block that makes native libraries print (an import, an interpreter's creation):
    everything written to fd 2 meanwhile, by Python or C++, is held and written back without
    the `NOISE` lines (a crash inside the block loses what it printed: `pearl -v` shows it).
    Does nothing unless `is_quiet()`."""
    if not is_quiet():
        yield
        return
    with _FD2_LOCK, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            held.seek(0)
            text = held.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
