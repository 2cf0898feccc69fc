"""The architecture language: exact round-trips, stable keys, clear rejection of bad strings."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.arch import ACTIVATIONS, KERNELS, SKIPS, Arch, BlockSpec, HeadSpec, StemSpec
from models.baselines import BASELINES, baseline
from models.space import SPACE_DEFAULTS, get_space

blocks = st.builds(
    lambda op, expand, **kw: BlockSpec(op=op, expand=expand if op == "mb" else 1, **kw),
    op=st.sampled_from(["conv", "ds", "mb"]),
    expand=st.integers(2, 12),
    kernel=st.sampled_from(KERNELS),
    stride=st.sampled_from([1, 2]),
    out_channels=st.integers(1, 2048),
    layers=st.integers(1, 9),
    se_ratio=st.integers(0, 99).map(lambda p: p / 100),
    skip=st.sampled_from(SKIPS),
    act=st.sampled_from(ACTIVATIONS),
)
archs = st.builds(
    Arch,
    input_size=st.integers(1, 1024),
    num_classes=st.integers(1, 22000),
    stem=st.builds(
        StemSpec,
        out_channels=st.integers(1, 256),
        kernel=st.sampled_from(KERNELS),
        stride=st.sampled_from([1, 2]),
        act=st.sampled_from(ACTIVATIONS),
    ),
    blocks=st.lists(blocks, min_size=1, max_size=10).map(tuple),
    head=st.builds(HeadSpec, channels=st.integers(0, 4096), act=st.sampled_from(ACTIVATIONS)),
)


@settings(max_examples=2000, deadline=None)
@given(archs)
def test_any_valid_arch_round_trips_exactly(arch):
    text = arch.encode()
    assert Arch.decode(text) == arch
    assert Arch.decode(text).encode() == text
    assert Arch.decode(text).key() == arch.key()


@pytest.mark.parametrize("space_name", sorted(SPACE_DEFAULTS))
def test_thousands_of_sampled_archs_round_trip(space_name):
    space = get_space(space_name)
    rng = random.Random(7)
    keys = set()
    for _ in range(2000):
        arch = space.sample(rng)
        assert Arch.decode(arch.encode()) == arch
        keys.add(arch.key())
    assert len(keys) == 2000  # a space this large does not repeat in 2,000 draws


def test_key_is_stable_and_content_addressed():
    arch = baseline("mobilenet_v2")
    # Pinned: a change here silently invalidates every cache and results store keyed by it.
    assert arch.key() == "42d131cc2570b24a"
    assert len({baseline(name).key() for name in BASELINES}) == len(BASELINES)


def test_grammar_example_from_readme_decodes():
    text = (
        "in32_cls10|stem_k3_s1_c32_re|mb6_k5_s1_se25_id_c24_n2_re|ds_k3_s2_se0_pool_c40_n1_re"
        "|conv_k3_s1_se0_noskip_c64_n1_hs|head_c1280_re"
    )
    arch = Arch.decode(text)
    assert arch.input_size == 32 and arch.num_classes == 10
    assert arch.blocks[0] == BlockSpec(
        op="mb",
        expand=6,
        kernel=5,
        stride=1,
        se_ratio=0.25,
        skip="id",
        out_channels=24,
        layers=2,
        act="re",
    )
    assert arch.blocks[2].act == "hs"
    assert arch.encode() == text


GOOD = (
    "in32_cls10|stem_k3_s1_c32_r6|ds_k3_s1_se0_noskip_c16_n1_r6|mb6_k5_s2_se25_id_c24_n2_re"
    "|head_c1280_r6"
)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("mb6_k5_", "mb6_k4_", "kernel"),
        ("_k5_s2_", "_k5_s3_", "stride"),
        ("mb6_k5", "mb1_k5", "op"),
        ("mb6_k5", "xx6_k5", "op"),
        ("_se25_id_", "_se25_skip_", "skip"),
        ("_c24_n2_", "_c24_nX_", "layers"),
        ("_c24_n2_", "_c24_n0_", "layers"),
        ("_c24_n2_", "_c0_n2_", "channels"),
        ("_n2_re|", "_n2_relu|", "act"),
        ("_se25_", "_se100_", "se"),
        ("in32_", "in032_", "input"),
        ("cls10|", "cls0|", "classes"),
        ("|stem_", "|stam_", "stem"),
        ("|head_", "|hed_", "head"),
    ],
)
def test_malformed_strings_name_the_token_and_position(old, new, field):
    assert GOOD.count(old) == 1
    bad = GOOD.replace(old, new)
    first_difference = next(i for i, (a, b) in enumerate(zip(bad, GOOD, strict=False)) if a != b)
    position = max(bad.rfind("_", 0, first_difference), bad.rfind("|", 0, first_difference)) + 1
    token = re.split(r"[_|]", bad[position:])[0]
    with pytest.raises(ValueError) as info:
        Arch.decode(bad)
    message = str(info.value)
    assert f"token {token!r} at character {position}" in message
    assert field in message


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("", "segment"),
        ("mobilenet", "segment"),
        ("in32_cls10|stem_k3_s1_c32_re|head_c1280_re", "at least one block"),
        (GOOD.replace("_c24_n2_re", "_c24_re"), "expected 8"),
        (GOOD + "|", "expected"),
    ],
)
def test_structurally_malformed_strings_are_rejected(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        Arch.decode(bad)


def test_specs_validate_when_built_by_keyword():
    with pytest.raises(ValueError, match="expand"):
        BlockSpec(op="ds", kernel=3, stride=1, out_channels=8, layers=1, expand=6)
    with pytest.raises(ValueError, match="se_ratio"):
        BlockSpec(op="ds", kernel=3, stride=1, out_channels=8, layers=1, se_ratio=0.125)
    with pytest.raises(ValueError, match="tuple"):
        Arch(32, 10, StemSpec(8), [BlockSpec("ds", 3, 1, 8, 1)], HeadSpec())
