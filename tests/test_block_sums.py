"""The predictor's per-block fast path gives bit-identical predictions to the plain per-layer sum
over `arch_key_tuples`, on the shipped tables and after the table changes."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from latency_tables.keys import LayerKey, arch_key_tuples
from latency_tables.table import Entry, LatencyTable

TABLES = Path(__file__).resolve().parents[1] / "latency_tables"


def _per_layer_ms(table: LatencyTable, arch) -> float:
    """The prediction as the plain sum over every layer's key, in layer order."""
    total = 0.0
    for key in arch_key_tuples(arch):
        total += table.entries[LayerKey(*key)].min_ms
    return table.correction.apply(total)


@pytest.mark.parametrize(
    "name", ["host_tflite_mnas-cifar_32.csv", "host_tflite_mnas-imagenet_224.csv"]
)
def test_predictions_are_bit_identical_to_the_per_layer_sum(name):
    from device_bench.table_build import space_from_header

    if not (TABLES / name).is_file():
        pytest.skip(f"shipped table {name} is missing")
    table = LatencyTable.load(TABLES / name)
    space = space_from_header(table.space)
    rng = random.Random(3)
    archs = [space.sample(rng) for _ in range(400)]
    # the same block shapes with other layer counts, one-layer blocks first (later layers
    # of a block are looked up only when a block has them)
    for arch in archs[:20]:
        ones = [dataclasses.replace(b, layers=1) for b in arch.blocks]
        archs.append(dataclasses.replace(arch, blocks=tuple(ones)))
    for arch in archs[:20]:
        more = [dataclasses.replace(b, layers=4) for b in arch.blocks]
        archs.append(dataclasses.replace(arch, blocks=tuple(more)))
    expected = [_per_layer_ms(table, arch) for arch in archs]
    assert [table.predict_ms(arch) for arch in archs] == expected  # first sight
    assert [table.predict_ms(arch) for arch in archs] == expected  # remembered blocks
    assert len({round(v, 9) for v in expected}) > 300  # the archs differ


def test_a_changed_entry_is_seen_by_the_next_prediction():
    table = LatencyTable.load(TABLES / "host_tflite_mnas-cifar_32.csv")
    from device_bench.table_build import space_from_header

    arch = space_from_header(table.space).sample(random.Random(0))
    before = table.predict_ms(arch)
    key = LayerKey(*arch_key_tuples(arch)[2])
    old = table.entries[key]
    table.add(key, Entry(old.min_ms + 1.0, *dataclasses.astuple(old)[1:]))
    assert table.predict_ms(arch) == _per_layer_ms(table, arch)
    assert table.predict_ms(arch) == pytest.approx(before + table.correction.scale)
