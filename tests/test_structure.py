"""The single places the structure issue asked for: names come from one registry, a run folder's
paths from one layout, the training recipe reaches each run without hand copying, the store
answers "scored first evaluations" in one query, and "no cache" means no cache file."""

from __future__ import annotations

import dataclasses

import click
import pytest

from pipeline.cli import cli
from pipeline.config import ConfigError, load_config
from pipeline.layout import RunLayout, SearchLayout, baseline_label, is_baseline, searched_label
from pipeline.registry import CONTROLLERS, LOSSES, SEARCH_METHODS
from pipeline.run_config import RUN_SECTIONS, RunConfig
from pipeline.store import ResultsStore
from pipeline.train_settings import TrainingError, TrainRecipe, TrainSettings


def _choices(command: str, option: str) -> tuple[str, ...]:
    param = next(p for p in cli.commands[command].params if p.name == option)
    assert isinstance(param.type, click.Choice)
    return tuple(param.type.choices)


def test_every_list_of_names_derives_from_its_registry():
    assert _choices("search", "controller") == CONTROLLERS.names
    assert _choices("search", "loss") == LOSSES.names
    assert _choices("train", "loss") == LOSSES.names
    for entry in (*CONTROLLERS, *LOSSES, *SEARCH_METHODS):
        assert callable(entry.load())  # every "module:attribute" resolves
    with pytest.raises(ConfigError, match="controller.name: must be one of.*'evolution'"):
        load_config(None, {"controller": {"name": "bayes"}})
    with pytest.raises(ValueError, match="unknown loss 'mse'; choose one of ce, kd, od"):
        LOSSES["mse"]
    assert [entry.name for entry in LOSSES if entry.needs_teacher] == ["kd", "od"]


def test_the_train_section_hands_its_recipe_to_each_run_unchanged():
    config = load_config(
        None,
        {"teacher": {"spec": "builtin:resnet20_cifar10"}, "train": {"lr": "0.05", "epochs": "4"}},
        RunConfig,
        RUN_SECTIONS,
    )
    settings = TrainSettings.from_recipe(config.train, model="mobilenet_v2_0.5", loss="kd")
    for field in dataclasses.fields(TrainRecipe):
        assert getattr(settings, field.name) == getattr(config.train, field.name)
    assert (settings.model, settings.loss, settings.lr, settings.epochs) == (
        "mobilenet_v2_0.5",
        "kd",
        0.05,
        4,
    )
    with pytest.raises(ConfigError, match="config key train.warmup_epochs"):
        load_config(None, {"train": {"epochs": "1", "warmup_epochs": "2"}}, RunConfig, RUN_SECTIONS)
    with pytest.raises(TrainingError, match="model must be"):
        TrainSettings(epochs=1)


def test_run_folder_paths_come_from_the_layout(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.find_search() is None
    assert layout.train_dir(searched_label("abc"), "kd") == tmp_path / "train" / "searched-abc-kd"
    assert RunLayout.parse_train_dir(
        layout.train_dir(baseline_label("mobilenet_v2_0.5"), "ce")
    ) == (
        "baseline-mobilenet_v2_0.5",
        "ce",
    )
    assert is_baseline(baseline_label("x")) and not is_baseline(searched_label("x"))
    ResultsStore(layout.search.store).close()
    assert layout.find_search() == layout.search
    bare = SearchLayout(tmp_path / "bare")
    ResultsStore(bare.store).close()
    assert RunLayout(bare.root).find_search() == bare


def test_scored_means_first_evaluations_that_ended_with_a_score(tmp_path):
    common = dict(arch="a", choices=[0], macs=10, params=5, config_hash="h")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        ok = store.insert(**common, generation=0, slot=0, key="k1", status="ok", accuracy=0.5)
        store.insert(**common, generation=0, slot=1, key="k2", status="failed", accuracy=0.0)
        cut = store.insert(
            **common, generation=0, slot=2, key="k3", status="terminated", accuracy=0.2
        )
        store.insert(
            **common, generation=1, slot=0, key="k1", status="ok", accuracy=0.5, reused_from=ok.id
        )
        assert [r.key for r in store.scored()] == ["k1", "k3"]
        store.update(cut.id, latency_ms=1.5)
        assert [r.key for r in store.scored("latency_ms")] == ["k3"]
        assert [r.key for r in store.scored("macs")] == ["k1", "k3"]


def test_measurement_cache_none_means_no_cache_file(tmp_path, monkeypatch):
    from pipeline.search_setup import measurement_cache

    monkeypatch.chdir(tmp_path)
    assert measurement_cache("none") is None
    assert not (tmp_path / "none").exists()
    cache = measurement_cache(str(tmp_path / "m.sqlite"))
    assert cache.path == tmp_path / "m.sqlite"
