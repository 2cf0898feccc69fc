"""Run folders protect themselves: a new search or run never writes over a foreign folder, a
resumed run refuses a config that changed under it, a failed start leaves no folder behind, and
paths in a config are taken from the config file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import load_config
from pipeline.config_hash import save_config
from pipeline.config_paths import resolve_path
from pipeline.layout import SearchLayout
from pipeline.run import RunError, discard_unstarted_run, prepare_run_dir
from pipeline.run_config import RUN_SECTIONS, RunConfig
from pipeline.search import SearchError, _refuse_foreign_folder

TEACHER = {"teacher": {"spec": "builtin:resnet20_cifar10"}}


def _run_config(**train):
    overrides = {**TEACHER, "train": {k: str(v) for k, v in train.items()}}
    return load_config(None, overrides, RunConfig, RUN_SECTIONS)


def test_a_new_run_refuses_a_non_empty_folder_and_a_resume_refuses_a_changed_config(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="is not empty"):
        prepare_run_dir(_run_config(), tmp_path / "busy", resume=False)
    run_dir = tmp_path / "run"
    prepare_run_dir(_run_config(epochs=3), run_dir, resume=False)
    prepare_run_dir(_run_config(epochs=3), run_dir, resume=True)  # the same config: fine
    with pytest.raises(RunError, match="changed since this run started"):
        prepare_run_dir(_run_config(epochs=10), run_dir, resume=True)
    with pytest.raises(RunError, match="already holds a run"):
        prepare_run_dir(_run_config(), run_dir, resume=False)


def test_a_search_never_writes_into_a_pearl_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    prepare_run_dir(_run_config(), run_dir, resume=False)
    (run_dir / "search").mkdir()
    before = (run_dir / "config.toml").read_text()
    with pytest.raises(SearchError, match="pearl run --resume"):
        _refuse_foreign_folder(SearchLayout(run_dir))
    assert (run_dir / "config.toml").read_text() == before
    _refuse_foreign_folder(SearchLayout(tmp_path / "new"))  # absent or empty: fine


def test_a_failed_start_leaves_no_folder(tmp_path):
    config = tmp_path / "cfg" / "run.toml"
    config.parent.mkdir()
    config.write_text(
        '[data]\npath = "missing/cifar.npz"\n[teacher]\nspec = "builtin:resnet20_cifar10"\n'
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 1
    # the relative data path was taken from the config's folder, and the message says so
    assert str(tmp_path / "cfg" / "missing" / "cifar.npz") in result.output
    assert "relative paths are taken from the config file's folder" in result.output
    assert "nothing was run" in result.output and not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    save_config(_run_config(), kept)
    (kept / "search").mkdir()
    assert not discard_unstarted_run(kept) and kept.is_dir()


def test_config_paths_resolve_from_the_config_folder_and_pearl_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PEARL_DATA", str(tmp_path / "data"))
    assert resolve_path("$PEARL_DATA/x.npz", Path("/elsewhere")) == tmp_path / "data" / "x.npz"
    assert resolve_path("${PEARL_DATA}/x.npz") == tmp_path / "data" / "x.npz"
    assert resolve_path("d/x.npz", tmp_path) == tmp_path / "d" / "x.npz"
    assert resolve_path("/abs/x.npz", tmp_path) == Path("/abs/x.npz")
