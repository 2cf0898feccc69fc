"""Ensemble teachers: `pearl teacher train --seeds` (members, resume after a kill, the spec
file), the spec file as a teacher of `pearl train`, the statistics (`pipeline.ensemble_stats`)
and the errors for members that do not fit together.  Real trainings of a tiny network on a
slice of cifar10_small."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from process_helpers import kill_once_exists, pearl_process

from models.ensembles import member_specs, read_ensemble, write_ensemble
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from models.teacher_loading import TeacherError, build_model, load_teacher, save_checkpoint
from models.teachers import Ensemble
from pipeline.cli import cli
from pipeline.data import CIFAR10_CLASSES
from pipeline.ensemble_stats import ensemble_statistics, member_logits
from pipeline.ensemble_training import parse_seeds
from pipeline.report_ensemble import ensemble_section

TINY = (
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_re|ds_k5_s2_se0_pool_c24_n1_re"
    "|conv_k3_s1_se0_id_c24_n1_re|head_c64_re"
)


# --------------------------------------------------------------------------------------------
# The statistics, on hand-made logits


def test_statistics_of_hand_made_logits():
    labels = np.array([0, 1, 2, 0])
    # member 1 right on images 0, 1; member 2 on 0, 2; member 3 on 0 only; image 3: nobody
    member_1 = [[9, 0, 0], [0, 9, 0], [9, 0, 0], [0, 9, 0]]
    member_2 = [[9, 0, 0], [9, 0, 0], [0, 0, 9], [0, 0, 9]]
    member_3 = [[9, 0, 0], [0, 0, 9], [0, 9, 0], [0, 9, 0]]
    stats = ensemble_statistics(np.array([member_1, member_2, member_3], float), labels)
    assert stats["members"] == 3 and stats["images"] == 4
    assert stats["member_top1"] == [0.5, 0.5, 0.25]
    assert stats["oracle_top1"] == 0.75  # images 0, 1, 2
    # mean logits: image 0 -> class 0 (right); 1 -> (3, 3, 3) tie -> class 0 (wrong);
    # 2 -> (3, 3, 3) -> class 0 (wrong); 3 -> (0, 6, 3) -> class 1 (wrong)
    assert stats["ensemble_top1"] == 0.25
    # by number of correct members: image 3: 0; images 1, 2: 1; none: 2; image 0: 3
    assert stats["correct_members_share"] == [0.25, 0.5, 0.0, 0.25]


def test_statistics_of_one_member_and_bad_shapes():
    stats = ensemble_statistics(np.array([[[1.0, 2.0], [3.0, 0.0]]]), np.array([1, 1]))
    assert stats["member_top1"] == [0.5] == [stats["ensemble_top1"]] == [stats["oracle_top1"]]
    assert stats["correct_members_share"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="members, images, classes"):
        ensemble_statistics(np.zeros((4, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"labels must be \(4,\)"):
        ensemble_statistics(np.zeros((2, 4, 3)), np.zeros(3, int))


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 2-3") == [7, 2, 3]
    for bad in ("", "1,1", "a", "-1", "0-x"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


# --------------------------------------------------------------------------------------------
# Spec files: members that do not fit together


def _checkpoint(path, *, classes=10, size=32, mean=CIFAR10_MEAN, names=CIFAR10_CLASSES, seed=0):
    torch.manual_seed(seed)
    save_checkpoint(
        path,
        build_model("resnet20", num_classes=classes, input_size=size),
        model_name="resnet20",
        num_classes=classes,
        input_size=size,
        mean=mean,
        std=CIFAR10_STD,
        class_names=names[:classes],
    )
    return path


def test_spec_file_round_trip_and_use_as_teacher(tmp_path):
    members = [_checkpoint(tmp_path / f"m{seed}.pt", seed=seed) for seed in (0, 1)]
    spec = tmp_path / "ensemble.json"
    written = write_ensemble(spec, members, command="test")
    document = json.loads(spec.read_text())
    assert document["members"] == ["m0.pt", "m1.pt"]  # relative to the file
    assert document["num_classes"] == 10 and document["input_size"] == 32
    assert written.members == tuple(m.resolve() for m in members)
    assert member_specs(f"{spec}") == [str(m.resolve()) for m in members]
    # a third member given comma-separated beside the file
    third = _checkpoint(tmp_path / "m2.pt", seed=2)
    teacher = load_teacher(f"{spec},{third}", num_classes=10, input_size=32)
    assert isinstance(teacher, Ensemble) and len(teacher.members) == 3
    # the file moves with its members: paths are relative to it
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("ensemble.json", "m0.pt", "m1.pt"):
        (tmp_path / name).rename(moved / name)
    assert len(read_ensemble(moved / "ensemble.json").members) == 2
    # a report shows where the statistics would come from while there are none
    assert "pearl teacher stats" in "\n".join(ensemble_section(str(moved / "ensemble.json")))


@pytest.mark.parametrize(
    ("odd", "message"),
    [
        (dict(classes=5), "5 classes, not 10"),
        (dict(size=64), "64 px input, not 32 px"),
        (dict(mean=(0.5, 0.5, 0.5)), "input normalisation"),
        (dict(names=tuple(reversed(CIFAR10_CLASSES))), "class names"),
    ],
    ids=["classes", "input-size", "normalisation", "class-names"],
)
def test_members_that_disagree_are_named(tmp_path, odd, message):
    good = _checkpoint(tmp_path / "good.pt")
    bad = _checkpoint(tmp_path / "odd.pt", **odd)
    with pytest.raises(TeacherError, match=message) as error:
        write_ensemble(tmp_path / "ensemble.json", [good, bad])
    assert "odd.pt" in str(error.value) and "same data" in str(error.value)
    assert not (tmp_path / "ensemble.json").exists()


def test_replaced_missing_or_foreign_members_are_errors(tmp_path):
    members = [_checkpoint(tmp_path / f"m{seed}.pt", seed=seed) for seed in (0, 1)]
    spec = tmp_path / "ensemble.json"
    write_ensemble(spec, members)
    _checkpoint(members[1], mean=(0.5, 0.5, 0.5))  # retrained on other data afterwards
    with pytest.raises(TeacherError, match="m1.pt has input normalisation .* replaced"):
        load_teacher(str(spec), num_classes=10, input_size=32)
    members[1].unlink()
    with pytest.raises(TeacherError, match=r"member 'm1.pt' .* does not exist.*--resume"):
        load_teacher(str(spec), num_classes=10, input_size=32)
    (tmp_path / "other.json").write_text('{"members": ["m0.pt"]}')
    with pytest.raises(TeacherError, match="not a Pearl ensemble spec"):
        load_teacher(str(tmp_path / "other.json"), num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="no such ensemble spec file.*--seeds.* -o DIR`"):
        load_teacher(str(tmp_path / "none.json"), num_classes=10, input_size=32)
    missing = tmp_path / "r20x3" / "ensemble.json"  # the command names the folder to write
    folder = re.escape(str(missing.parent))
    with pytest.raises(TeacherError, match=f"--model MODEL --seeds .* -o {folder}`"):
        load_teacher(str(missing), num_classes=10, input_size=32)
    # comma-separated members must agree on class names too
    reversed_names = _checkpoint(tmp_path / "r.pt", names=tuple(reversed(CIFAR10_CLASSES)))
    with pytest.raises(TeacherError, match="r.pt has class names"):
        load_teacher(f"{members[0]},{reversed_names}", num_classes=10, input_size=32)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0,0", "-o", "{tmp}/e"], "distinct seeds"),
        (["--seeds", "0,1", "-o", "{tmp}/e.pt"], "-o is a folder"),
        (["--seeds", "0,1", "--seed", "3", "-o", "{tmp}/e"], "either --seed"),
        (["--executor", "ray", "-o", "{tmp}/t.pt"], "add --seeds"),
        (["--seeds", "0,1", "--ray-address", "auto", "-o", "{tmp}/e"], "--executor ray"),
    ],
    ids=["repeated-seed", "file-output", "seed-and-seeds", "ray-without-seeds", "address-alone"],
)
def test_ensemble_command_errors(tmp_path, data_dir, extra, message):
    args = ["teacher", "train", "--model", "resnet20", "--epochs", "1"]
    args += ["--data", str(data_dir / "cifar10_small.npz")]
    args += [word.format(tmp=tmp_path) for word in extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# A real ensemble: killed, resumed, used as a teacher


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_ensemble_killed_mid_member_resumes_and_teaches(tmp_path, data_dir, cifar_small):
    small = str(data_dir / "cifar10_small.npz")
    common = ["--model", TINY, "--data", small, "--epochs", "2", "--train-images", "192"]
    common += ["--test-images", "128", "--batch-size", "64", "--threads", "1", "--quiet"]
    folder = tmp_path / "ensemble"
    victim = pearl_process(["teacher", "train", *common, "--seeds", "0,1", "-o", str(folder)])
    # member 0 has finished; member 1 is killed after its first epoch
    metrics = folder / "member-seed1.pt.run" / "metrics.json"
    kill_once_exists(victim, metrics)
    assert (folder / "member-seed0.pt").is_file()
    assert json.loads(metrics.read_text())["epochs_done"] == 1
    assert not (folder / "ensemble.json").exists()

    runner = CliRunner()
    args = ["teacher", "train", *common, "--seeds", "0,1", "-o", str(folder)]
    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "pass --resume" in again.output
    resumed = runner.invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "oracle (any member right)" in resumed.output
    other = [*args, "--resume", "--epochs", "3"]  # a finished member is not silently kept
    refused = runner.invoke(cli, other)
    assert refused.exit_code == 1 and "finished with different settings" in refused.output
    assert "epochs: 2 then, 3 now" in refused.output

    # member 1 equals the same teacher trained alone, uninterrupted, with --seed 1
    alone = runner.invoke(
        cli, ["teacher", "train", *common, "--seed", "1", "-o", str(tmp_path / "t1.pt")]
    )
    assert alone.exit_code == 0, alone.output
    resumed_state, reference = _state(folder / "member-seed1.pt"), _state(tmp_path / "t1.pt")
    assert all(torch.equal(resumed_state[k], reference[k]) for k in reference)

    # the written statistics are those of the members' logits on the same test images
    spec = folder / "ensemble.json"
    stats = json.loads((folder / "ensemble.stats.json").read_text())
    test = cifar_small[1].take(np.arange(128))
    logits = member_logits(str(spec), test, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    expected = ensemble_statistics(logits, test.labels)
    assert {k: stats[k] for k in expected} == expected
    assert stats["oracle_top1"] >= max(stats["member_top1"])
    assert abs(sum(stats["correct_members_share"]) - 1) < 1e-9
    assert "oracle (any member right)" in (folder / "ensemble.stats.md").read_text()
    assert "oracle (any member right)" in "\n".join(ensemble_section(str(spec)))
    on_train = ["teacher", "stats", str(spec), "--data", small, "--split", "train"]
    result = runner.invoke(cli, [*on_train, "--images", "64"])
    assert result.exit_code == 0 and "oracle (any member right)" in result.output, result.output
    assert json.loads((folder / "ensemble.train.stats.json").read_text())["images"] == 64

    # the spec file is a teacher of pearl train, for oracle KD and for KD
    student = ["--data", small, "--epochs", "1", "--train-images", "128", "--test-images", "64"]
    student += ["--batch-size", "64", "--threads", "1", "--quiet", "--teacher", str(spec)]
    for loss in ("od", "kd"):
        out = tmp_path / f"student-{loss}"
        result = runner.invoke(cli, ["train", TINY, "--loss", loss, *student, "-o", str(out)])
        assert result.exit_code == 0, result.output
        trained = json.loads((out / "metrics.json").read_text())
        assert trained["finished"] and trained["teacher"]["spec"] == str(spec)

    # the report of a run whose teacher is the ensemble shows its statistics
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (tmp_path / "student-od").rename(run / "train" / "baseline-tiny-od")
    (run / "config.toml").write_text(
        f'[data]\npath = "{small}"\n\n[teacher]\nspec = "{spec}"\n\n[proxy]\nloss = "od"\n'
    )
    assert runner.invoke(cli, ["report", str(run)]).exit_code == 0
    report = (run / "report.md").read_text()
    assert "## Ensemble teacher `ensemble.json`" in report and "oracle (any member" in report


@pytest.mark.slow
def test_members_train_in_parallel_on_ray_like_in_process(tmp_path, data_dir):
    pytest.importorskip("ray")
    common = ["teacher", "train", "--model", TINY, "--data", str(data_dir / "cifar10_small.npz")]
    common += ["--epochs", "1", "--train-images", "128", "--test-images", "64"]
    common += ["--batch-size", "64", "--threads", "1", "--quiet"]
    runner = CliRunner()
    on_ray = runner.invoke(
        cli, [*common, "--seeds", "0,1", "--executor", "ray", "-o", str(tmp_path / "r")]
    )
    assert on_ray.exit_code == 0, on_ray.output
    assert "members on Ray" in on_ray.output and "ensemble of 2" in on_ray.output
    assert len(read_ensemble(tmp_path / "r" / "ensemble.json").members) == 2
    here = runner.invoke(cli, [*common, "--seeds", "1", "-o", str(tmp_path / "p")])
    assert here.exit_code == 0, here.output
    ray_state, local = (
        _state(tmp_path / "r" / "member-seed1.pt"),
        _state(tmp_path / "p" / "member-seed1.pt"),
    )
    assert all(torch.equal(ray_state[k], local[k]) for k in local)
