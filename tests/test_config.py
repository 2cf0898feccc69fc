"""Search config: defaults, TOML overrides, unknown keys, CLI overrides, saved config + hash."""

import tomllib
from pathlib import Path

import pytest

from pipeline.config import (
    ConfigError,
    SearchConfig,
    TeacherConfig,
    load_config,
)
from pipeline.config_hash import config_hash, save_config
from pipeline.config_paths import with_absolute_paths
from pipeline.config_toml import parse_overrides
from pipeline.run_config import RUN_SECTIONS, RunConfig

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_are_akd_and_file_values_override_them(tmp_path):
    default = SearchConfig(teacher=TeacherConfig(spec="t.pt"))
    assert default.proxy.epochs == 5 and default.proxy.alpha == 0.9
    assert default.reward.preset == "soft" and default.controller.name == "ppo"
    assert default.proxy.early_stop_epoch == 0  # off by default
    path = _write(
        tmp_path,
        '[teacher]\nspec = "t.pt"\n[proxy]\nepochs = 3\nloss = "ce"\n'
        '[controller]\nname = "evolution"\n[controller.options]\npopulation_size = 8\n'
        '[latency]\nbackends = ["host:onnx"]\n',
    )
    config = load_config(path)
    assert config.proxy.epochs == 3 and config.proxy.loss == "ce"
    assert config.controller.options == {"population_size": 8}
    assert config.latency.backends == ("host:onnx",)
    assert config.proxy.batch_size == 128  # untouched keys keep their defaults


