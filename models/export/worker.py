"""A warm export process: pay the converter imports once, then export many models.

Starting Python and importing torch + litert-torch + ai-edge-quantizer + onnxruntime costs about
4 s, and the first conversion in a process pays a few more seconds of one-time set-up (see
BENCHMARKS.md).  `ExportWorker` starts one fresh Python subprocess (no forked torch state, no
re-import of the caller's main module), imports everything there once, converts a tiny network
to warm up, and then serves `run_export`, `export_bundle` and `latency_artifact` requests over
a pair of pipes.  The worker's own output (converter logs) goes to a temporary file whose tail
is shown if the worker dies.  A converter crash kills only the worker: the call raises
`ExportError` and the next call starts a fresh one.  Two workers convert two models at once on
two cores.

    with ExportWorker() as worker:
        for arch in candidates:
            path = worker.latency_artifact(arch, "tflite", cache_dir)

Progress messages, notes and warnings raised in the worker are passed back to the caller.  For
isolation rather than speed (the converters' memory returned after each model), use one worker
per export with ``warm_up=False`` and close it afterwards, as `pearl run` does.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from models.export.common import ExportError, ParityError
from models.export.job import ExportRequest, LoadData
from models.files import disk_full
from models.network import Network

_ERRORS = {"ExportError": ExportError, "ParityError": ParityError}


class ExportWorker:
    def __init__(
        self, num_threads: int = 2, timeout_s: float | None = None, warm_up: bool = True
    ) -> None:
        self.num_threads = num_threads
        self.warm_up = warm_up
        self.timeout_s = timeout_s
        self._process: subprocess.Popen | None = None
        self._conn: _Duplex | None = None
        self._log = None
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> float:
        """Start the process and wait until its imports are done; returns the seconds taken."""
        if self._process is not None and self._process.poll() is None:
            return 0.0
        start = time.perf_counter()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._log = tempfile.TemporaryFile()
        command = [
            sys.executable,
            "-c",
            "from models.export.worker import main; main()",
            str(to_child_r),
            str(from_child_w),
            str(self.num_threads),
            str(int(self.warm_up)),
        ]
        self._process = subprocess.Popen(
            command,
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._conn = _Duplex(
            Connection(from_child_r, writable=False), Connection(to_child_w, readable=False)
        )
        self._receive(on_step=None)  # "ready"
        self.startup_seconds = time.perf_counter() - start
        return self.startup_seconds

    def close(self) -> None:
        if self._process is None:
            return
        try:
            if self._process.poll() is None:
                self._conn.send(None)
                self._process.wait(timeout=10)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            pass
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._conn.close()
        self._log.close()
        self._process = self._conn = self._log = None

    def __enter__(self) -> ExportWorker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------

    def export_bundle(
        self,
        arch: Network,
        out_dir,
        *,
        state_dict: Mapping | None = None,
        on_step: Callable[[str], None] | None = None,
        **kwargs,
    ) -> dict:
        """`models.export.bundle.export_bundle` in the worker.  The network is built there
        from `arch` and loaded with `state_dict` (None: initialisation weights)."""
        kwargs["trained"] = kwargs.get("trained", state_dict is not None)
        weights = None
        if state_dict is not None:  # plain bytes: torch's own tensor pickling needs fd sharing
            buffer = io.BytesIO()
            torch.save(dict(state_dict), buffer)
            weights = buffer.getvalue()
        return self._call(
            "export_bundle", (arch, str(out_dir)), dict(kwargs, weights=weights), on_step
        )

    def run_export(
        self,
        request: ExportRequest,
        *,
        load_data: LoadData | None = None,
        on_step: Callable[[str], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> dict:
        """`models.export.job.run_export` in the worker.  `load_data` must be picklable (a
        module-level function, e.g. `pipeline.data.load_dataset`): the worker calls it."""
        return self._call("run_export", (request,), {"load_data": load_data}, on_step, on_note)

    def latency_artifact(self, arch: Network, fmt: str, cache_dir, **kwargs) -> Path:
        """`models.export.cache.latency_artifact` in the worker."""
        return Path(self._call("latency_artifact", (arch, fmt, str(cache_dir)), kwargs, None))

    def _call(self, name: str, args: tuple, kwargs: dict, on_step, on_note=None) -> object:
        self.start()
        try:
            self._conn.send((name, args, kwargs))
        except (BrokenPipeError, OSError):
            self._died(name, args)
        return self._receive(on_step, name, args, on_note)

    def _receive(self, on_step, name: str = "start", args: tuple = (), on_note=None) -> object:
        while True:
            if self.timeout_s is not None and not self._conn.poll(self.timeout_s):
                self.close()
                raise ExportError(
                    f"export worker gave no answer within {self.timeout_s:g} s ({name}); "
                    "it was stopped and will restart on the next call"
                )
            try:
                kind, *payload = self._conn.recv()
            except (EOFError, OSError):
                self._died(name, args)
            if kind in ("step", "note"):
                callback = on_step if kind == "step" else on_note
                if callback is not None:
                    callback(payload[0])
            elif kind == "warning":
                category, message = payload
                warnings.warn(message, _warning_class(category), stacklevel=4)
            elif kind == "error":
                error_type, message, trace, field = payload
                if error_type in _ERRORS:
                    raise _ERRORS[error_type](message, field=field)
                trace = f"\n{trace}" if trace else ""
                raise ExportError(f"export worker failed ({error_type}: {message}){trace}")
            else:  # "ready" or "result"
                return payload[0] if payload else None

    def _died(self, name: str, args: tuple):
        code = None
        tail = ""
        if self._process is not None:
            try:
                code = self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").strip().splitlines()
            tail = "\n".join(lines[-15:])
            self._conn.close()
            self._log.close()
        self._process = self._conn = self._log = None
        what = f"{name} of {args[0]}" if args else name
        raise ExportError(
            f"export worker died (exit code {code}) during {what}; it restarts on the next "
            "call (a negative code is a signal: the converter crashed on this network). "
            f"Its last output:\n{tail}"
        )


class _Duplex:
    """Two one-way pipe ends used as one connection."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader, self.writer = reader, writer

    def send(self, obj) -> None:
        self.writer.send(obj)

    def recv(self):
        return self.reader.recv()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _warning_class(name: str) -> type[Warning]:
    from models.damage import DamagedFileWarning
    from models.export.bundle import ExportWarning

    known = {"ExportWarning": ExportWarning, "DamagedFileWarning": DamagedFileWarning}
    return known.get(name, UserWarning)


