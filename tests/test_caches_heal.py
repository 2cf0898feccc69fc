"""Caches heal: a damaged cache file (real files damaged on disk) is moved aside with a warning
naming where, and rebuilt; a cache that breaks in the middle of a run is dropped, and nothing
that was measured or trained fails because of a cache."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_bench.cache import MeasurementCache, measure_cached
from device_bench.measurement import summarize
from models.damage import DamagedFileWarning, sqlite_problem

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = "in32_cls10|stem_k3_s2_c8_re|ds_k3_s1_se0_id_c8_n1_re|head_c16_re"
SQLITE_PAGE_BYTES = 4096


def damage(path: Path, offset: int, length: int | None = None) -> None:
    """Overwrite `length` bytes of `path` from `offset` (default: to the end) with garbage."""
    size = path.stat().st_size
    length = size - offset if length is None else length
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(offset).randbytes(length))


def damaged_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


def pearl(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    """`pearl ARGS` in a real process with its caches in `cache_dir`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PEARL_CACHE_DIR": str(cache_dir)}
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


class CountingBackend:
    """A stand-in for a device: every `measure` is counted and returns a fixed measurement."""

    settings = None

    def __init__(self) -> None:
        self.measured = 0

    def fingerprint(self) -> dict:
        return {"kind": "test"}

    def measure(self, path):
        self.measured += 1
        return summarize([1.0, 1.5], source="host", device="test")


