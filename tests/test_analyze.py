"""`pearl analyze` on two real tiny searches (KD reward and CE reward, PPO, latency from the
shipped host table), and the math under it on inputs whose answer is known."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from search_helpers import make_tiny_teacher

from pipeline.analysis.stats import (
    candidates_to_reach,
    cv_accuracy,
    fit_linear_bounds,
    fit_pca,
    mean_distance_ratio,
    one_hot,
    operator_differences,
    relative_gains,
    stage_of,
    stage_ranges,
    winning_ratio,
)
from pipeline.cli import cli

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "host_tflite_mnas-cifar_32.csv"

# A corner of mnas-cifar the shipped table covers (its layers are all in the table), with a
# proxy of one step on 32 images: a candidate costs about a second.
CONFIG = """
[data]
path = "{data}"
train_images = 32
val_images = 50

[space]
name = "mnas-cifar"
layer_deltas = [-1]
width_multipliers = [0.75, 1.0]

[teacher]
spec = "{teacher}"
cache_dir = "{cache}"

[proxy]
loss = "{loss}"
epochs = 1
batch_size = 32
threads = 1

[reward]
preset = "soft"
cost = "latency_ms"
target = 1.2

[controller]
name = "ppo"

[search]
batch_size = 4
max_candidates = 8
seed = 0

