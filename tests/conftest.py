"""Shared fixtures.  The datasets are found through $PEARL_DATA (CI: ../shared/data), falling back
to ../shared/data beside the checkout; tests that need them skip when they are absent.  Every
cache (exports, measurements, teacher logits, layer files) goes to a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def pearl_cache_dir(tmp_path_factory) -> Path:
    """$PEARL_CACHE_DIR for the whole session (subprocesses inherit it), so no test reads or
    writes the user's ~/.cache/pearl."""
    from models.cache_dir import CACHE_DIR_ENV

    path = tmp_path_factory.mktemp("pearl-cache")
    before = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = before


@pytest.fixture(autouse=True)
def cli_quiet_settings_stay_in_their_test():
    """`pearl`'s group writes $PEARL_QUIET (and library log levels) into the environment for
    the processes it starts; a test that runs it in-process must not pass that on."""
    from models.quiet import QUIET_ENV, QUIET_LIBRARY_ENV

    before = {name: os.environ.get(name) for name in (QUIET_ENV, *QUIET_LIBRARY_ENV)}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from pipeline.data import DATA_DIR_ENV, default_data_dir

    path = default_data_dir()
    if not path.is_dir():
        pytest.skip(
            f"dataset folder {path} not found; set {DATA_DIR_ENV} to the folder holding "
            "cifar10_small.npz (e.g. PEARL_DATA=../shared/data)"
        )
    return path


@pytest.fixture(scope="session")
def cifar_small(data_dir: Path):
    """``(train, test)`` ImageArrays of cifar10_small.npz (5,000 + 1,000 images), loaded once."""
    from pipeline.data import load_npz

    path = data_dir / "cifar10_small.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found; set PEARL_DATA to the folder holding cifar10_small.npz")
    return load_npz(path)


@pytest.fixture
def adb_key(tmp_path, monkeypatch) -> Path:
    """This test's own ADB key pair ($PEARL_ADB_KEY; created on first connect)."""
    path = tmp_path / "keys" / "adbkey"
    monkeypatch.setenv("PEARL_ADB_KEY", str(path))
    return path


@pytest.fixture
def device(tmp_path, adb_key):
    """A loopback ADB device (tests/loopback_adbd) for this test, stopped after it."""
    from loopback_adbd import LoopbackDevice

    with LoopbackDevice(tmp_path / "sandbox") as dev:
        yield dev


@pytest.fixture(scope="session")
def shipped_cifar_table():
    """The shipped 32 px host:tflite table (built on an AMD EPYC VM)."""
    from latency_tables.table import LatencyTable

    path = Path(__file__).resolve().parents[1] / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    return LatencyTable.load(path)
