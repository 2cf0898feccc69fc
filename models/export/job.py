"""One export as a library call: a plain, frozen `ExportRequest` in, a checked bundle on disk and
its metadata out.  `pearl export` is this plus option parsing and a summary; `pearl run` runs it
in a fresh `ExportWorker` process per bundle.

`run_export` does, in order:

1. the network: `arch` built and, with `weights`, loaded from the checkpoint (which must fit);
2. its input normalisation: the request's, else the checkpoint's, else CIFAR-10's for inputs of
   at most 64 px and ImageNet's above (`models.normalisation`), with a note;
3. the images, when `data_path` is given: read by the caller's `load_data` (`models` reads no
   dataset files; `pipeline.data.load_dataset` is the usual one), `calib_images` training images
   spread over the classes calibrate int8, the first `parity_images` test images check parity,
   the whole test split measures accuracy (`accuracy=True`);
4. `export_bundle`.

Every failure raises `ExportError` with the whole message; its `field` names the request field
at fault when there is one (the CLI turns those into errors on the matching option).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.export.common import DEFAULT_FORMATS, ExportError, parse_formats
from models.network import Network
from models.normalisation import default_normalisation

Note = Callable[[str], None]


class LabelledImages(Protocol):
    """One split of a dataset: uint8 (N, H, W, 3) RGB `images`, integer `labels` (N,)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str]


class LoadData(Protocol):
    """Reads ``(train, test)`` from a dataset path, images of `image_size` px where it resizes;
    raises `ValueError` saying what is wrong (e.g. `pipeline.data.load_dataset`)."""

    def __call__(self, path: Path, *, image_size: int) -> tuple[LabelledImages, LabelledImages]: ...


@dataclass(frozen=True)
class ExportRequest:
    """What to export, where, and how; plain data, so it can be sent to a worker process.

    `arch` is a network (`models.network`), an arch string of any family or a baseline name
    (with `input_size` / `num_classes`, as `models.baselines.resolve_arch`); after construction
    it is always a network, and `name`
    defaults to the baseline name.  `weights`: a checkpoint (None: initialisation weights, for
    latency work only).  `formats` None: every format, tflite-int8 only with `data_path`.
    `mean`/`std` None: the checkpoint's, else a default by input size.  `force` replaces a
    non-empty `out_dir`.  Impossible combinations raise `ExportError` here.
    """

    arch: Network | str
    out_dir: Path
    weights: Path | None = None
    data_path: Path | None = None
    formats: tuple[str, ...] | None = None
    calib_images: int = 300
    parity_images: int = 64
    accuracy: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    int8_io: str = "float"
    onnx_layout: str = "NCHW"
    num_threads: int = 2
    force: bool = False
    input_size: int | None = None
    num_classes: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        def set_field(name: str, value) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.arch, str):
            set_field("name", self.name or _baseline_name(self.arch))
            set_field("arch", _resolve(self.arch, self.input_size, self.num_classes))
        set_field("out_dir", Path(self.out_dir))
        set_field("weights", _optional_path(self.weights))
        set_field("data_path", _optional_path(self.data_path))
        if self.formats is not None:
            set_field("formats", parse_formats(self.formats))
        set_field("mean", _optional_floats(self.mean))
        set_field("std", _optional_floats(self.std))
        if "tflite-int8" in self.format_names and self.data_path is None:
            raise ExportError(
                "tflite-int8 needs calibration images: pass --calib DATA (e.g. --calib "
                "../shared/data/cifar10_small.npz), or drop tflite-int8 from --formats"
            )
        if self.accuracy and self.data_path is None:
            raise ExportError("--accuracy needs --calib DATA (its test split is measured)")
        if self.calib_images < 1 or self.parity_images < 1:
            raise ExportError(
                f"calib_images and parity_images must be >= 1, got {self.calib_images} and "
                f"{self.parity_images}"
            )

    @property
    def format_names(self) -> tuple[str, ...]:
        """The formats to write: `formats`, or every one the data allows."""
        if self.formats is not None:
            return self.formats
        return tuple(f for f in DEFAULT_FORMATS if self.data_path or f != "tflite-int8")

    def __str__(self) -> str:  # short, for messages (the worker's "died during ...")
        return f"{self.arch} -> {self.out_dir}"


def _resolve(text: str, input_size: int | None, num_classes: int | None) -> Network:
    from models.baselines import resolve_arch

    try:
        return resolve_arch(text, input_size, num_classes)
    except ValueError as error:
        raise ExportError(str(error), field="arch") from None


def _baseline_name(text: str) -> str | None:
    from models.baselines import BASELINES

    return text if text in BASELINES else None