[latency]
backends = ["table:{table}"]
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def searches(tmp_path_factory, data_dir, cifar_small):
    """``{"kd": folder, "ce": folder}``: two finished 2-generation searches."""
    root = tmp_path_factory.mktemp("analyze")
    teacher = make_tiny_teacher(root, cifar_small)
    folders = {}
    for loss in ("kd", "ce"):
        config = root / f"{loss}.toml"
        config.write_text(
            CONFIG.format(
                data=data_dir / "cifar10_small.npz",
                teacher=teacher,
                cache=root / "logits",
                loss=loss,
                table=TABLE,
            )
        )
        folders[loss] = root / loss
        result = invoke("search", "--config", config, "--out", folders[loss], "--no-progress")
        assert result.exit_code == 0, result.output
    return folders


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def analysed(searches, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "kd-vs-ce"
    before = {name: _fingerprint(folder) for name, folder in searches.items()}
    result = invoke(
        "analyze", searches["kd"], searches["ce"], "--out", out, "--stages", "2",
        "--top-k", "5", "--winning-ratio", "1", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {name: _fingerprint(folder) for name, folder in searches.items()} == before
    return out, result


def _csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_report_has_every_figure_and_the_encoding_size(analysed, searches):
    from pipeline.config import load_config

    out, result = analysed
    assert Path(result.stdout.strip()) == out / "analysis.md"
    text = (out / "analysis.md").read_text()
    space = load_config(searches["kd"] / "config.toml").space.build()
    dimensions = sum(len(d.options) for d in space.decisions())
    assert f"One-hot encoding: {dimensions} dimensions ({len(space.decisions())} decisions" in text
    for name in ("fig4_kd", "fig4_ce", "pca_stages", "pca_runs", "operators_kd_vs_ce"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
        assert f"figures/{name}.png" in text
    assert re.search(r"<= MMACs <= ", text)  # the fitted bounds of Fig. 4 (e)
    samples = _csv(out / "samples.csv")
    assert len(samples) == 16 and {s["run"] for s in samples} == {"kd", "ce"}


def test_fig8_lists_every_dimension_by_name_most_significant_first(analysed):
    out, _ = analysed
    rows = _csv(out / "operators_kd_vs_ce.csv")
    names = [r["dimension"] for r in rows]
    assert len(names) == len(set(names)) and "block 3 kernel 5" in names
    assert all(
        re.fullmatch(r"block [1-7] (op|kernel|SE|skip|channels|layers) \S+", n) for n in names
    )
    significance = [float(r["significance"]) for r in rows]
    assert significance == sorted(significance, reverse=True)
    for row in rows:  # frequencies of a one-hot dimension, and their difference
        assert 0 <= float(row["mean_a"]) <= 1 and 0 <= float(row["mean_b"]) <= 1
        assert float(row["diff"]) == pytest.approx(float(row["mean_a"]) - float(row["mean_b"]))


def test_winning_ratio_is_computed_and_resumes_without_retraining(analysed, searches):
    out, _ = analysed
    plan = json.loads((out / "winning_plan.json").read_text())
    trainings = json.loads((out / "winning_trainings.json").read_text())
    archs = {p[s] for p in plan["pairs"] for s in ("kd_searched", "ce_searched")}
    assert len(plan["pairs"]) == 2 and len(trainings) == len(archs)
    assert all(set(v) == {"kd", "ce"} and 0 <= v["kd"] <= 1 for v in trainings.values())
    pairs = _csv(out / "winning_ratio.csv")
    assert len(pairs) == 2 and all(p["gain_pp"] != "" for p in pairs)
    text = (out / "analysis.md").read_text()
    assert re.search(r"\| 1 \| [01] / 1 \| [+-]\d", text)
    assert f"{2 * len(archs)} trainings ran in this call" in text

    stamp = (out / "winning_trainings.json").stat().st_mtime_ns
    again = invoke(
        "analyze", searches["kd"], searches["ce"], "--out", out, "--stages", "2",
        "--top-k", "5", "--winning-ratio", "1", "--no-progress",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (out / "winning_trainings.json").stat().st_mtime_ns == stamp
    assert "0 trainings ran in this call" in (out / "analysis.md").read_text()
    assert _csv(out / "winning_ratio.csv") == pairs

    changed = invoke(
        "analyze", searches["kd"], searches["ce"], "--out", out, "--stages", "2",
        "--winning-ratio", "2", "--no-progress",
    )  # fmt: skip
    assert changed.exit_code == 1 and "other settings" in changed.output


def test_one_run_with_more_stages_than_generations(searches, tmp_path):
    result = invoke("analyze", searches["kd"], "--out", tmp_path / "one", "--no-progress")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "one" / "analysis.md").read_text()
    assert "2 equal slices (4 asked; the shortest run has 2 generations)" in text
    assert "| kd: generation 0 vs last stage | 4 | 4 |" in text
    assert "Operator probabilities" not in text  # one run: nothing to compare


def test_bad_inputs_are_clear_errors(searches, tmp_path):
    not_a_search = tmp_path / "photos"
    not_a_search.mkdir()
    result = invoke("analyze", not_a_search, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "is not a search folder" in result.output
    assert not (not_a_search / "results.sqlite").exists()
    inside = invoke("analyze", searches["kd"], "--out", searches["kd"] / "analysis")
    assert inside.exit_code == 1 and "never writes into a run folder" in inside.output
    labels = invoke("analyze", searches["kd"], searches["ce"], "--label", "x", "--out", tmp_path)
    assert labels.exit_code == 1 and "1 --label given for 2 folders" in labels.output
    order = invoke(
        "analyze", searches["ce"], searches["kd"], "--out", tmp_path / "o", "--winning-ratio", "1"
    )
    assert order.exit_code == 1 and "give the KD search first" in order.output
    span = invoke("analyze", searches["kd"], "--out", tmp_path / "o", "--latency-range", "3,1")
    assert span.exit_code == 2 and "LO < HI" in span.output


# -- the math, on inputs whose answer is known -------------------------------------------------


def test_stages_are_equal_slices_of_the_generations():
    assert stage_of(range(8), 4, 7).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert stage_ranges(4, 7) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert stage_of([0, 1, 2], 2, 2).tolist() == [0, 0, 1]


def _population(rng, probability_first: float, n: int, decisions: int = 20) -> np.ndarray:
    picks = (rng.random((n, decisions)) > probability_first).astype(int)
    return one_hot(picks.tolist(), [2] * decisions)


def test_separability_tells_different_groups_from_identical_ones():
    rng = np.random.default_rng(0)
    a, b = _population(rng, 0.8, 60), _population(rng, 0.2, 60)
    same_1, same_2 = _population(rng, 0.5, 60), _population(rng, 0.5, 60)
    assert cv_accuracy(a, b) > 0.95 and mean_distance_ratio(a, b) > 1.0
    assert 0.3 < cv_accuracy(same_1, same_2) < 0.7 and mean_distance_ratio(same_1, same_2) < 0.5
    assert cv_accuracy(a, a.copy()) == 0.5 and mean_distance_ratio(a, a.copy()) == 0.0


def test_pca_finds_the_direction_of_largest_spread():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) * [5, 1, 0.5, 0.2, 0.1]
    pca = fit_pca(x, 2)
    assert pca.components.shape == (2, 5) and abs(pca.components[0, 0]) > 0.99
    assert pca.explained[0] > 0.9 and pca.project(x).shape == (200, 2)


def test_operator_differences_put_the_changed_dimension_first():
    rng = np.random.default_rng(2)
    a, b = _population(rng, 0.5, 80, 3), _population(rng, 0.5, 80, 3)
    a[:, 4], a[:, 5] = 1.0, 0.0  # decision 3 always takes its first option in group a
    rows = operator_differences(a, b, [f"d{i}" for i in range(6)])
    assert {rows[0]["dimension"], rows[1]["dimension"]} == {"d4", "d5"}
    assert rows[0]["significance"] > 3 and rows[-1]["significance"] < rows[0]["significance"]


def test_linear_bounds_hold_the_chosen_share_of_points():
    rng = np.random.default_rng(3)
    latency = rng.uniform(8, 30, 400)
    mmacs = rng.uniform(3.4, 10.5, 400) * (latency - 7)
    bounds = fit_linear_bounds(latency, mmacs, coverage=0.9)
    ratio = mmacs / (latency - bounds.offset_ms)
    inside = (ratio >= bounds.lower_slope) & (ratio <= bounds.upper_slope)
    assert 0.88 <= inside.mean() <= 0.92 and bounds.offset_ms < latency.min()
    assert 3 < bounds.lower_slope < bounds.upper_slope < 12
    with pytest.raises(ValueError, match="two points"):
        fit_linear_bounds([1.0], [2.0])


def test_relative_gain_winning_ratio_and_search_efficiency():
    gains = relative_gains([(70, 60), (50, 52)], [(65, 60), (50, 50)])
    assert gains == [5, -2] and winning_ratio(gains) == (1, 2)
    assert candidates_to_reach([0.1, None, 0.3, 0.5], 0.3) == 3
    assert candidates_to_reach([0.1], 0.3) is None
