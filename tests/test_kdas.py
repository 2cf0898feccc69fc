"""The KDAS search (`search.method = "kdas"`): its config section and errors, the memory budget
of the winner rule (eq. 7), and a tiny real search with oracle KD from a two-member ensemble of
real (briefly trained) teachers, resumed with a bigger budget."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from search_helpers import make_tiny_teacher

from models.addon_space import AddonSpace
from models.network import decode_network
from pipeline.cli import cli
from pipeline.config import ConfigError, load_config
from pipeline.config_hash import config_hash
from pipeline.reward import RewardSpec
from pipeline.store import ResultsStore
from pipeline.winners import MemoryBudget, pick_winners

RESNET20_PARAMS = 269_722  # the CIFAR ResNet-20 at 10 classes (He et al.: 0.27M)
CE = {"proxy": {"loss": "ce"}}


def kdas_config(**kdas):
    return load_config(None, {**CE, "search": {"method": "kdas"}, "kdas": kdas})


def test_kdas_config_builds_the_add_on_space_and_the_memory_budget():
    config = kdas_config(backbone="resnet32", layers_per_stage=3)
    space = AddonSpace("resnet32", 32, 10, 3)
    assert config.kdas.build(config.space) == space
    assert config.max_params() == 2 * space.backbone_params()  # M = 2x the backbone (paper)
    assert kdas_config(memory_factor=1.5).max_params() == int(1.5 * RESNET20_PARAMS)
    assert kdas_config(memory_mb=2.0).max_params() == 500_000  # 2 MB of float32 parameters
    assert load_config(None, CE).max_params() is None  # AKD: no memory budget


def test_the_kdas_quickstart_config_loads_as_a_run_config():
    from pathlib import Path

    from pipeline.run_config import RUN_SECTIONS, RunConfig, run_config_with_absolute_paths

    repo = Path(__file__).resolve().parents[1]
    path = repo / "configs" / "kdas_quickstart.toml"
    config = load_config(path, None, RunConfig, RUN_SECTIONS)
    assert config.search.method == "kdas" and config.controller.name == "reinforce"
    # oracle KD from the ensemble that the command at the top of the file writes to runs/
    assert config.proxy.loss == "od" and list(config.train.losses) == ["od"]
    teacher = run_config_with_absolute_paths(config, path.parent).teacher.spec
    assert Path(teacher) == repo / "runs" / "kdas_teachers" / "ensemble.json"
    assert "-o runs/kdas_teachers" in path.read_text()
    assert config.max_params() == int(1.5 * RESNET20_PARAMS)
    assert config.train.temperature == config.proxy.temperature == 3.0  # KDAS: T = 3
    assert config.train.alpha == config.proxy.alpha == 1.0  # lambda = 0
    assert decode_network(config.train.baseline) == decode_network(
        "addon:resnet20_in32_cls10|none|none|none"
    )


def test_a_method_section_is_hashed_only_in_that_methods_runs():
    akd = config_hash(load_config(None, CE))
    # an AKD run's hash ignores [kdas] (and the method name "akd", as before methods existed)
    assert config_hash(load_config(None, {**CE, "kdas": {"layers_per_stage": 3}})) == akd
    assert config_hash(load_config(None, {**CE, "search": {"method": "akd"}})) == akd
    assert config_hash(kdas_config()) != akd
    assert config_hash(kdas_config(layers_per_stage=3)) != config_hash(kdas_config())


@pytest.mark.parametrize(
    "kdas, match",
    [
        ({"memory_factor": 0.5}, r"memory_factor = 0.5 allows 134,861 parameters .* less than"),
        ({"memory_mb": 0.5}, r"memory_mb = 0.5 .*less than the backbone resnet20 alone \(269,722"),
        ({"backbone": "wrn16"}, r"kdas.backbone: must be one of \('resnet20'"),
        ({"evaluation": "enas"}, r"kdas.evaluation: must be proxy or shared"),
        ({"layers_per_stage": -1}, r"kdas.layers_per_stage: must be 0..6"),
    ],
)
def test_bad_kdas_settings_are_config_errors_naming_the_fix(kdas, match):
    with pytest.raises(ConfigError, match=match):
        kdas_config(**kdas)


def test_shared_weights_train_in_this_process_only():
    with pytest.raises(ConfigError, match="use search.executor = 'inprocess'"):
        load_config(
            None,
            {
                **CE,
                "search": {"method": "kdas", "executor": "ray"},
                "kdas": {"evaluation": "shared"},
            },
        )


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"search.method: one of \('akd', 'kdas', 'gates'\)"):
        load_config(None, {**CE, "search": {"method": "darts"}})


@dataclass
class Row:
    key: str
    accuracy: float
    params: int
    latency_ms: float = 1.0
    arch: str = "a"
    latency_source: str = "host"
    latency_spec: str = "host:tflite"
    macs: int = 1
    generation: int = 0
    memory_mb: float | None = None
    memory_source: str | None = None

    def cost(self, name: str):
        return getattr(self, name)


def params_budget(limit: int) -> MemoryBudget:
    return MemoryBudget("params", limit, "kdas.memory_factor or memory_mb")


def test_the_winner_is_the_most_accurate_within_the_memory_budget_and_the_target():
    rows = [Row("big", 0.9, 600), Row("mid", 0.8, 500), Row("fast", 0.7, 400, latency_ms=0.5)]
    hard = RewardSpec.preset("hard", 2.0)
    (winner,) = pick_winners(rows, [2.0], hard, [params_budget(500)])
    assert winner["key"] == "mid" and winner["within_memory"] and winner["max_params"] == 500
    assert pick_winners(rows, [2.0], hard)[0]["key"] == "big"  # no budget: as before
    assert "within_memory" not in pick_winners(rows, [2.0], hard)[0]
    # memory and latency together: within both
    assert pick_winners(rows, [0.6], hard, [params_budget(500)])[0]["key"] == "fast"
    # nothing fits the memory: the rule without the budget, flagged and explained
    over = pick_winners(rows, [0.6], hard, [params_budget(100)])[0]
    assert over["key"] == "fast" and over["within_memory"] is False and over["within_target"]
    assert "raise kdas.memory_factor" in over["note"]


TINY_KDAS = """
[data]
path = "{data}"
train_images = 128
val_images = 100

