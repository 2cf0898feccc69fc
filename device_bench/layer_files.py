"""The cache of converted single-layer TFLite files, shared by every device.

A layer file depends on the layer key and the converter versions, never on the phone, so tables
for several devices (and rebuilds after an interruption) convert each layer once::

    CACHE/layers-v<LAYER_FILES_VERSION>-<tools hash>/<converter>/<input size>/<key hash>.tflite
    ... and beside each, <key hash>.tflite.json: its size and sha256

Two ways to make the files (``converter``):

* ``direct`` (default): `layer_writer.write_layer` writes the graph litert-torch would produce,
  op for op, in ~20 ms per layer (ReLU / ReLU6 layers; others fall back to litert-torch);
* ``litert``: litert-torch itself, in chunks (`layer_models.convert_chunk`: one conversion of
  many independent branches, then split per layer), optionally in several processes at once.

fp16 and int8 tables time layer files derived from these (``<converter>-<precision>/``, made
by `models.export.tflite.for_timing`): int8 without calibration and with int8 input and output,
so a layer file is exactly its slice of an int8 network (the network's one QUANTIZE and
DEQUANTIZE at its ends fall into the table's fitted offset).

Each file appears atomically (`models.files.atomic_write`), then its record (size, sha256), so an
interrupted build keeps every finished file; a file without a record (the build stopped between
the two) is made again, and one whose size or content does not match its record (damaged on
disk) is moved aside with a warning and made again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from latency_tables.keys import LayerKey
from models.damage import set_aside
from models.files import atomic_write, atomic_write_json, read_json

LAYER_FILES_VERSION = 3  # 2: each file has its record (size, sha256); 3: the direct writer
# drops or sums global pools of 1x1 maps
DEFAULT_CHUNK = 16
CONVERTERS = ("direct", "litert")


def layer_root(cache_dir: str | os.PathLike) -> Path:
    from models.export.common import tool_versions

    tools = json.dumps(tool_versions(), sort_keys=True).encode()
    digest = hashlib.sha256(tools).hexdigest()[:10]
    return Path(cache_dir) / f"layers-v{LAYER_FILES_VERSION}-{digest}"


def layer_path(
    root: Path, key: LayerKey, converter: str = "direct", precision: str = "fp32"
) -> Path:
    digest = hashlib.sha256(key.encode().encode()).hexdigest()[:16]
    folder = converter if precision == "fp32" else f"{converter}-{precision}"
    return root / folder / str(key.input_size) / f"{digest}.tflite"


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _store(path: Path, data: bytes) -> None:
    """Write a layer file, then its record (size and sha256), both atomically."""
    atomic_write(path, data)
    record = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(_record_path(path), record)


def _intact(path: Path) -> bool:
    """Is the cached layer file there, with its record, and do its size and sha256 match the
    record?  A file without a record is unfinished (made again); a damaged one is moved aside
    with a warning."""
    record_path = _record_path(path)
    if not path.is_file() or not record_path.is_file():
        return False
    try:
        record = read_json(record_path)
        size, sha256 = int(record["bytes"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"unreadable record {record_path.name}: {type(error).__name__}: {error}"
    else:
        data = path.read_bytes()
        if len(data) != size:
            problem = f"{len(data)} bytes, its record says {size}"
        elif hashlib.sha256(data).hexdigest() != sha256:
            problem = "its content does not match the sha256 in its record"
        else:
            return True
    set_aside(path, "cached layer file", problem, then="writing it again")
    record_path.unlink(missing_ok=True)
    return False


def _convert_and_store(root: str, keys: Sequence[LayerKey]) -> int:
    import torch

    from device_bench.layer_models import convert_chunk

    torch.set_num_threads(1)
    for key, data in zip(keys, convert_chunk(keys), strict=True):
        _store(layer_path(Path(root), key, "litert"), data)
    return len(keys)


def ensure_layer_files(
    keys: Sequence[LayerKey],
    cache_dir: str | os.PathLike,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    jobs: int = 1,
    converter: str = "direct",
    precision: str = "fp32",
    on_done: Callable[[int], None] | None = None,
) -> dict[LayerKey, Path]:
    """Path of every key's layer file of `precision`, making the missing ones.  `on_done(n)`
    is called as files appear.  With ``converter="litert"`` (or for layers the direct writer
    does not cover) litert-torch converts chunks of `chunk_size` layers in `jobs` processes at
    once.  fp16 / int8 files are derived from the fp32 ones (made first, not counted)."""
    if converter not in CONVERTERS:
        raise ValueError(f"converter must be one of {CONVERTERS}, got {converter!r}")
    if precision == "fp32":
        return _ensure_fp32(keys, cache_dir, chunk_size, jobs, converter, on_done)
    from models.export.tflite import for_timing

    fp32 = _ensure_fp32(keys, cache_dir, chunk_size, jobs, converter, None)
    paths = {}
    for key, source in fp32.items():
        made_by = source.parent.parent.name  # "direct" or "litert" (a layer the writer lacks)
        paths[key] = layer_path(layer_root(cache_dir), key, made_by, precision)
        if not _intact(paths[key]):
            _store(paths[key], for_timing(source.read_bytes(), precision, io="int8"))
        on_done and on_done(1)
    return paths


def _ensure_fp32(keys, cache_dir, chunk_size, jobs, converter, on_done) -> dict[LayerKey, Path]:
    from device_bench.layer_writer import supports, write_layer

    root = layer_root(cache_dir)
    paths, missing = {}, []
    present = 0
    for key in keys:
        direct = converter == "direct" and supports(key)
        paths[key] = layer_path(root, key, "direct" if direct else "litert")
        if _intact(paths[key]):
            present += 1
        elif direct:
            _store(paths[key], write_layer(key))
            on_done and on_done(1)
        else:
            missing.append(key)
    if present:
        on_done and on_done(present)
    chunks = [missing[i : i + chunk_size] for i in range(0, len(missing), chunk_size)]
    if not chunks:
        return paths
    if jobs <= 1:
        for chunk in chunks:
            on_done and on_done(_convert_and_store(str(root), chunk))
        return paths
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_convert_and_store, str(root), chunk) for chunk in chunks]
        for future in as_completed(futures):
            count = future.result()
            on_done and on_done(count)
    return paths
