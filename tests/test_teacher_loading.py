"""Teachers from disk: Pearl checkpoints, torchvision models with local weights, ensembles, the
shipped CIFAR-10 teacher."""

import numpy as np
import pytest
import torch

from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from models.teacher_loading import (
    CHECKPOINTS_DIR,
    Renormalize,
    TeacherError,
    build_model,
    describe_teacher,
    load_checkpoint,
    load_teacher,
    save_checkpoint,
)
from models.teachers import Ensemble
from pipeline.batches import BatchLoader
from pipeline.training import evaluate

TINY = (
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_re|ds_k5_s2_se0_pool_c24_n1_re"
    "|conv_k3_s1_se0_id_c24_n1_re|head_c64_re"
)
SHIPPED = CHECKPOINTS_DIR / "resnet20_cifar10.pt"


def _checkpoint(path, name="resnet20", seed=0, mean=CIFAR10_MEAN, std=CIFAR10_STD, classes=10):
    torch.manual_seed(seed)
    model = build_model(name, num_classes=classes, input_size=32).eval()
    save_checkpoint(
        path,
        model,
        model_name=name,
        num_classes=classes,
        input_size=32,
        mean=mean,
        std=std,
        test_top1=0.5,
        command="pearl teacher train ...",
    )
    return model


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path):
    original = _checkpoint(tmp_path / "a.pt", name=TINY)
    loaded, payload = load_checkpoint(tmp_path / "a.pt")
    assert not loaded.training
    assert payload["model"] == TINY and payload["num_classes"] == 10
    assert payload["test_top1"] == 0.5 and payload["command"].startswith("pearl teacher")
    for (name, a), (_, b) in zip(
        original.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(original, x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp")), "the temporary file of the atomic write is left"


def test_load_teacher_checks_classes_size_and_files(tmp_path):
    _checkpoint(tmp_path / "t.pt")
    teacher = load_teacher(str(tmp_path / "t.pt"), num_classes=10, input_size=32)
    assert not teacher.training and teacher(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(TeacherError, match="predicts 10 classes but the data has 100"):
        load_teacher(str(tmp_path / "t.pt"), num_classes=100, input_size=32)
    with pytest.raises(TeacherError, match="trained on 32 px images but the data is 64 px"):
        load_teacher(str(tmp_path / "t.pt"), num_classes=10, input_size=64)
    with pytest.raises(TeacherError, match="no such checkpoint file"):
        load_teacher(str(tmp_path / "missing.pt"), num_classes=10, input_size=32)
    torch.save(build_model("resnet20", num_classes=10, input_size=32).state_dict(), tmp_path / "b")
    with pytest.raises(TeacherError, match="not a Pearl checkpoint.*torchvision:"):
        load_teacher(str(tmp_path / "b"), num_classes=10, input_size=32)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(TeacherError, match="not a readable PyTorch checkpoint"):
        load_teacher(str(tmp_path / "junk.pt"), num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="no shipped checkpoint 'nope'"):
        load_teacher("builtin:nope", num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="empty teacher spec"):
        load_teacher(f"{tmp_path / 't.pt'},", num_classes=10, input_size=32)


def test_ensemble_spec_averages_member_logits(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", seed=1)
    b = _checkpoint(tmp_path / "b.pt", name=TINY, seed=2)
    teacher = load_teacher(
        f"{tmp_path / 'a.pt'}, {tmp_path / 'b.pt'}", num_classes=10, input_size=32
    )
    assert isinstance(teacher, Ensemble) and len(teacher.members) == 2
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_outputs(teacher, x), (_outputs(a, x) + _outputs(b, x)) / 2)
    description = describe_teacher(f"{tmp_path / 'a.pt'},{tmp_path / 'b.pt'}")
    assert description.startswith("ensemble of 2") and "test top-1 50.00%" in description


def test_teacher_with_other_input_statistics_is_renormalised(tmp_path):
    own_mean, own_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = _checkpoint(tmp_path / "t.pt", mean=own_mean, std=own_std)
    teacher = load_teacher(
        str(tmp_path / "t.pt"), num_classes=10, input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    assert isinstance(teacher, Renormalize)
    pixels = torch.rand(2, 3, 32, 32)

    def normalised(mean, std):
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    torch.testing.assert_close(
        _outputs(teacher, normalised(CIFAR10_MEAN, CIFAR10_STD)),
        _outputs(model, normalised(own_mean, own_std)),
        rtol=1e-4,
        atol=1e-4,
    )
    same = load_teacher(
        str(tmp_path / "t.pt"), num_classes=10, input_size=32, mean=own_mean, std=own_std
    )
    assert not isinstance(same, Renormalize)


def test_torchvision_teacher_loads_local_weights_and_rejects_bad_specs(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    teacher = load_teacher(
        f"torchvision:mobilenet_v3_small={tmp_path / 'w.pth'}", num_classes=10, input_size=32
    )
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_outputs(teacher, x), _outputs(reference, x), rtol=0, atol=0)
    with pytest.raises(TeacherError, match="predict 10 classes but the data has 100"):
        load_teacher(
            f"torchvision:mobilenet_v3_small={tmp_path / 'w.pth'}", num_classes=100, input_size=32
        )
    with pytest.raises(TeacherError, match="unknown torchvision .* 'resnet7'.*resnet18"):
        load_teacher(f"torchvision:resnet7={tmp_path / 'w.pth'}", num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="no such weights file"):
        load_teacher("torchvision:resnet18=/nonexistent.pth", num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="NAME=WEIGHTS_FILE"):
        load_teacher("torchvision:resnet18", num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="do not fit torchvision resnet18"):
        load_teacher(f"torchvision:resnet18={tmp_path / 'w.pth'}", num_classes=10, input_size=32)


@pytest.mark.slow
def test_shipped_teacher_matches_its_recorded_accuracy(cifar_small):
    if not SHIPPED.is_file():
        pytest.fail(f"{SHIPPED} is missing: the package must ship the CIFAR-10 teacher")
    _, payload = load_checkpoint(SHIPPED)
    assert payload["model"] == "resnet20" and payload["command"].startswith("pearl teacher train")
    assert SHIPPED.stat().st_size < 3_000_000
    teacher = load_teacher("builtin:resnet20_cifar10", num_classes=10, input_size=32)
    _, test = cifar_small
    subset = test.take(np.arange(500))
    loader = BatchLoader(subset, 250, train=False, mean=payload["mean"], std=payload["std"])
    top1 = evaluate(teacher, loader, 10)["top1"]
    # 500 of the 10k test images the recorded accuracy was measured on: binomial sd <= 2.3%.
    assert abs(top1 - payload["test_top1"]) < 0.08, (top1, payload["test_top1"])
    assert "resnet20" in describe_teacher("builtin:resnet20_cifar10")
