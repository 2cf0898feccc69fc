"""Device identity of latency tables: what must match, what is only recorded, older formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_bench.host import HostTFLiteBackend, core_layout
from latency_tables.identity import differences, identity_id, with_precision
from latency_tables.table import FORMAT_VERSION, LatencyTable, TableError

SHIPPED = Path(__file__).resolve().parents[1] / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
# the first lines of the 32 px table as shipped before format 2 (header and a few entries)
FORMAT_1 = Path(__file__).resolve().parent / "data" / "host_tflite_format1_excerpt.csv"


@pytest.fixture
def shipped(shipped_cifar_table) -> LatencyTable:
    return shipped_cifar_table


def test_kernel_build_host_name_and_python_are_recorded_not_matched(shipped):
    device = dict(
        shipped.fingerprint,
        platform="Linux-6.18.44-fc-v657-x86_64-with-glibc2.36",  # the kernel build
        hostname="another-vm",
        python="3.12.1",
    )
    shipped.check_fingerprint(device, "host:tflite")  # accepted
    assert identity_id(device) == identity_id(shipped.fingerprint)
    assert differences(shipped.fingerprint, device) == []


def test_another_cpu_is_refused_with_what_makes_a_valid_table(shipped):
    device = dict(shipped.fingerprint, cpu="Intel Xeon Platinum", platform="Linux-other")
    with pytest.raises(TableError) as caught:
        shipped.check_fingerprint(device, "host:tflite")
    message = str(caught.value)
    assert "cpu: table 'AMD EPYC' vs device 'Intel Xeon Platinum'" in message
    assert "platform" not in message  # the kernel build is never named as a reason
    assert f"pearl tables adapt --from {SHIPPED} --device host:tflite -o" in message
    assert "pearl tables build --device host:tflite --space mnas-cifar --input 32" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("threads", 4), ("delegate", "none"), ("runtime_version", "9.9"), ("cores", 8)],
)
def test_each_identity_field_is_matched(shipped, field, value):
    with pytest.raises(TableError, match=rf"{field}: table .* vs device {value!r}"):
        shipped.check_fingerprint(dict(shipped.fingerprint, **{field: value}))


def test_precision_is_part_of_the_identity(shipped):
    assert shipped.precision == "fp32"
    shipped.check_fingerprint(with_precision(shipped.fingerprint, "fp32"))
    with pytest.raises(TableError, match="precision: table 'fp32' vs device 'int8'"):
        shipped.check_fingerprint(with_precision(shipped.fingerprint, "int8"))
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        with_precision({}, "fp8")
    # a backend's own fingerprint (no precision: it times any file) matches a table of any
    # precision; the search checks the precision itself (`LatencyTable.check_precision`)
    int8 = {**shipped.fingerprint, "precision": "int8"}
    device = {k: v for k, v in shipped.fingerprint.items() if k != "precision"}
    assert differences(int8, device) == []
    assert differences(int8, with_precision(device, "fp32")) == [
        "precision: table 'int8' vs device 'fp32'"
    ]


def test_format_1_tables_read_as_current_with_a_clear_note(tmp_path):
    assert FORMAT_1.read_text().splitlines()[1] == "# format_version: 1"
    shipped = LatencyTable.load(FORMAT_1)
    assert shipped.header["format_version"] == FORMAT_VERSION == 2
    note = shipped.upgrade_note
    assert note and "format-1 latency table" in note and "precision fp32" in note
    # a field the old table does not record (core_layout) is not compared
    device = dict(shipped.fingerprint, core_layout="1 socket(s), 2 core(s), 2 logical")
    shipped.check_fingerprint(device)
    # saved again it is a current table, and stays equal
    again = LatencyTable.load(
        LatencyTable(shipped.entries, shipped.header).save(tmp_path / "t.csv")
    )
    assert again.upgrade_note is not None  # the history stays in the header
    assert again.entries == shipped.entries and again.fingerprint == shipped.fingerprint


def test_host_fingerprint_records_layout_and_host_name():
    fingerprint = HostTFLiteBackend().fingerprint()
    assert {"cpu", "cores", "core_layout", "runtime_version", "threads", "delegate"} <= set(
        fingerprint
    )
    assert "hostname" in fingerprint and "platform" in fingerprint
    two_sockets = "".join(
        f"processor: {i}\nphysical id: {i // 2}\ncore id: {i % 2}\n\n" for i in range(4)
    )
    assert core_layout(two_sockets) == "2 socket(s), 4 core(s), 4 logical"
    assert core_layout("processor: 0\nHardware: phone\n") == "1 logical"