[teacher]
spec = "{teacher}"
cache_dir = "{cache}"

[proxy]
loss = "od"
temperature = 3.0
alpha = 1.0
epochs = 1
warmup_epochs = 0
batch_size = 64
threads = 1

[reward]
preset = "hard"
cost = "params"
target = 1e9

[controller]
name = "reinforce"

[search]
method = "kdas"
batch_size = 2
max_candidates = 2
seed = 0

[kdas]
backbone = "resnet20"
layers_per_stage = 1
memory_factor = 1.02
"""


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, cifar_small) -> str:
    """Two real, briefly trained teachers (different seeds) as one ensemble spec."""
    folder = tmp_path_factory.mktemp("members")
    return ",".join(str(make_tiny_teacher(folder, cifar_small, seed=seed)) for seed in (0, 1))


def write_tiny(folder, data_dir, ensemble: str, **kdas) -> str:
    text = TINY_KDAS.format(
        data=data_dir / "cifar10_small.npz", teacher=ensemble, cache=folder / "logits"
    )
    text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in kdas.items())
    path = folder / "kdas.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_a_tiny_kdas_search_with_oracle_kd_resumes_and_respects_the_budget(
    tmp_path, data_dir, ensemble
):
    config = write_tiny(tmp_path, data_dir, ensemble)
    run = tmp_path / "run"
    run_cli("search", "--config", config, "--out", str(run), "--no-progress")
    run_cli("search", "--resume", str(run), "--max-candidates", "4", "--no-progress", "--json")
    with ResultsStore(run / "results.sqlite") as store:
        rows = store.candidates()
        states = [store.controller_state(g) for g in (0, 1)]
    assert [(r.generation, r.slot) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    space = AddonSpace("resnet20", 32, 10, 1)
    for row in rows:
        network = decode_network(row.arch)
        assert space.arch_from(space.choices_of(network)) == network
        assert row.params == network.cost().params and row.status == "ok"
        assert 0 <= row.accuracy <= 1 and row.reward == pytest.approx(row.accuracy)
    assert states[1]["updates"] == states[0]["updates"] + 1  # REINFORCE restored, then updated
    best = json.loads((run / "best_arch.json").read_text())[0]
    limit = int(1.02 * RESNET20_PARAMS)
    assert best["max_params"] == limit
    fitting = [r for r in rows if r.params <= limit]
    if fitting:
        assert best["within_memory"] and best["params"] <= limit
        assert best["accuracy"] == max(r.accuracy for r in fitting)
    else:
        assert best["within_memory"] is False
    # the report: the memory scatter and the chosen network drawn as stages and add-ons
    run_cli("report", str(run))
    report = (run / "report.md").read_text()
    assert "## KDAS" in report and f"= {limit:,} parameters" in report
    assert "stage 3     3 basic blocks, 64 ch, 8x8" in report and best["arch"] in report
    assert (run / "figures" / "kdas_memory.png").stat().st_size > 10_000


@pytest.mark.parametrize("name", ["resnet20", "wrn16-1"])
def test_the_shared_network_computes_what_each_standalone_network_computes(name):
    """With the shared weights copied in, a network built on its own gives the shared
    network's output for that network: weight sharing evaluates the candidates themselves."""
    import torch

    from models.addon_builder import SharedAddonModule

    shared = SharedAddonModule(name, 10, layers_per_stage=2).eval()
    space = AddonSpace(name, 16, 10, 2)
    x = torch.randn(2, 3, 16, 16)
    kept = {k: v for k, v in shared.state_dict().items() if not k.startswith(("stages", "slots"))}
    for seed in range(3):
        network = space.sample(random.Random(seed))
        weights = dict(kept)
        for s, layers in enumerate(network.stages):
            for name, value in shared.stages[s].state_dict().items():
                weights[f"stages.{s}.{name}"] = value  # the blocks keep their indices
            for j, layer in enumerate(layers):
                addons = len(shared.stages[s])  # the add-on stage follows the blocks
                for name, value in shared.slots[s][j][layer.op].state_dict().items():
                    weights[f"stages.{s}.{addons}.ops.{j}.{name}"] = value
        alone = network.build().eval()
        alone.load_state_dict(weights)
        with torch.no_grad():
            assert torch.allclose(alone(x), shared(x, network), atol=1e-5)


