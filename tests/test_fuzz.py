"""Fuzz tests for every decoder of user input: arch strings, config files and ``--set`` values,
latency table files, metadata.json, benchmark_model output.  Each property: a random mutation of
a real input is either decoded correctly or rejected with the decoder's own error class, never
another exception.  (Round trips of *valid* inputs are in test_arch.py and
test_benchmark_output.py.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_benchmark_output import GPU_NO_PERCENTILES, MODERN_CPU, SLOW_MODEL

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=150, deadline=None)
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the characters these formats are built from, plus some that never belong
ALPHABET = list("|_-.,:;=#{}[]()\"' \n\t0123456789abcdeiklmnoprsxTF") + ["é", "\x00", "∞"]


def _edit(text: str, edits: list[tuple[str, float, str]]) -> str:
    for kind, where, char in edits:
        at = int(where * len(text))
        if kind == "insert":
            text = text[:at] + char + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        elif kind == "replace":
            text = text[:at] + char + text[at + 1 :]
        elif kind == "drop line":
            lines = text.split("\n")
            del lines[min(int(where * len(lines)), len(lines) - 1)]
            text = "\n".join(lines)
        else:  # "truncate"
            text = text[:at]
    return text


def mutations(*texts: str) -> st.SearchStrategy[str]:
    """A few character and line edits (insert, delete, replace, drop a line, cut) of one of
    `texts`."""
    kinds = st.sampled_from(["insert", "delete", "replace", "replace", "drop line", "truncate"])
    edit = st.tuples(kinds, st.floats(0, 1, exclude_max=True), st.sampled_from(ALPHABET))
    return st.builds(_edit, st.sampled_from(texts), st.lists(edit, min_size=1, max_size=4))


# -- arch strings ----------------------------------------------------------------------------

_ARCHS = (
    "in224_cls1000|stem_k3_s2_c32_r6|ds_k3_s1_se0_id_c16_n1_r6|mb6_k3_s2_se0_id_c24_n2_r6|"
    "mb6_k3_s2_se0_id_c32_n3_r6|mb6_k3_s2_se0_id_c64_n4_r6|mb6_k3_s1_se0_id_c96_n3_r6|"
    "mb6_k3_s2_se0_id_c160_n3_r6|mb6_k3_s1_se0_id_c320_n1_r6|head_c1280_r6",
    "in32_cls10|stem_k3_s1_c8_hs|conv_k5_s2_se25_pool_c16_n2_hs|mb3_k7_s1_se0_noskip_c24_n1_re|"
    "head_c0_re",
)


@FUZZ
@given(mutations(*_ARCHS))
def test_arch_strings_decode_or_raise_value_error(text):
    from models.arch import Arch
    from models.baselines import resolve_arch

    try:
        arch = Arch.decode(text)
    except ValueError:
        pass
    else:
        assert Arch.decode(arch.encode()) == arch
    try:
        resolve_arch(text, None, None)
    except ValueError:
        pass


# -- config files and --set values -----------------------------------------------------------


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@FEW
@given(mutations((REPO / "configs" / "quickstart.toml").read_text()))
def test_config_files_load_or_raise_config_error(scratch, text):
    from pipeline.config import ConfigError, load_config
    from pipeline.run_config import RUN_SECTIONS, RunConfig

    path = scratch / "fuzzed.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, None, RunConfig, RUN_SECTIONS)
    except ConfigError:
        pass


def _setting_names():
    from pipeline.config import SECTIONS

    names = []
    for section, cls in SECTIONS.items():
        names += [f"{section}.{name}" for name in cls.__dataclass_fields__]
    return sorted(names)


_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "3", "1e9", "0.5", "nan", "inf", "true", "[1, 2]", '["a"]', ""]),
    st.sampled_from(["host:tflite", "adb:", "table:", "kd", "ppo", "soft", "macs", "{}", "x=y"]),
    st.text(alphabet=ALPHABET, max_size=12),
)
_SETTINGS = st.one_of(
    st.builds("{}={}".format, st.sampled_from(_setting_names()), _VALUES),
    st.text(alphabet=ALPHABET, max_size=20),  # not even SECTION.KEY=VALUE
)


@FUZZ
@given(st.lists(_SETTINGS, min_size=1, max_size=4))
def test_set_values_parse_or_raise_config_error(settings_):
    from pipeline.config import ConfigError, load_config
    from pipeline.config_toml import parse_overrides

    try:
        load_config(None, parse_overrides(settings_))
    except ConfigError:
        pass


# -- latency table files ---------------------------------------------------------------------


def _small_table() -> str:
    lines = (REPO / "latency_tables" / "host_tflite_mnas-cifar_32.csv").read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    body = lines[len(header) : len(header) + 12]  # the column names and 11 rows
    return "\n".join(header + body) + "\n"


@FEW
@given(mutations(_small_table()))
def test_table_files_load_or_raise_table_error(text):
    from latency_tables.table import LatencyTable, TableError

    try:
        LatencyTable.loads(text)
    except TableError:
        pass


# -- metadata.json ---------------------------------------------------------------------------

_METADATA_DOCUMENT = {
    "arch": _ARCHS[1],
    "arch_key": "0123456789abcdef",
    "num_classes": 10,
    "files": {"tflite": {"path": "model.tflite", "sha256": "00", "bytes": 10}},
    "latency": {},
}
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ALPHABET, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _replaced(document: dict, key: str | None, value) -> str:
    if key is None:
        return json.dumps(value)  # the whole document is something else
    return json.dumps({**document, key: value})


_METADATA = st.one_of(
    mutations(json.dumps(_METADATA_DOCUMENT, indent=2)),
    st.builds(
        _replaced,
        st.just(_METADATA_DOCUMENT),
        st.sampled_from([None, *_METADATA_DOCUMENT]),
        _JSON,
    ),
)


@FUZZ
@given(_METADATA)
def test_metadata_gives_the_arch_or_a_measurement_error(scratch, text):
    from device_bench.measurement import MeasurementError
    from device_bench.table_backend import arch_of_file

    (scratch / "metadata.json").write_text(text, encoding="utf-8")
    (scratch / "model.tflite").write_bytes(b"")
    try:
        arch_of_file(scratch / "model.tflite")
    except MeasurementError:
        pass


@FUZZ
@given(_METADATA)
def test_metadata_takes_a_measurement_or_raises_export_error(scratch, text):
    from models.export import record_measurement
    from models.export.common import ExportError

    (scratch / "metadata.json").write_text(text, encoding="utf-8")
    try:
        document = record_measurement(scratch, "latency", "tflite@dev", {"median_ms": 1.0})
    except ExportError:
        pass
    else:
        assert document["latency"]["tflite@dev"] == {"median_ms": 1.0}


# -- benchmark_model output ------------------------------------------------------------------


@FUZZ
@given(mutations(MODERN_CPU, GPU_NO_PERCENTILES, SLOW_MODEL))
def test_benchmark_output_parses_or_raises_benchmark_output_error(text):
    from android_runner.benchmark_output import BenchmarkOutputError, parse_benchmark_output

    try:
        parse_benchmark_output(text)
    except BenchmarkOutputError:
        pass
