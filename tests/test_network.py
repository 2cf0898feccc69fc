"""Network families (`models.network`): one decoder for every language Pearl speaks."""

from pathlib import Path

import pytest

from models.arch import Arch
from models.baselines import resolve_arch
from models.costs import arch_cost
from models.network import FAMILIES, decode_network, family_of

MNAS = "in32_cls10|stem_k3_s1_c16_re|mb3_k5_s2_se25_id_c24_n2_r6|head_c64_re"


def test_unprefixed_strings_are_mnasnet_archs_and_round_trip():
    network = decode_network(f"  {MNAS}\n")
    assert isinstance(network, Arch) and network.encode() == MNAS
    assert family_of(MNAS).name == "mnas" and FAMILIES[0].prefix == ""


def test_cost_and_build_agree_with_the_mnas_functions():
    network = decode_network(MNAS)
    assert network.cost() == arch_cost(network)
    model = network.build(dropout=0.0)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == network.cost().params


def test_unknown_family_prefix_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown network family 'nosuch'.*MnasNet"):
        decode_network("nosuch:in32_cls10|x")
    with pytest.raises(ValueError, match="unknown network family"):
        resolve_arch("nosuch:abc")
    with pytest.raises(ValueError, match="must be text, not NoneType"):
        decode_network(None)


def test_table_backend_names_the_fix_for_a_network_it_cannot_predict():
    from device_bench.measurement import MeasurementError
    from device_bench.table_backend import TableBackend

    table = Path(__file__).resolve().parents[1] / "latency_tables" / "host_tflite_mnas-cifar_32.csv"

    class Other:  # any network of another family
        input_size, num_classes = 32, 10

        def encode(self):
            return "other:net"

    backend = TableBackend(table)
    with pytest.raises(MeasurementError, match="host:tflite"):
        backend.measure_arch(Other())
