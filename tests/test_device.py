"""Where training runs (`pipeline.device`, [compute], --device): resolving a device spec, clear
errors for a device this machine lacks, and CPU results that stay bit-identical to Pearl before
devices existed.  Every device path runs here on the CPU (the device is a parameter, and the
mixed-precision branches run under CPU autocast); the CUDA-only kernel settings are checked on a
GPU by bench/gpu_check.py."""

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models.arch import Arch
from models.teacher_loading import load_checkpoint
from models.teachers import cifar_resnet
from pipeline.batches import BatchLoader
from pipeline.cli import cli
from pipeline.config import ComputeConfig, ProxyConfig
from pipeline.device import DeviceError, Placement, placement, resolve_device
from pipeline.executor import ProxyTask, TrainJob
from pipeline.proxy import CachedTeacher, EarlyStop, OnlineTeacher, train_candidate
from pipeline.teacher_cache import cache_key
from pipeline.training import TrainSettings, train

TINY_TEXT = (
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_re|ds_k5_s2_se0_pool_c24_n1_re"
    "|conv_k3_s1_se0_id_c24_n1_re|head_c64_re"
)
TINY = Arch.decode(TINY_TEXT)
REPO = Path(__file__).resolve().parents[1]
CPU = ComputeConfig(device="cpu")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# What the code before devices existed (commit bf87f83) computed for the runs below, with one
# torch thread, torch 2.14.1 on x86-64: floats exactly, tensors as sha256 prefixes.
GOLDEN_PLATFORM = ("2.14.1", "x86_64")
GOLDEN = {
    "train_batches": "027967b6af0ecc7d",
    "eval_batches": "41e5cd3fd0706dc6",
    "teacher_logits": "2fa8317a8a0a72d8",
    "proxy_ce": [0.105, [2.3036914825439454, 2.240221691131592]],
    "proxy_kd": [0.11, [1.2657465100288392, 0.8793535828590393], 0.11],
    "train_curve": [
        {
            "epoch": 1,
            "lr_end": 0.1,
            "train_loss": 1.2998871803283691,
            "train_top1": 0.13125,
            "test_top1": 0.11,
            "test_top5": 0.485,
            "test_loss": 2.5766220092773438,
        }
    ],
    "train_teacher": {"top1": 0.095, "top5": 0.495, "loss": 13.11488067626953},
    "train_weights": "d909a2e26c89ce40",
}


@pytest.fixture(scope="module")
def small(cifar_small):
    train_arrays, test_arrays = cifar_small
    return train_arrays.take(np.arange(320)), test_arrays.take(np.arange(200))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU float sums depend on the thread count
    yield
    torch.set_num_threads(threads)


def _digest(tensors) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _teacher():
    torch.manual_seed(0)
    return cifar_resnet("resnet20").eval()


def _proxy_runs(small, loader_device=None, **compute):
    """The proxy results the golden values pin: CE, and KD from cached logits with an early
    stop check, both 2 epochs, seed 5."""
    mini_train, mini_val = small
    loader = BatchLoader(mini_train, 64, train=True, seed=5, device=loader_device)
    cached = CachedTeacher.compute(_teacher(), loader, 2)
    ce_settings = ProxyConfig(epochs=2, batch_size=64, loss="ce")
    ce = train_candidate(TINY, mini_train, mini_val, ce_settings, seed=5, **compute)
    kd_settings = ProxyConfig(epochs=2, batch_size=64)
    kd = train_candidate(
        TINY, mini_train, mini_val, kd_settings, cached, EarlyStop(1, 0.0), seed=5, **compute
    )
    return cached, ce, kd


def _train_run(small, run_dir, **compute):
    mini_train, mini_val = small
    settings = TrainSettings(
        model=TINY_TEXT, epochs=1, batch_size=64, eval_batch_size=128, seed=3, loss="kd"
    )
    metrics = train(
        settings,
        mini_train,
        mini_val,
        run_dir,
        teacher=_teacher(),
        progress=False,
        threads=1,
        **compute,
    )
    model, _ = load_checkpoint(run_dir / "model.pt")
    return metrics, _digest(model.state_dict().values())


def _timeless(curve):
    return [
        {k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k} for row in curve
    ]


# --------------------------------------------------------------------------------------------
# Resolving a device


def test_cpu_and_auto_resolve_and_leave_global_settings_alone():
    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    assert resolve_device("cpu") == torch.device("cpu")
    place = placement(ComputeConfig(device="cpu", amp=True, deterministic=True))
    assert place == Placement(torch.device("cpu"))  # no AMP on the CPU, whatever amp says
    assert place.describe() == {"device": "cpu", "name": "cpu", "amp": None, "deterministic": False}
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.backends.cudnn.benchmark == benchmark
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert placement().device == torch.device("cpu")  # auto: cuda, then mps, then cpu