def test_pearl_bench_heals_a_damaged_measurement_cache_and_export(tmp_path):
    first = pearl("bench", TINY_ARCH, "--json", cache_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["cached"] is False
    cache = tmp_path / "measurements.sqlite"
    model = Path(json.loads(first.stdout)["model"])
    damage(cache, SQLITE_PAGE_BYTES)  # every page after the header
    damage(model, model.stat().st_size // 2, 64)

    second = pearl("bench", TINY_ARCH, "--json", cache_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert f"warning: measurement cache {cache} is damaged" in second.stderr
    assert f"warning: cached export {model.parent} is damaged" in second.stderr
    assert "does not match the sha256" in second.stderr
    (aside,) = damaged_copies(cache)
    assert str(aside) in second.stderr and sqlite_problem(aside) is not None
    assert len(damaged_copies(model.parent)) == 1
    assert sqlite_problem(cache) is None and len(MeasurementCache(cache)) == 1
    assert json.loads(second.stdout)["cached"] is False

    third = pearl("bench", TINY_ARCH, "--json", cache_dir=tmp_path)
    assert third.returncode == 0 and json.loads(third.stdout)["cached"] is True
    assert "warning" not in third.stderr


def test_a_cache_that_breaks_mid_run_is_dropped_with_one_warning(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model bytes")
    cache = MeasurementCache(tmp_path / "measurements.sqlite")
    backend = CountingBackend()
    assert measure_cached(backend, model, cache).cached is False
    assert measure_cached(backend, model, cache).cached is True
    for name in ("filler", "more"):  # enough pages to damage some behind the header
        with sqlite3.connect(cache.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS filler (x TEXT)")
            db.executemany("INSERT INTO filler VALUES (?)", [(name * 500,)] * 50)
    damage(cache.path, SQLITE_PAGE_BYTES)  # while the run holds a checked cache
    with pytest.warns(DamagedFileWarning) as caught:
        for _ in range(3):
            result = measure_cached(backend, model, cache)
            assert result.cached is False and result.measurement.device == "test"
    assert len(caught) == 1 and "measuring without a cache" in str(caught[0].message)
    assert backend.measured == 4 and cache.dropped is not None
    assert len(damaged_copies(cache.path)) == 1  # set aside for the next run, which starts anew
    assert measure_cached(backend, model, MeasurementCache(cache.path)).cached is False


def test_a_file_that_is_no_database_is_set_aside_when_opened(tmp_path):
    path = tmp_path / "measurements.sqlite"
    path.write_bytes(b"this is not a database " * 400)
    (tmp_path / "measurements.sqlite-journal").write_bytes(b"a stale journal")
    cache = MeasurementCache(path)
    with pytest.warns(DamagedFileWarning, match="file is not a database"):
        assert cache.get("anything") is None
    assert len(damaged_copies(path)) == 1
    assert not Path(f"{path}-journal").exists()  # never applied to the new file
    assert sqlite_problem(path) is None and len(cache) == 0


def test_layer_files_are_checked_and_written_again(tmp_path):
    from device_bench.layer_files import ensure_layer_files
    from latency_tables.keys import arch_keys
    from models.arch import Arch

    keys = list(arch_keys(Arch.decode(TINY_ARCH)))[:3]
    paths = ensure_layer_files(keys, tmp_path)
    good = [paths[key].read_bytes() for key in keys]
    paths[keys[0]].write_bytes(good[0][:3])  # truncated
    damage(paths[keys[1]], len(good[1]) // 2, 16)  # same size, header intact, content not
    Path(f"{paths[keys[2]]}.json").unlink()  # a build stopped between the file and its record
    with pytest.warns(DamagedFileWarning) as warned:
        again = ensure_layer_files(keys, tmp_path)
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2  # the unfinished one is made again without a warning
    assert f"cached layer file {paths[keys[0]]} is damaged (3 bytes, its record says" in "".join(
        messages
    )
    assert any(f"{paths[keys[1]]} is damaged (its content does not match" in m for m in messages)
    assert [again[key].read_bytes() for key in keys] == good
    assert [len(damaged_copies(paths[key])) for key in keys] == [1, 1, 0]


def test_damaged_teacher_logits_are_set_aside_and_computed_again(tmp_path, cifar_small):
    from pipeline.teacher_cache import cached_teacher

    mini_train = cifar_small[0].take(np.arange(64))
    settings = dict(batch_size=32, seed=0, epochs=1, members=False, input_size=32)
    spec, folder = "builtin:resnet20_cifar10", tmp_path / "logits"
    first, path, hit = cached_teacher(spec, mini_train, cache_dir=folder, **settings)
    assert not hit
    damage(path, path.stat().st_size // 2, 32)  # inside the tensor data: torch would load it
    with pytest.warns(DamagedFileWarning, match=f"teacher-logit cache {path} is damaged.*CRC"):
        again, _, hit = cached_teacher(spec, mini_train, cache_dir=folder, **settings)
    assert not hit and len(damaged_copies(path)) == 1
    for a, b in zip(first.per_epoch, again.per_epoch, strict=True):
        assert a.equal(b)
    assert cached_teacher(spec, mini_train, cache_dir=folder, **settings)[2]  # a hit again


def test_a_search_with_a_damaged_measurement_cache_scores_every_candidate(
    tmp_path, data_dir, cifar_small
):
    from search_helpers import make_tiny_teacher, write_config

    from pipeline.store import ResultsStore

    cache = tmp_path / "measurements.sqlite"
    with sqlite3.connect(cache) as db:  # a cache with some pages, then damaged on disk
        db.execute("CREATE TABLE filler (x TEXT)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 50)
    damage(cache, SQLITE_PAGE_BYTES)
    teacher = make_tiny_teacher(tmp_path, cifar_small)
    config = write_config(tmp_path / "cfg", data_dir, teacher, budget=2)
    settings = {
        "reward.cost": "latency_ms",
        "reward.target": "5.0",
        "latency.measurement_cache": str(cache),
        "latency.export_cache_dir": str(tmp_path / "artifacts"),
        # converted files only: the direct-file guard would add its side-by-side timings
        "latency.direct_files": "false",
    }
    sets = [f"--set={key}={value}" for key, value in settings.items()]
    run_dir = tmp_path / "run"
    args = ["search", "--config", str(config), *sets, "--out", str(run_dir), "--no-progress"]
    result = pearl(*args, cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert f"warning: measurement cache {cache} is damaged" in result.stderr
    assert len(damaged_copies(cache)) == 1 and len(MeasurementCache(cache)) == 2
    with ResultsStore(run_dir / "results.sqlite") as store:
        rows = store.candidates()
    assert len(rows) == 2 and all(r.status == "ok" and r.latency_ms for r in rows), rows