def _optional_path(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _optional_floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def run_export(
    request: ExportRequest,
    *,
    load_data: LoadData | None = None,
    on_step: Callable[[str], None] | None = None,
    on_note: Note | None = None,
) -> dict:
    """Export as `request` says (see the module doc) and return the bundle's metadata.

    `load_data` reads `request.data_path` (needed when it is set); `on_step` gets each step's
    description (for a progress display); `on_note` gets assumptions worth telling the user
    (untrained weights, default normalisation, synthetic parity images).  Raises
    `ExportError`; `ExportWarning`s (e.g. an int8 file disagreeing with fp32) are Python
    warnings.
    """
    from models.export.bundle import ExportOptions, export_bundle

    note = on_note or _ignore
    model, checkpoint, weights_info = _load_network(request)
    if model is None:
        note(
            "no --weights: the files hold untrained initialisation weights, good for latency "
            'measurements only (metadata says "trained": false)'
        )
    mean, std = _normalisation(request, checkpoint, note)
    images = _load_images(request, load_data, note)
    class_names = checkpoint.class_names if checkpoint is not None else None
    if not class_names and len(images.class_names) == request.arch.num_classes:
        class_names = images.class_names
    options = ExportOptions(
        formats=request.format_names,
        int8_io=request.int8_io,
        onnx_layout=request.onnx_layout,
        num_threads=request.num_threads,
        overwrite=request.force,
    )
    return export_bundle(
        request.arch,
        request.out_dir,
        model=model,
        options=options,
        parity_images=images.parity,
        calibration_images=images.calibration,
        mean=mean,
        std=std,
        class_names=class_names or None,
        weights=weights_info,
        accuracy_data=images.accuracy,
        name=request.name,
        parity_source=images.parity_source,
        calibration_source=images.calibration_source,
        on_step=on_step,
    )


def _ignore(_: str) -> None:
    pass


def _load_network(request: ExportRequest):
    """``(model, checkpoint, weights metadata)``; all None without `request.weights`."""
    if request.weights is None:
        return None, None, None
    from models.export.bundle import sha256_bytes
    from models.export.weights import load_weights, read_checkpoint

    arch, path = request.arch, request.weights
    try:
        checkpoint = read_checkpoint(path)
        if checkpoint.arch is not None and checkpoint.arch != arch.encode():
            raise ExportError(
                f"{path} was saved for arch {checkpoint.arch!r}, not {arch.encode()!r}; "
                "export that arch string instead"
            )
        model = arch.build()
        load_weights(model, checkpoint.state_dict, str(path))
    except ExportError as error:
        raise ExportError(str(error), field="weights") from None
    weights_info = {
        "source": str(path.resolve()),
        "sha256": sha256_bytes(path.read_bytes()),
        "trained": True,
    }
    return model, checkpoint, weights_info


def _normalisation(request: ExportRequest, checkpoint, note: Note):
    """``(mean, std)``: the request's, else the checkpoint's, else the default (noted); a
    request giving only one of them gets the default for the other."""
    mean, std = request.mean, request.std
    if mean is None and checkpoint is not None and checkpoint.mean and checkpoint.std:
        mean, std = checkpoint.mean, checkpoint.std
    if mean is None or std is None:
        name, default_mean, default_std = default_normalisation(request.arch.input_size)
        note(f"normalising inputs with {name} mean/std (set --mean/--std to match training)")
        mean, std = mean or default_mean, std or default_std
    return mean, std


@dataclass(frozen=True)
class _Images:
    """The real images of an export (all None / empty without a dataset)."""

    calibration: np.ndarray | None = None
    calibration_source: str = ""
    parity: np.ndarray | None = None
    parity_source: str = "caller-supplied images"
    accuracy: tuple[np.ndarray, np.ndarray, str] | None = None
    class_names: tuple[str, ...] = ()


def _load_images(request: ExportRequest, load_data: LoadData | None, note: Note) -> _Images:
    path = request.data_path
    if path is None:
        note("no --calib DATA, so parity is checked on synthetic images only")
        return _Images()
    if load_data is None:
        raise ExportError(
            f"data_path {path} is given but no load_data function to read it; pass "
            "load_data=pipeline.data.load_dataset (or your own reader)",
            field="data_path",
        )
    try:
        train, test = load_data(path, image_size=request.arch.input_size)
    except ValueError as error:  # the reader's message says which file and what to do
        raise ExportError(str(error), field="data_path") from None
    calibration = _spread(train.images, train.labels, request.calib_images)
    parity = test.images[: request.parity_images]
    return _Images(
        calibration=calibration,
        calibration_source=f"{path} train split, {len(calibration)} images",
        parity=parity,
        parity_source=f"{path} test split (first {len(parity)})",
        accuracy=(test.images, test.labels, f"{path} test split") if request.accuracy else None,
        class_names=tuple(test.class_names),
    )


def _spread(images: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """`count` training images, the same number from every class where possible (seeded)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    classes = np.unique(labels)
    per_class = [order[labels[order] == c] for c in classes]
    picked = [i for group in zip(*per_class, strict=False) for i in group][:count]
    if len(picked) < count:
        chosen = set(picked)
        picked += [i for i in order if i not in chosen][: count - len(picked)]
    return images[np.sort(np.asarray(picked, dtype=int))]