@NO_CUDA
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_asked_without_cuda_names_the_spec_what_is_present_and_the_fix(spec):
    with pytest.raises(DeviceError) as caught:
        resolve_device(spec)
    message = str(caught.value)
    assert f"'{spec}'" in message and "no CUDA GPU" in message
    assert "present: cpu" in message and "--device cpu" in message
    # not a ValueError / RuntimeError: an executor must not store it as a failed candidate
    assert not isinstance(caught.value, (ValueError, RuntimeError))


def test_a_gpu_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")
    with pytest.raises(
        DeviceError,
        match=r"'cuda:3': this machine has 1 CUDA device; "
        r"present: cpu, cuda:0 \(Test GPU\)",
    ):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_asked_without_an_apple_gpu():
    with pytest.raises(DeviceError, match="'mps': this machine has no Apple GPU"):
        resolve_device("mps")


@NO_CUDA
def test_the_executor_raises_a_missing_device_instead_of_storing_a_failed_candidate(small):
    task = ProxyTask(*small, ProxyConfig(epochs=1, loss="ce"), compute=ComputeConfig("cuda"))
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        task.score(TrainJob(0, 0, TINY_TEXT))


@NO_CUDA
def test_training_checks_the_device_before_touching_the_run_folder(small, tmp_path):
    settings = TrainSettings(model=TINY_TEXT, epochs=1, batch_size=64, loss="ce")
    with pytest.raises(DeviceError, match="'cuda:1'"):
        train(settings, *small, tmp_path / "run", compute=ComputeConfig("cuda:1"))
    assert not (tmp_path / "run").exists()


@NO_CUDA
@pytest.mark.parametrize(
    "command",
    [
        ["train", TINY_TEXT, "--loss", "ce", "--epochs", "1", "-o", "{out}", "--data", "{data}"],
        [
            "teacher",
            "train",
            "--model",
            "resnet20",
            "--epochs",
            "1",
            "-o",
            "{out}/t.pt",
            "--data",
            "{data}",
        ],
        ["search", "--config", "{repo}/configs/quickstart.toml", "--out", "{out}"],
        ["run", "--config", "{repo}/configs/quickstart.toml", "--out", "{out}"],
    ],
    ids=["train", "teacher-train", "search", "run"],
)
def test_every_training_command_refuses_a_missing_device_before_it_starts(
    command, tmp_path, data_dir
):
    out = tmp_path / "out"
    data = data_dir / "cifar10_small.npz"
    args = [a.format(out=out, data=data, repo=REPO) for a in command]
    result = CliRunner().invoke(cli, [*args, "--device", "cuda:2"])
    assert result.exit_code == 1, result.output
    assert "'cuda:2'" in result.output and "--device cpu" in result.output
    assert not out.exists()
    result = CliRunner().invoke(cli, [*args, "--device", "gpu"])
    assert result.exit_code == 2 and "is not one of auto, cpu, cuda, cuda:N, mps" in result.output


def test_teacher_logits_from_a_gpu_get_their_own_cache_key(small, tmp_path):
    mini_train, _ = small
    key = dict(batch_size=64, seed=5, epochs=2, members=False)
    spec = tmp_path / "teacher.pt"
    spec.write_bytes(b"the key hashes the file's bytes")
    spec = str(spec)
    cpu = cache_key(spec, mini_train, **key)
    assert cache_key(spec, mini_train, **key, device_type="cpu") == cpu
    assert cache_key(spec, mini_train, **key, device_type="cuda") != cpu


# --------------------------------------------------------------------------------------------
# CPU results are bit-identical to before devices, whichever way the CPU is asked for


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_batches_on_the_cpu_are_those_of_before(small, device):
    mini_train, mini_val = small
    loader = BatchLoader(mini_train, 64, train=True, seed=7, device=device)
    batches = [t for _ in range(2) for batch in loader for t in batch]
    assert _digest(batches) == GOLDEN["train_batches"]
    evaluation = [t for b in BatchLoader(mini_val, 64, train=False, device=device) for t in b]
    assert _digest(evaluation) == GOLDEN["eval_batches"]


def _golden_platform_or_skip():
    here = (torch.__version__.split("+")[0], platform.machine())
    if here != GOLDEN_PLATFORM:
        pytest.skip(
            f"golden values were computed with torch {GOLDEN_PLATFORM[0]} on "
            f"{GOLDEN_PLATFORM[1]}, this is torch {here[0]} on {here[1]} (CPU float results "
            "may differ in the last bit across versions); the default-vs-cpu checks still ran"
        )