# -- the worker process ------------------------------------------------------------------------


def _warm_up() -> None:
    """Convert a tiny network once: the first conversion in a process pays for lazy imports
    and first-call set-up inside torch.export and the converters (seconds), so the first real
    model is not charged for them."""
    from models.arch import Arch
    from models.builder import build
    from models.export import onnx_file, tflite

    tiny = build(Arch.decode("in8_cls2|stem_k3_s1_c4_re|ds_k3_s2_se25_id_c8_n1_re|head_c0_re"))
    tflite.convert_fp32(tiny.eval(), 8)
    onnx_file.convert(tiny, 8)


def _serve(conn, num_threads: int, warm_up: bool = True) -> None:
    import torch

    torch.set_num_threads(num_threads)
    # The heavy imports, once.
    import ai_edge_litert.interpreter  # noqa: F401
    import ai_edge_quantizer.quantizer  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    from models.export import tflite

    tflite.quiet_litert_torch()
    if warm_up:
        _warm_up()
    conn.send(("ready",))
    handlers = {
        "run_export": _run_export,
        "export_bundle": _export_bundle,
        "latency_artifact": _latency_artifact,
    }
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        name, args, kwargs = request
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = handlers[name](conn, *args, **kwargs)
            except Exception as error:  # sent back to the caller, which re-raises it
                _send_warnings(conn, caught)
                # a full disk is the user's to fix, not a bug: its message says all (no trace)
                trace = "" if disk_full(error) else traceback.format_exc()
                field = getattr(error, "field", None)
                conn.send(("error", type(error).__name__, str(error), trace, field))
                continue
        _send_warnings(conn, caught)
        conn.send(("result", result))


def _send_warnings(conn, caught) -> None:
    for warning in caught:
        name = warning.category.__name__
        if _warning_class(name) is not UserWarning:  # pearl's own warnings go back
            conn.send(("warning", name, str(warning.message)))


def _run_export(conn, request: ExportRequest, *, load_data: LoadData | None) -> dict:
    from models.export.job import run_export

    return run_export(
        request,
        load_data=load_data,
        on_step=lambda text: conn.send(("step", text)),
        on_note=lambda text: conn.send(("note", text)),
    )


def _export_bundle(conn, arch: Network, out_dir: str, *, weights=None, **kwargs) -> dict:
    from models.export.bundle import export_bundle
    from models.export.weights import load_weights

    model = arch.build()
    if weights is not None:
        state_dict = torch.load(io.BytesIO(weights), weights_only=True)
        load_weights(model, state_dict, "the given state dict")
    return export_bundle(
        arch, out_dir, model=model, on_step=lambda text: conn.send(("step", text)), **kwargs
    )


def _latency_artifact(conn, arch: Network, fmt: str, cache_dir: str, **kwargs) -> str:
    from models.export.cache import latency_artifact

    return str(latency_artifact(arch, fmt, cache_dir, **kwargs))


def main() -> None:
    """Worker entry point: ``python -c "..." READ_FD WRITE_FD THREADS WARM_UP`` (see `start`)."""
    reader, writer, threads, warm_up = (int(a) for a in sys.argv[1:5])
    _serve(
        _Duplex(Connection(reader, writable=False), Connection(writer, readable=False)),
        threads,
        bool(warm_up),
    )