@pytest.mark.slow
def test_shared_weight_evaluation_resumes_exactly(tmp_path, data_dir, ensemble):
    """ENAS-style evaluation: a search stopped after one generation and resumed ends with the
    same scores and the same shared weights as one that ran through."""
    import torch

    config = write_tiny(tmp_path, data_dir, ensemble, evaluation="shared")
    stopped, through = tmp_path / "stopped", tmp_path / "through"
    run_cli("search", "--config", config, "--out", str(stopped), "--no-progress")
    run_cli("search", "--resume", str(stopped), "--max-candidates", "4", "--no-progress")
    run_cli(
        "search",
        "--config",
        config,
        "--out",
        str(through),
        "--max-candidates",
        "4",
        "--no-progress",
    )
    with (
        ResultsStore(stopped / "results.sqlite") as a,
        ResultsStore(through / "results.sqlite") as b,
    ):
        rows_a, rows_b = a.candidates(), b.candidates()
        state_a, state_b = a.last_generation()[1], b.last_generation()[1]
    assert len(rows_a) == 4
    assert [(r.key, r.accuracy) for r in rows_a] == [(r.key, r.accuracy) for r in rows_b]
    assert state_a["shared"]["passes"] == state_b["shared"]["passes"] == 2
    for name, tensor in state_a["shared"]["model"].items():
        assert torch.equal(tensor, state_b["shared"]["model"][name]), name
    assert all(0 <= r.accuracy <= 1 and r.train_seconds > 0 for r in rows_a)