def test_unknown_keys_and_sections_name_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, '[teacher]\nspec = "t.pt"\n[proxy]\nepoch = 3\n'))
    message = str(error.value)
    assert "proxy.epoch" in message and "epochs" in message and "batch_size" in message
    with pytest.raises(ConfigError, match=r"\[serach\].*valid sections.*\[search\]"):
        load_config(_write(tmp_path, "[serach]\nseed = 1\n"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[proxy]\nloss = "ce"\nepochs = "three"', "proxy.epochs: expected int"),
        ('[proxy]\nloss = "mse"', "proxy.loss: must be one of"),
        ('[proxy]\nloss = "ce"\n[reward]\ncost = "flops"', "reward.cost"),
        ('[proxy]\nloss = "kd"', "needs a teacher"),
        ('[proxy]\nloss = "ce"\n[search]\nmax_candidates = 0', "set a budget"),
        ('[proxy]\nloss = "ce"\n[latency]\nbackends = []', "needs latency.backends"),
        ("[proxy\n", "not valid TOML"),
        ('[proxy]\nloss = "ce"\n[latency]\nbackends = ["gpu:0"]', "unknown backend 'gpu:0'"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(_write(tmp_path, text))


def test_cli_style_overrides_beat_the_file_and_are_typed(tmp_path):
    path = _write(tmp_path, '[teacher]\nspec = "t.pt"\n[proxy]\nepochs = 3\n')
    overrides = parse_overrides(
        ["proxy.epochs=2", "latency.backends=host:onnx,host:tflite", "latency.overlap=false"]
    )
    config = load_config(path, overrides)
    assert config.proxy.epochs == 2
    assert config.latency.backends == ("host:onnx", "host:tflite")
    assert config.latency.overlap is False
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_overrides(["epochs=2"])


def test_saved_config_round_trips_with_its_hash(tmp_path):
    config = with_absolute_paths(
        load_config(_write(tmp_path, '[teacher]\nspec = "t.pt"\n[data]\npath = "d.npz"\n')),
        base=tmp_path,
    )
    assert config.data.path == str(tmp_path / "d.npz")
    assert config.teacher.spec == str(tmp_path / "t.pt")
    digest = save_config(config, tmp_path)
    saved = tmp_path / "config.toml"
    assert digest in saved.read_text().splitlines()[0]
    tomllib.loads(saved.read_text())  # valid TOML
    again = load_config(saved)
    assert again == config and config_hash(again) == digest
    # the budget is not part of the hash; anything that changes results is
    bigger = load_config(saved, {"search": {"max_candidates": "500"}})
    assert config_hash(bigger) == digest
    assert config_hash(load_config(saved, {"proxy": {"epochs": "2"}})) != digest


def test_quickstart_config_is_valid():
    from pipeline.run_config import RUN_SECTIONS, RunConfig

    config = load_config(REPO / "configs" / "quickstart.toml", None, RunConfig, RUN_SECTIONS)
    assert config.data.path.endswith("cifar10_small.npz")
    assert config.latency.backends
    assert config.train.losses == ("kd", "ce") and config.export.formats


def test_where_a_run_trains_is_outside_the_hash_and_checked():
    from pipeline.config_hash import config_hash

    base = load_config(None, {"proxy": {"loss": "ce"}})
    moved = load_config(
        None,
        {
            "proxy": {"loss": "ce"},
            "compute": {"device": "cuda:1", "amp": "false"},
            "ray": {"address": "auto", "gpus_per_candidate": "0.25"},
            "search": {"executor": "ray", "max_candidates": "999"},
        },
    )
    assert config_hash(moved) == config_hash(base)
    other = load_config(None, {"proxy": {"loss": "ce", "epochs": "2"}})
    assert config_hash(other) != config_hash(base)
    with pytest.raises(ConfigError, match="compute.device: 'gpu' is not one of"):
        load_config(None, {"proxy": {"loss": "ce"}, "compute": {"device": "gpu"}})
    with pytest.raises(ConfigError, match="search.executor"):
        load_config(None, {"proxy": {"loss": "ce"}, "search": {"executor": "dask"}})


def test_default_caches_live_under_pearl_cache_dir(monkeypatch, tmp_path, pearl_cache_dir):
    from device_bench.cache import MeasurementCache
    from models.cache_dir import cache_root
    from pipeline.run_config import RUN_SECTIONS, RunConfig, run_config_with_absolute_paths

    assert cache_root() == pearl_cache_dir  # conftest: no test touches ~/.cache/pearl
    monkeypatch.setenv("PEARL_CACHE_DIR", str(tmp_path / "cache"))
    quickstart = load_config(REPO / "configs" / "quickstart.toml", None, RunConfig, RUN_SECTIONS)
    for config in (
        with_absolute_paths(load_config(None, {"proxy": {"loss": "ce"}})),
        run_config_with_absolute_paths(quickstart, REPO / "configs"),
    ):
        assert Path(config.teacher.cache_dir) == tmp_path / "cache" / "teacher_logits"
        assert Path(config.latency.export_cache_dir) == tmp_path / "cache" / "artifacts"
    assert MeasurementCache().path == tmp_path / "cache" / "measurements.sqlite"

    # unset: ~/.cache/pearl, and the same hash as the explicit paths of older configs
    monkeypatch.delenv("PEARL_CACHE_DIR")
    default = with_absolute_paths(load_config(None, {"proxy": {"loss": "ce"}}))
    home_cache = (Path.home() / ".cache" / "pearl").resolve()
    assert Path(default.teacher.cache_dir) == home_cache / "teacher_logits"
    explicit = load_config(
        None,
        {
            "proxy": {"loss": "ce"},
            "teacher": {"cache_dir": "~/.cache/pearl/teacher_logits"},
            "latency": {"export_cache_dir": "~/.cache/pearl/artifacts"},
        },
    )
    assert config_hash(with_absolute_paths(explicit)) == config_hash(default)


def test_pearl_search_reads_only_the_search_sections_of_a_run_config(tmp_path):
    from pipeline.cli_search import _search_part

    path = tmp_path / "run.toml"
    path.write_text('[proxy]\nloss = "ce"\n[train]\nepochs = 3\n[export]\nformats = ["onnx"]\n')
    with pytest.raises(ConfigError, match="train.losses has kd/od"):  # pearl run wants a teacher
        load_config(path, None, RunConfig, RUN_SECTIONS)
    assert _search_part(path, {}).proxy.loss == "ce"  # a CE search does not


def test_latency_precision_is_checked_and_hashed_only_when_not_fp32():
    base = load_config(None, {"proxy": {"loss": "ce"}})
    assert base.latency.precision == "fp32"
    fp32 = load_config(None, {"proxy": {"loss": "ce"}, "latency": {"precision": "fp32"}})
    assert config_hash(fp32) == config_hash(base)  # runs from before the setting keep theirs
    int8 = load_config(None, {"proxy": {"loss": "ce"}, "latency": {"precision": "int8"}})
    assert config_hash(int8) != config_hash(base)  # another precision, other latencies
    with pytest.raises(ConfigError, match="latency.precision.*fp32"):
        load_config(None, {"proxy": {"loss": "ce"}, "latency": {"precision": "int4"}})
    with pytest.raises(ConfigError, match="host:onnx times fp32 .onnx files only"):
        load_config(
            None,
            {"proxy": {"loss": "ce"}, "latency": {"precision": "int8", "backends": ["host:onnx"]}},
        )
