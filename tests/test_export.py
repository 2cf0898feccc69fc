"""Export: TFLite (fp32/fp16/int8) and ONNX files checked against PyTorch on real CIFAR images,
the XNNPACK delegation report, the bundle and its metadata, the warm worker and the arch cache.

Conversion is slow (seconds per network), so the fast tests share two warm `ExportWorker`s
(one per core) for the 20 random architectures and the 224 px baselines; everything else that
converts uses tiny networks.  Exhaustive sweeps and the trained int8 check are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import FULL_BUNDLE, TINY, bundle_files
from torch import nn

from models.arch import Arch
from models.baselines import baseline
from models.builder import build
from models.export import (
    ExportError,
    ExportOptions,
    ExportWarning,
    ExportWorker,
    ParityError,
    export_bundle,
    parse_formats,
    predict,
    read_metadata,
    record_measurement,
)
from models.export.bundle import METADATA
from models.export.parity import compare
from models.export.prepare import export_module, preprocess, torch_logits
from models.space import get_space

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
HARD_SWISH = (
    "in32_cls10|stem_k3_s1_c16_hs|mb3_k3_s2_se25_id_c24_n2_hs|ds_k3_s1_se0_pool_c32_n1_hs|"
    "head_c64_hs"
)
RANDOM_ARCHS = 20


def realistic(arch: Arch, seed: int) -> nn.Module:
    """A network for `arch` (seeded) with trained-looking statistics: BN running stats and
    affine parameters away from (0, 1), classifier scaled so logits are O(1).  Without this,
    BN folding would be tested on identity BNs and the logits would be ~1e-8."""
    torch.manual_seed(seed)
    model = build(arch)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
        model.classifier[-1].weight.mul_(100.0)
    return model.eval()


# -- pure parts ----------------------------------------------------------------------------------


def test_parse_formats_orders_and_rejects_unknown_names():
    assert parse_formats("onnx, tflite") == ("tflite", "onnx")
    assert parse_formats(["tflite-int8", "tflite-int8"]) == ("tflite-int8",)
    with pytest.raises(ExportError, match="unknown format 'tflite16'.*tflite-fp16"):
        parse_formats("tflite,tflite16")
    with pytest.raises(ExportError, match="no format"):
        parse_formats(" , ")


def test_preprocess_normalises_resizes_and_rejects_bad_arrays():
    images = np.full((2, 32, 32, 3), 255, np.uint8)
    x = preprocess(images, 32, MEAN, STD)
    assert x.dtype == np.float32 and x.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(x[0, 0, 0], (1 - np.float32(MEAN)) / np.float32(STD), rtol=1e-6)
    assert preprocess(images, 64, MEAN, STD).shape == (2, 64, 64, 3)
    with pytest.raises(ExportError, match="NHWC"):
        preprocess(np.zeros((2, 3, 32, 32), np.uint8), 32, MEAN, STD)
    with pytest.raises(ExportError, match="3 means"):
        preprocess(images, 32, None, None)


def test_compare_judges_fp32_by_relative_error_and_int8_by_agreement():
    reference = np.array([[1.0, 2.0, -4.0], [0.5, 0.1, 0.2]])
    good = compare(reference, reference + 1e-5, "tflite")
    assert good.passed and good.max_rel == pytest.approx(1e-5 / 4)
    bad = compare(reference, reference + 1e-3, "onnx")
    assert not bad.passed and bad.top1_agreement == 1.0
    flipped = reference[:, ::-1]
    assert not compare(reference, flipped, "tflite-int8").passed
    untrained = compare(reference, flipped, "tflite-int8", trained=False)
    assert untrained.passed and "not judged" in untrained.note
    assert not compare(reference, reference[:1], "tflite").passed  # shape mismatch
    assert compare(reference, reference * np.nan, "tflite").note == "non-finite outputs"


def test_export_module_folds_batch_norm_exactly():
    arch = Arch.decode(TINY)
    model = realistic(arch, seed=1)
    module = export_module(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), rtol=1e-5, atol=1e-5)


# -- real conversions in two warm workers -------------------------------------------------------


@pytest.fixture(scope="module")
def workers():
    pool = [ExportWorker(num_threads=1) for _ in range(2)]
    with ThreadPoolExecutor(len(pool)) as executor:
        list(executor.map(lambda worker: worker.start(), pool))
    yield pool
    for worker in pool:
        worker.close()


def test_random_archs_and_224_baselines_match_pytorch(workers, cifar_small, tmp_path):
    """fp32 TFLite and ONNX agree with PyTorch to 1e-4 (relative to the logits' range) on real
    CIFAR test images, for 20 random archs of the CIFAR space and two baselines at 224 px; no
    TFLite graph has a TRANSPOSE, and every op is delegated to XNNPACK (one partition)."""
    _, test = cifar_small
    rng = random.Random(2024)
    space = get_space("mnas-cifar")
    archs = [baseline("mobilenet_v2", 224, 1000), baseline("mnasnet_a1", 224, 1000)]
    archs += [space.sample(rng) for _ in range(RANDOM_ARCHS)]
    options = ExportOptions(formats=("tflite", "onnx"), num_threads=1)

    def export(index: int) -> dict:
        arch = archs[index]
        state = realistic(arch, seed=index).state_dict()
        return workers[index % 2].export_bundle(
            arch,
            tmp_path / f"m{index}",
            state_dict=state,
            options=options,
            parity_images=test.images[:24],
            mean=MEAN,
            std=STD,
        )

    def serve(first: int) -> list[dict]:
        return [export(i) for i in range(first, len(archs), len(workers))]

    with ThreadPoolExecutor(len(workers)) as executor:
        results = [m for batch in executor.map(serve, range(len(workers))) for m in batch]
    assert len(results) == len(archs)
    for meta in results:
        arch = Arch.decode(meta["arch"])
        for fmt in ("tflite", "onnx"):
            parity = meta["files"][fmt]["parity"]
            assert parity["max_rel"] <= 1e-4, (meta["arch"], fmt, parity)
            assert parity["top1_agreement"] == 1.0, (meta["arch"], fmt, parity)
        delegation = meta["files"]["tflite"]["delegation"]
        assert delegation["transposes"] == 0, meta["arch"]
        assert not any(op.startswith("TRANSPOSE") for op in delegation["ops"])
        refused = set(delegation["not_delegated"])
        assert refused == set() and delegation["partitions"] == 1, (meta["arch"], refused)
        assert meta["files"]["tflite"]["input"]["shape"] == [1, arch.input_size, arch.input_size, 3]


def test_int8_hard_swish_is_reported_as_not_delegated_and_cached(workers, tmp_path):
    arch = Arch.decode(HARD_SWISH)
    path = workers[0].latency_artifact(arch, "tflite-int8", tmp_path)
    meta = read_metadata(path.parent)
    delegation = meta["files"]["tflite-int8"]["delegation"]
    assert delegation["not_delegated"].get("HARD_SWISH[int8]") == 7
    assert delegation["partitions"] > 1 and not delegation["fully_delegated"]
    assert meta["weights"]["trained"] is False
    assert meta["files"]["tflite-int8"]["parity"]["note"].startswith("untrained")
    # the fp32 file was cached on the way and is fully delegated (hard-swish is fine in fp32)
    fp32 = read_metadata(path.parent.parent / "tflite")["files"]["tflite"]["delegation"]
    assert fp32["fully_delegated"] and fp32["partitions"] == 1
    # a second request is a cache hit: same file, not rewritten
    mtime = path.stat().st_mtime_ns
    assert workers[1].latency_artifact(arch, "tflite-int8", tmp_path) == path
    assert path.stat().st_mtime_ns == mtime


# -- the bundle, in process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle(cifar_small, tmp_path_factory):
    """A tiny network with realistic statistics exported to every format."""
    train, test = cifar_small
    arch = Arch.decode(TINY)
    model = realistic(arch, seed=3)
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    meta = export_bundle(
        arch,
        out,
        model=model,
        parity_images=test.images[:32],
        calibration_images=train.images[:200],
        mean=MEAN,
        std=STD,
        class_names=train.class_names,
        weights={"source": "test", "trained": True},
        accuracy_data=(test.images[:200], test.labels[:200], "cifar10_small test[:200]"),
    )
    return arch, model, out, meta


def test_bundle_files_and_metadata(tiny_bundle, cifar_small):
    arch, _, out, meta = tiny_bundle
    assert bundle_files(out) == FULL_BUNDLE
    assert (out / "labels.txt").read_text().split("\n")[:2] == ["airplane", "automobile"]
    assert json.loads((out / METADATA).read_text()) == meta
    assert meta["arch"] == arch.encode() and meta["arch_key"] == arch.key()
    assert meta["input"]["mean"] == list(MEAN) and meta["num_classes"] == 10
    assert meta["macs"] > 0 and meta["params"] > 0 and meta["latency"] == {}
    assert set(meta["tools"]) >= {"torch", "litert-torch", "ai-edge-quantizer", "onnxruntime"}
    assert meta["calibration"]["images"] == 200
    for entry in meta["files"].values():
        data = (out / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    files = meta["files"]
    assert files["tflite"]["parity"]["max_rel"] <= 1e-4
    assert files["tflite-fp16"]["parity"]["max_rel"] <= 1e-2
    # a tiny net: the flatbuffer's fixed overhead hides most of the 2x / 4x weight savings
    assert files["tflite-int8"]["bytes"] < files["tflite-fp16"]["bytes"] < files["tflite"]["bytes"]
    assert files["onnx"]["input"]["layout"] == "NCHW" and files["onnx"]["ops"]
    assert files["tflite-int8"]["delegation"]["ops"].get("CONV_2D[int8]", 0) > 0
    assert set(meta["accuracy"]["top1"]) == {"pytorch", *files}


def test_consumer_runs_every_file_from_metadata_alone(tiny_bundle, cifar_small):
    _, model, out, meta = tiny_bundle
    _, test = cifar_small
    images = test.images[:16]
    reference = torch_logits(model, preprocess(images, 32, MEAN, STD))
    for fmt in ("tflite", "onnx"):
        np.testing.assert_allclose(predict(out, images, fmt), reference, rtol=0, atol=1e-4)
    fp16 = predict(out, images, "tflite-fp16")
    assert np.abs(fp16 - reference).max() <= 1e-2 * np.abs(reference).max()
    assert np.mean(predict(out, images, "tflite-int8").argmax(1) == reference.argmax(1)) >= 0.8


@pytest.mark.parametrize(
    ("fmt", "field", "value"),
    [
        ("tflite", "input.mean", None),
        ("tflite", "files.tflite.sha256", None),
        ("tflite", "files.tflite.input", None),
        ("tflite", "input.height", "thirty-two"),
        ("onnx", "files.onnx.input.name", None),
        ("tflite", "files", None),
    ],
)
def test_consumer_names_the_file_and_field_of_malformed_metadata(
    tiny_bundle, cifar_small, tmp_path, fmt, field, value
):
    import shutil

    _, _, out, meta = tiny_bundle
    bundle = tmp_path / "bundle"
    shutil.copytree(out, bundle)
    document = json.loads(json.dumps(meta))
    *parents, last = field.split(".")
    holder = document
    for part in parents:
        holder = holder[part]
    if value is None:
        del holder[last]  # a hand-edited or cut-down metadata.json
    else:
        holder[last] = value
    (bundle / METADATA).write_text(json.dumps(document))
    with pytest.raises(ExportError) as caught:
        predict(bundle, cifar_small[1].images[:2], fmt)
    assert str(bundle / METADATA) in str(caught.value) and f"field '{field}" in str(caught.value)


def test_int8_with_int8_io_runs_from_metadata(tiny_bundle, cifar_small, tmp_path):
    arch, model, _, _ = tiny_bundle
    train, test = cifar_small
    meta = export_bundle(
        arch,
        tmp_path / "int8io",
        model=model,
        options=ExportOptions(formats=("tflite-int8",), int8_io="int8"),
        parity_images=test.images[:32],
        calibration_images=train.images[:200],
        mean=MEAN,
        std=STD,
    )
    entry = meta["files"]["tflite-int8"]
    assert entry["input"]["dtype"] == "int8" and "quantization" in entry["input"]
    assert entry["output"]["dtype"] == "int8" and "quantization" in entry["output"]
    reference = torch_logits(model, preprocess(test.images[:16], 32, MEAN, STD))
    logits = predict(tmp_path / "int8io", test.images[:16], "tflite-int8")
    assert np.mean(logits.argmax(1) == reference.argmax(1)) >= 0.8


def test_widen_degenerate_ranges_only_touches_empty_ranges():
    from models.export.tflite import MIN_RANGE, widen_degenerate_ranges

    qsvs = {
        "dead": {"min": np.array(0.0), "max": np.array(0.0)},
        "live": {"min": np.array(-2.0), "max": np.array(3.0)},
        "channels": {"min": np.zeros(3), "max": np.array([0.0, 1.0, 1e-9])},
    }
    widened = widen_degenerate_ranges(qsvs)
    assert widened["dead"]["max"] == MIN_RANGE and widened["dead"]["min"] == 0.0
    assert widened["live"] == qsvs["live"]
    np.testing.assert_array_equal(widened["channels"]["max"], [MIN_RANGE, 1.0, MIN_RANGE])


def test_int8_with_a_dead_relu_runs_in_xnnpack(cifar_small, tmp_path):
    """An SE bottleneck whose ReLU is zero on every calibration image used to give its tensor
    a 1e-12 scale and a file XNNPACK refused ("failed to create XNNPACK runtime")."""
    train, test = cifar_small
    arch = Arch.decode(TINY)
    model = realistic(arch, seed=5)
    squeeze = next(m for m in model.modules() if m.__class__.__name__ == "SqueezeExcite")
    with torch.no_grad():
        squeeze.reduce.bias.fill_(-100.0)  # ReLU(reduce(x)) == 0 for every image
    meta = export_bundle(
        arch,
        tmp_path / "dead",
        model=model,
        options=ExportOptions(formats=("tflite-int8",)),
        parity_images=test.images[:32],
        calibration_images=train.images[:100],
        mean=MEAN,
        std=STD,
    )
    delegation = meta["files"]["tflite-int8"]["delegation"]
    assert delegation["fully_delegated"] and delegation["reference_kernels_error"] is None
    assert meta["files"]["tflite-int8"]["parity"]["top1_agreement"] >= 0.9


def test_record_measurement_updates_metadata(tiny_bundle):
    _, _, out, _ = tiny_bundle
    record_measurement(out, "latency", "pixel7/tflite/4threads", {"median_ms": 1.5})
    assert read_metadata(out)["latency"]["pixel7/tflite/4threads"] == {"median_ms": 1.5}
    with pytest.raises(ExportError, match="latency"):
        record_measurement(out, "speed", "x", 1)


# -- failures leave nothing behind ---------------------------------------------------------------


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_failed_parity_raises_and_writes_nothing(monkeypatch, tmp_path):
    from models.export import onnx_file

    real_run = onnx_file.run
    monkeypatch.setattr(onnx_file, "run", lambda *a, **k: real_run(*a, **k) * 1.01 + 0.5)
    arch = Arch.decode(TINY)
    with pytest.raises(ParityError, match="onnx disagrees with PyTorch.*max rel"):
        export_bundle(
            arch,
            tmp_path / "out",
            model=realistic(arch, 0),
            options=ExportOptions(formats=("onnx",)),
        )
    assert leftovers(tmp_path) == []


def test_crash_midway_writes_nothing_and_keeps_the_old_bundle(monkeypatch, tmp_path):
    from models.export import onnx_file

    arch = Arch.decode(TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old bundle")
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_bundle(arch, out, options=ExportOptions(formats=("onnx",)))

    def boom(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(onnx_file, "convert", boom)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_bundle(arch, out, options=ExportOptions(formats=("onnx",), overwrite=True))
    assert leftovers(tmp_path) == ["out"] and leftovers(out) == ["keep.txt"]


def test_unwritable_output_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    arch = Arch.decode(TINY)
    with pytest.raises(ExportError, match="cannot write the bundle under .*file"):
        export_bundle(arch, blocker / "out", options=ExportOptions(formats=("onnx",)))
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export_bundle(arch, blocker, options=ExportOptions(formats=("onnx",)))


def test_int8_without_calibration_images_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="calibration images"):
        export_bundle(
            Arch.decode(TINY), tmp_path / "out", options=ExportOptions(formats=("tflite-int8",))
        )
    assert leftovers(tmp_path) == []


def test_checkpoint_errors_name_the_problem(tmp_path):
    from models.export.weights import load_weights, read_checkpoint

    with pytest.raises(ExportError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(ExportError, match="not a readable PyTorch weights file"):
        read_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save(
        {"state_dict": build(baseline("mobilenet_v2_0.35", 32, 10)).state_dict(), "arch": "x"},
        other,
    )
    checkpoint = read_checkpoint(other)
    assert checkpoint.arch == "x"
    with pytest.raises(ExportError, match=r"shape mismatch.*stem\.0\.weight: checkpoint \(16"):
        load_weights(build(Arch.decode(TINY)), checkpoint.state_dict, str(other))


# -- slow: exhaustive sweeps, trained int8, worker crash ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 224])
def test_all_baselines_match_pytorch(workers, cifar_small, tmp_path, size):
    from models.baselines import BASELINES

    _, test = cifar_small
    names = sorted(BASELINES)

    def export(index: int) -> dict:
        arch = baseline(names[index], size, 10 if size == 32 else 1000)
        state = realistic(arch, seed=index).state_dict()
        return workers[index % 2].export_bundle(
            arch,
            tmp_path / names[index],
            state_dict=state,
            options=ExportOptions(formats=("tflite", "tflite-fp16", "onnx"), num_threads=1),
            parity_images=test.images[:16],
            mean=MEAN,
            std=STD,
        )

    with ThreadPoolExecutor(2) as executor:
        results = list(executor.map(export, range(len(names))))
    for meta in results:
        assert meta["files"]["tflite"]["parity"]["max_rel"] <= 1e-4
        assert meta["files"]["onnx"]["parity"]["max_rel"] <= 1e-4
        assert meta["files"]["tflite-fp16"]["parity"]["max_rel"] <= 1e-2
        assert meta["files"]["tflite"]["delegation"]["transposes"] == 0
        assert meta["files"]["tflite"]["delegation"]["fully_delegated"], meta["name"]


@pytest.mark.slow
def test_random_imagenet_archs_match_pytorch(workers, cifar_small, tmp_path):
    _, test = cifar_small
    rng = random.Random(7)
    space = get_space("mnas-imagenet")
    archs = [space.sample(rng) for _ in range(6)]

    def export(index: int) -> dict:
        return workers[index % 2].export_bundle(
            archs[index],
            tmp_path / f"m{index}",
            state_dict=realistic(archs[index], seed=index).state_dict(),
            options=ExportOptions(formats=("tflite", "onnx"), num_threads=1),
            parity_images=test.images[:8],
            mean=MEAN,
            std=STD,
        )

    with ThreadPoolExecutor(2) as executor:
        for meta in executor.map(export, range(len(archs))):
            for fmt in ("tflite", "onnx"):
                assert meta["files"][fmt]["parity"]["max_rel"] <= 1e-4
            assert meta["files"]["tflite"]["delegation"]["transposes"] == 0


def train_briefly(arch: Arch, train, epochs: int) -> nn.Module:
    from pipeline.batches import BatchLoader

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    model = build(arch).to(memory_format=torch.channels_last)
    loader = BatchLoader(train, 128, train=True, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 4e-3, total_steps=epochs * len(loader)
    )
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.slow
def test_trained_int8_agrees_with_fp32(cifar_small, tmp_path):
    """A small net trained for a few epochs on cifar10_small (about 40% test accuracy: low
    margins, a hard case for int8) keeps >= 95% top-1 agreement after int8 quantisation."""
    train, test = cifar_small
    arch = Arch.decode(
        "in32_cls10|stem_k3_s1_c16_re|ds_k3_s1_se0_noskip_c16_n1_re|mb3_k3_s2_se0_id_c24_n2_re|"
        "mb3_k3_s2_se25_id_c48_n2_re|mb3_k3_s2_se0_id_c64_n1_re|head_c128_re"
    )
    model = train_briefly(arch, train, epochs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)  # a disagreeing int8 file would warn
        meta = export_bundle(
            arch,
            tmp_path / "trained",
            model=model,
            options=ExportOptions(formats=("tflite", "tflite-int8")),
            parity_images=test.images,
            calibration_images=train.images[:300],
            mean=MEAN,
            std=STD,
            class_names=train.class_names,
            accuracy_data=(test.images, test.labels, "cifar10_small test"),
        )
    int8 = meta["files"]["tflite-int8"]["parity"]
    assert int8["images"] == 1000 and int8["passed"]
    assert int8["top1_agreement"] >= 0.95, int8
    top1 = meta["accuracy"]["top1"]
    assert top1["pytorch"] > 0.3 and abs(top1["tflite-int8"] - top1["pytorch"]) <= 0.03


@pytest.mark.slow
def test_worker_crash_is_an_error_and_the_worker_restarts(tmp_path):
    import os
    import signal
    import threading

    arch = baseline("mobilenet_v2", 224, 1000)
    with ExportWorker(warm_up=False) as worker:
        pid = worker._process.pid
        threading.Timer(3.0, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(ExportError, match="died.*-9"):
            worker.latency_artifact(arch, "tflite", tmp_path)
        path = worker.latency_artifact(Arch.decode(TINY), "onnx", tmp_path)
        assert path.is_file() and worker._process.pid != pid
    # the killed export left at most a hidden staging directory, never a bundle
    assert not list(tmp_path.rglob(f"{arch.key()}/tflite/{METADATA}"))
