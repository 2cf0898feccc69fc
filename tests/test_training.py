"""Full-schedule training (`pipeline.training`, `pearl train`, `pearl teacher train`): real
training of a tiny network on a slice of cifar10_small."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from process_helpers import kill_once_exists, pearl_process

from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from models.teacher_loading import build_model, load_checkpoint, load_teacher, save_checkpoint
from models.teachers import Ensemble
from pipeline.batches import BatchLoader
from pipeline.cli import cli
from pipeline.proxy import learning_rate
from pipeline.training import TrainingError, TrainSettings, evaluate, scheduled_lr, train

TINY = (
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_re|ds_k5_s2_se0_pool_c24_n1_re"
    "|conv_k3_s1_se0_id_c24_n1_re|head_c64_re"
)
SETTINGS = TrainSettings(model=TINY, epochs=2, batch_size=64, eval_batch_size=128, seed=3)


@pytest.fixture(scope="module")
def tiny_data(cifar_small):
    train_arrays, test_arrays = cifar_small
    return train_arrays.take(np.arange(256)), test_arrays.take(np.arange(128))


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(11)
    model = build_model("resnet20", num_classes=10, input_size=32)
    save_checkpoint(
        path,
        model,
        model_name="resnet20",
        num_classes=10,
        input_size=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    return path


def _weights(run_dir):
    model, _ = load_checkpoint(Path(run_dir) / "model.pt")
    return model.state_dict()


def _same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _curve_without_timing(metrics):
    return [
        {k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k}
        for row in metrics["curve"]
    ]


def test_schedules_warm_up_then_decay():
    cosine = TrainSettings(model=TINY, epochs=10, warmup_epochs=2, lr=0.2)
    assert [scheduled_lr(cosine, s, 5) for s in range(50)] == [
        learning_rate(s, 50, 10, 0.2) for s in range(50)
    ]
    step = replace(cosine, schedule="step")
    assert scheduled_lr(step, 0, 5) == pytest.approx(0.02)  # warm-up: 1/10 of the peak
    assert scheduled_lr(step, 24, 5) == pytest.approx(0.2)
    assert scheduled_lr(step, 25, 5) == pytest.approx(0.02)  # 50% of 50 steps
    assert scheduled_lr(step, 37, 5) == pytest.approx(0.02)
    assert scheduled_lr(step, 38, 5) == pytest.approx(0.002)  # 75%, rounded
    with pytest.raises(TrainingError, match="schedule must be one of cosine, step"):
        TrainSettings(model=TINY, epochs=1, schedule="linear")
    with pytest.raises(TrainingError, match="loss must be one of ce, kd, od"):
        TrainSettings(model=TINY, epochs=1, loss="mse")
    with pytest.raises(TrainingError, match="warmup_epochs"):
        TrainSettings(model=TINY, epochs=1, warmup_epochs=2)


def test_training_writes_checkpoint_and_metrics_and_resumes_exactly(tmp_path, tiny_data):
    train_arrays, test_arrays = tiny_data

    def run(name, settings=SETTINGS, **options):
        return train(
            settings,
            train_arrays,
            test_arrays,
            tmp_path / name,
            progress=False,
            threads=1,
            run_info={"command": "pearl train x"},
            **options,
        )

    full = run("full")
    assert full["finished"] and full["epochs_done"] == 2 and len(full["curve"]) == 2
    assert 0 <= full["top1"] <= full["top5"] <= 1 and full["teacher"] is None
    assert full["top1"] == full["curve"][-1]["test_top1"]
    assert full["train_images_per_s"] > 0 and full["data"]["train_images"] == 256
    assert full["curve"][0]["train_loss"] > full["curve"][1]["train_loss"] * 0.5
    on_disk = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(full))
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["settings"]["model"] == TINY and config["command"] == "pearl train x"
    model, payload = load_checkpoint(tmp_path / "full" / "model.pt")
    assert payload["test_top1"] == full["top1"] and payload["mean"] == list(CIFAR10_MEAN)
    loader = BatchLoader(test_arrays, 128, train=False)
    assert evaluate(model, loader, 10)["top1"] == full["top1"]

    part = run("part", stop_after_epochs=1)
    assert not part["finished"] and not (tmp_path / "part" / "model.pt").exists()
    with pytest.raises(TrainingError, match="pass --resume"):
        run("part")
    with pytest.raises(TrainingError, match="different settings.*lr: 0.1 then, 0.05 now"):
        run("part", replace(SETTINGS, lr=0.05), resume=True)
    resumed = run("part", resume=True)
    assert _curve_without_timing(resumed) == _curve_without_timing(full)
    assert _same_weights(_weights(tmp_path / "part"), _weights(tmp_path / "full"))


def test_loss_choices(tmp_path, tiny_data, teacher_file):
    train_arrays, test_arrays = tiny_data
    one = replace(SETTINGS, epochs=1)
    teacher = load_teacher(str(teacher_file), num_classes=10, input_size=32)

    def run(name, settings, teacher=None):
        return train(
            settings,
            train_arrays,
            test_arrays,
            tmp_path / name,
            teacher=teacher,
            progress=False,
            threads=1,
        )

    with pytest.raises(TrainingError, match="needs a teacher"):
        run("x", replace(one, loss="kd"))
    ce = run("ce", one)
    # alpha = 0 leaves only the label term: KD and oracle KD must then equal plain CE exactly.
    kd0 = run("kd0", replace(one, loss="kd", alpha=0.0), teacher)
    ensemble = Ensemble([teacher, load_teacher(str(teacher_file), num_classes=10, input_size=32)])
    od0 = run("od0", replace(one, loss="od", alpha=0.0), ensemble)
    assert _same_weights(_weights(tmp_path / "kd0"), _weights(tmp_path / "ce"))
    assert _same_weights(_weights(tmp_path / "od0"), _weights(tmp_path / "ce"))
    kd = run("kd", replace(one, loss="kd", alpha=0.9, temperature=4.0), teacher)
    assert not _same_weights(_weights(tmp_path / "kd"), _weights(tmp_path / "ce"))
    assert kd["curve"][0]["train_loss"] != ce["curve"][0]["train_loss"]
    # The teacher's own accuracy on the same test split is recorded for reference.
    expected = evaluate(teacher, BatchLoader(test_arrays, 128, train=False), 10)
    for metrics in (kd0, kd):
        assert metrics["teacher"]["top1"] == expected["top1"]
        assert metrics["teacher"]["top5"] == expected["top5"]
    assert od0["teacher"]["top1"] == expected["top1"]  # two identical members


@pytest.mark.slow
def test_pearl_train_killed_mid_run_resumes_to_the_uninterrupted_result(
    tmp_path, data_dir, teacher_file
):
    args = [
        "train",
        TINY,
        "--teacher",
        str(teacher_file),
        "--loss",
        "kd",
        "--data",
        str(data_dir / "cifar10_small.npz"),
        "--train-images",
        "256",
        "--test-images",
        "64",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--quiet",
    ]
    victim = pearl_process([*args, "-o", str(tmp_path / "killed")])
    # metrics.json is written right after state.pt at the end of an epoch: wait for both
    kill_once_exists(victim, tmp_path / "killed" / "metrics.json")
    interrupted = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert not interrupted["finished"] and interrupted["epochs_done"] < 3
    assert not (tmp_path / "killed" / "model.pt").exists()

    # The same command in this process, uninterrupted, is the reference.
    runner = CliRunner()
    reference = runner.invoke(cli, [*args, "-o", str(tmp_path / "reference")])
    assert reference.exit_code == 0, reference.output
    assert "test top-1" in reference.output and "teacher top-1" in reference.output
    again = runner.invoke(cli, [*args, "-o", str(tmp_path / "killed")])
    assert again.exit_code == 1 and "pass --resume" in again.output

    resumed = pearl_process([*args, "-o", str(tmp_path / "killed"), "--resume"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    done = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert _curve_without_timing(done) == _curve_without_timing(expected)
    assert _same_weights(_weights(tmp_path / "killed"), _weights(tmp_path / "reference"))


@pytest.mark.parametrize(
    ("command", "exit_code", "messages"),
    [
        pytest.param(
            "train mobilenet_v2_0.5 --data {small} --epochs 1 -o {tmp}/r",
            2,  # a usage error
            ["--loss kd needs --teacher"],
            id="kd-without-teacher",
        ),
        pytest.param(
            "train mobilenet_v3 --loss ce --data {small} --epochs 1 -o {tmp}/r",
            1,
            ["neither a baseline name", "resnet20"],
            id="unknown-model",
        ),
        pytest.param(
            f"train {TINY} --teacher {{tmp}}/none.pt --data {{small}} --epochs 1 -o {{tmp}}/r",
            1,
            ["no such checkpoint file"],
            id="missing-teacher",
        ),
        pytest.param(
            "teacher train --model resnet21 --data {tmp}/missing.npz --epochs 1 -o t.pt",
            1,
            ["does not exist"],
            id="missing-data",
        ),
    ],
)
def test_cli_errors_are_clear(tmp_path, data_dir, command, exit_code, messages):
    small = data_dir / "cifar10_small.npz"
    args = [word.format(small=small, tmp=tmp_path) for word in command.split()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code
    assert all(message in result.output for message in messages), result.output
    assert "Traceback" not in result.output


def test_teacher_train_writes_a_loadable_teacher(tmp_path, data_dir):
    output = tmp_path / "teacher.pt"
    result = CliRunner().invoke(
        cli,
        [
            "teacher",
            "train",
            "--model",
            TINY,
            "--data",
            str(data_dir / "cifar10_small.npz"),
            "--epochs",
            "1",
            "--train-images",
            "128",
            "--test-images",
            "64",
            "--batch-size",
            "64",
            "--schedule",
            "step",
            "--threads",
            "1",
            "--quiet",
            "-o",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"-> {output}" in result.output
    _, payload = load_checkpoint(output)
    metrics = json.loads((tmp_path / "teacher.pt.run" / "metrics.json").read_text())
    assert payload["test_top1"] == metrics["top1"] and metrics["settings"]["schedule"] == "step"
    assert payload["command"].startswith("pearl teacher train")
    teacher = load_teacher(str(output), num_classes=10, input_size=32)
    assert teacher(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