def test_proxy_training_on_the_cpu_is_bit_identical(small, one_thread):
    default = _proxy_runs(small)
    on_cpu = _proxy_runs(small, "cpu", compute=CPU)
    for a, b in zip(default[1:], on_cpu[1:], strict=True):
        assert a.accuracy == b.accuracy and a.train_loss_per_epoch == b.train_loss_per_epoch
        assert (b.device, b.amp) == ("cpu", None)
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        return  # the default is a GPU there: only the explicit CPU run can match the golden
    _golden_platform_or_skip()
    cached, ce, kd = on_cpu
    assert _digest(cached.per_epoch) == GOLDEN["teacher_logits"]
    assert [ce.accuracy, list(ce.train_loss_per_epoch)] == GOLDEN["proxy_ce"]
    assert [kd.accuracy, list(kd.train_loss_per_epoch), kd.early_accuracy] == GOLDEN["proxy_kd"]


def test_full_training_on_the_cpu_is_bit_identical(small, tmp_path, one_thread):
    metrics, weights = _train_run(small, tmp_path / "cpu", compute=CPU)
    default, default_weights = _train_run(small, tmp_path / "default")
    if default["device"]["device"] == "cpu":
        assert _timeless(default["curve"]) == _timeless(metrics["curve"])
        assert default_weights == weights
    assert metrics["device"] == placement(CPU).describe()
    on_disk = json.loads((tmp_path / "cpu" / "metrics.json").read_text())
    assert on_disk["device"] == {
        "device": "cpu",
        "name": "cpu",
        "amp": None,
        "deterministic": False,
    }
    _golden_platform_or_skip()
    assert _timeless(metrics["curve"]) == GOLDEN["train_curve"]
    assert {k: v for k, v in metrics["teacher"].items() if k != "spec"} == GOLDEN["train_teacher"]
    assert weights == GOLDEN["train_weights"]


# --------------------------------------------------------------------------------------------
# The mixed-precision branches, run under CPU autocast


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_paths_train_and_record_their_dtype(small, tmp_path, amp_dtype):
    amp = Placement(torch.device("cpu"), amp_dtype)  # forced: `placement` never picks it on a CPU
    assert placement(amp) is amp
    assert (amp.grad_scaler() is not None) == (amp_dtype == torch.float16)
    mini_train, mini_val = small
    settings = ProxyConfig(epochs=1, batch_size=64)
    fp32 = train_candidate(TINY, mini_train, mini_val, settings, OnlineTeacher(_teacher()))
    mixed = train_candidate(
        TINY, mini_train, mini_val, settings, OnlineTeacher(_teacher()), compute=amp
    )
    assert mixed.amp == str(amp_dtype).removeprefix("torch.") and mixed.device == "cpu"
    assert all(np.isfinite(mixed.train_loss_per_epoch)) and 0 <= mixed.accuracy <= 1
    assert mixed.train_loss_per_epoch != fp32.train_loss_per_epoch  # autocast did run
    metrics, _ = _train_run(small, tmp_path / "amp", compute=amp)
    assert metrics["device"]["amp"] == str(amp_dtype).removeprefix("torch.")
    assert np.isfinite(metrics["curve"][0]["train_loss"]) and metrics["finished"]


# --------------------------------------------------------------------------------------------
# bench/gpu_check.py, as far as a machine without CUDA can check it


GPU_CHECK = REPO / "bench" / "gpu_check.py"
# Runs gpu_check.py --help in-process, then lists every module it imported.
LIST_IMPORTS = f"""
import runpy, sys
sys.argv = ["gpu_check.py", "--help"]
try:
    runpy.run_path({str(GPU_CHECK)!r}, run_name="__main__")
except SystemExit:
    pass
print(" ".join(sys.modules))
"""


def test_gpu_check_imports_only_training_code_and_says_when_there_is_no_gpu():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listed = subprocess.run(
        [sys.executable, "-c", LIST_IMPORTS], capture_output=True, text=True, env=env, check=True
    )
    assert "usage: gpu_check.py" in listed.stdout
    modules = {name.split(".")[0] for name in listed.stdout.split()}
    assert {"torch", "numpy", "pipeline"} <= modules
    assert not modules & {"click", "rich", "ray", "onnx", "onnxruntime", "ai_edge_litert"}
    if torch.cuda.is_available():
        return
    result = subprocess.run(
        [sys.executable, str(GPU_CHECK)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 3, result.stderr
    assert "no CUDA device on this machine" in result.stderr and "Traceback" not in result.stderr
