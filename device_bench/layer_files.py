"""The cache of converted single-layer TFLite files, shared by every device.

A layer file depends on the layer key and the converter versions, never on the phone, so tables
for several devices (and rebuilds after an interruption) convert each layer once::

    CACHE/layers-v<LAYER_FILES_VERSION>-<tools hash>/<converter>/<input size>/<key hash>.tflite

Two ways to make the files (``converter``):

* ``direct`` (default): `layer_writer.write_layer` writes the graph litert-torch would produce,
  op for op, in ~20 ms per layer (ReLU / ReLU6 layers; others fall back to litert-torch);
* ``litert``: litert-torch itself, in chunks (`layer_models.convert_chunk`: one conversion of
  many independent branches, then split per layer), optionally in several processes at once.

Each file appears atomically (`models.files.atomic_write`), so an interrupted build keeps
every finished file; a file that is not a TFLite flatbuffer when it is looked up (damaged on
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
from models.files import atomic_write

LAYER_FILES_VERSION = 2  # 2: the direct writer drops or sums global pools of 1x1 maps
DEFAULT_CHUNK = 16
CONVERTERS = ("direct", "litert")
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4-8 of every .tflite


def layer_root(cache_dir: str | os.PathLike) -> Path:
    from models.export.common import tool_versions

    tools = json.dumps(tool_versions(), sort_keys=True).encode()
    digest = hashlib.sha256(tools).hexdigest()[:10]
    return Path(cache_dir) / f"layers-v{LAYER_FILES_VERSION}-{digest}"


def layer_path(root: Path, key: LayerKey, converter: str = "direct") -> Path:
    digest = hashlib.sha256(key.encode().encode()).hexdigest()[:16]
    return root / converter / str(key.input_size) / f"{digest}.tflite"


def _intact(path: Path) -> bool:
    """Is the cached layer file there and a TFLite flatbuffer (its file identifier and a size
    that holds at least a header)?  A damaged one is moved aside with a warning."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(8)
    except FileNotFoundError:
        return False
    if len(header) == 8 and header[4:8] == TFLITE_IDENTIFIER:
        return True
    set_aside(
        path, "cached layer file", f"not a TFLite file: header {header!r}", then="writing it again"
    )
    return False


def _convert_and_store(root: str, keys: Sequence[LayerKey]) -> int:
    import torch

    from device_bench.layer_models import convert_chunk

    torch.set_num_threads(1)
    for key, data in zip(keys, convert_chunk(keys), strict=True):
        atomic_write(layer_path(Path(root), key, "litert"), data)
    return len(keys)


def ensure_layer_files(
    keys: Sequence[LayerKey],
    cache_dir: str | os.PathLike,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    jobs: int = 1,
    converter: str = "direct",
    on_done: Callable[[int], None] | None = None,
) -> dict[LayerKey, Path]:
    """Path of every key's layer file, making the missing ones.  `on_done(n)` is called as
    files appear.  With ``converter="litert"`` (or for layers the direct writer does not
    cover) litert-torch converts chunks of `chunk_size` layers in `jobs` processes at once."""
    from device_bench.layer_writer import supports, write_layer

    if converter not in CONVERTERS:
        raise ValueError(f"converter must be one of {CONVERTERS}, got {converter!r}")
    root = layer_root(cache_dir)
    paths = {}
    present = 0
    for key in keys:
        direct = converter == "direct" and supports(key)
        paths[key] = layer_path(root, key, "direct" if direct else "litert")
        if _intact(paths[key]):
            present += 1
        elif direct:
            atomic_write(paths[key], write_layer(key))
            on_done and on_done(1)
    if present:
        on_done and on_done(present)
    missing = [key for key in keys if not paths[key].is_file()]
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
