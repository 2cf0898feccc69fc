"""`pearl export`: write the deployable bundle of a network (TFLite fp32/fp16/int8, ONNX,
labels.txt, metadata.json), every file checked against PyTorch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from models.export.common import DEFAULT_FORMATS, ExportError, parse_formats
from pipeline.cli_common import CLASSES_OPTION, INPUT_OPTION, arch_or_fail

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _floats3(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise click.BadParameter(
            f"expected three comma-separated numbers, got {text!r}", param_hint=flag
        )
    return values


@click.command("export")
@click.argument("arch_text", metavar="ARCH_OR_BASELINE")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="bundle directory to create (written to a temporary sibling, then renamed)",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="checkpoint (state dict) to export; default: initialisation weights, "
    "for latency work only",
)
@INPUT_OPTION
@CLASSES_OPTION
@click.option(
    "--formats",
    default=None,
    help="comma-separated: tflite, tflite-fp16, tflite-int8, onnx [default: all; "
    "tflite-int8 only with --calib]",
)
@click.option(
    "--calib",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="dataset (.npz, cifar-10-batches-py or train/+test/ image folders): "
    "training images calibrate int8, test images check parity",
)
@click.option(
    "--calib-images",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="training images used for int8 calibration",
)
@click.option(
    "--parity-images",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="test images fed through PyTorch and every exported file",
)
@click.option(
    "--accuracy",
    is_flag=True,
    help="also measure top-1 accuracy of every file on the whole test split",
)
@click.option(
    "--int8-io",
    type=click.Choice(["float", "int8"]),
    default="float",
    show_default=True,
    help="int8 file's input/output type",
)
@click.option(
    "--onnx-layout",
    type=click.Choice(["NCHW", "NHWC"]),
    default="NCHW",
    show_default=True,
    help="ONNX input layout",
)
@click.option(
    "--mean",
    "mean_text",
    default=None,
    help="input normalisation mean 'r,g,b' in [0,1] (default: the checkpoint's, else "
    "CIFAR-10's for inputs <= 64 px, ImageNet's above)",
)
@click.option("--std", "std_text", default=None, help="input normalisation std 'r,g,b'")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--force", is_flag=True, help="replace an existing non-empty output directory")
@click.option("--json", "as_json", is_flag=True, help="print metadata.json instead of a summary")
def export_command(
    arch_text,
    output,
    weights,
    input_size,
    num_classes,
    formats,
    data_path,
    calib_images,
    parity_images,
    accuracy,
    int8_io,
    onnx_layout,
    mean_text,
    std_text,
    threads,
    force,
    as_json,
) -> None:
    """Export ARCH_OR_BASELINE to mobile files, check each against PyTorch, and write them with
    labels.txt and metadata.json into the directory -o."""
    from models.baselines import BASELINES

    if formats is None:
        format_names = tuple(f for f in DEFAULT_FORMATS if data_path or f != "tflite-int8")
        if data_path is None:
            click.secho(
                "note: skipping tflite-int8, which needs --calib DATA", fg="yellow", err=True
            )
    else:
        try:
            format_names = parse_formats(formats)
        except ExportError as error:
            raise click.BadParameter(str(error), param_hint="--formats") from None
    arch = arch_or_fail(arch_text, input_size, num_classes)
    if "tflite-int8" in format_names and data_path is None:
        raise click.UsageError(
            "tflite-int8 needs calibration images: pass --calib DATA (e.g. --calib "
            "../shared/data/cifar10_small.npz), or drop tflite-int8 from --formats"
        )
    mean, std = _floats3(mean_text, "--mean"), _floats3(std_text, "--std")

    import torch

    from models.builder import build
    from models.export.bundle import ExportOptions, ExportWarning, export_bundle, sha256_bytes
    from models.export.weights import load_weights, read_checkpoint

    torch.set_num_threads(threads)
    model, checkpoint, weights_info = None, None, None
    if weights is not None:
        try:
            checkpoint = read_checkpoint(weights)
        except ExportError as error:
            raise click.BadParameter(str(error), param_hint="--weights") from None
        if checkpoint.arch is not None and checkpoint.arch != arch.encode():
            raise click.BadParameter(
                f"{weights} was saved for arch {checkpoint.arch!r}, not {arch.encode()!r}; "
                "export that arch string instead",
                param_hint="--weights",
            )
        model = build(arch)
        try:
            load_weights(model, checkpoint.state_dict, str(weights))
        except ExportError as error:
            raise click.BadParameter(str(error), param_hint="--weights") from None
        weights_info = {
            "source": str(weights.resolve()),
            "sha256": sha256_bytes(weights.read_bytes()),
            "trained": True,
        }
    if mean is None and checkpoint is not None and checkpoint.mean and checkpoint.std:
        mean, std = checkpoint.mean, checkpoint.std
    if mean is None or std is None:
        mean, std = _default_normalisation(arch.input_size, mean, std)

    calibration = parity = accuracy_data = class_names = None
    parity_source = calibration_source = ""
    if checkpoint is not None and checkpoint.class_names:
        class_names = checkpoint.class_names
    if data_path is not None:
        train, test = _load_data(data_path, arch.input_size)
        calibration = _spread(train.images, train.labels, calib_images)
        parity = test.images[:parity_images]
        calibration_source = f"{data_path} train split, {len(calibration)} images"
        parity_source = f"{data_path} test split (first {len(parity)})"
        if class_names is None and len(test.class_names) == arch.num_classes:
            class_names = test.class_names
        if accuracy:
            accuracy_data = (test.images, test.labels, f"{data_path} test split")
    elif accuracy:
        raise click.UsageError("--accuracy needs --calib DATA (its test split is measured)")
    else:
        click.secho(
            "note: no --calib DATA, so parity is checked on synthetic images only",
            fg="yellow",
            err=True,
        )

    options = ExportOptions(
        formats=format_names,
        int8_io=int8_io,
        onnx_layout=onnx_layout,
        num_threads=threads,
        overwrite=force,
    )
    name = arch_text if arch_text in BASELINES else None
    with _progress() as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExportWarning)
        try:
            document = export_bundle(
                arch,
                output,
                model=model,
                options=options,
                parity_images=parity,
                calibration_images=calibration,
                mean=mean,
                std=std,
                class_names=class_names,
                weights=weights_info,
                accuracy_data=accuracy_data,
                name=name,
                parity_source=parity_source or "caller-supplied images",
                calibration_source=calibration_source,
                on_step=step,
            )
        except ExportError as error:
            raise click.ClickException(f"{error}") from None
    for warning in caught:
        if issubclass(warning.category, ExportWarning):
            click.secho(f"WARNING: {warning.message}", fg="yellow", bold=True, err=True)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        _summary(output, document)


def _default_normalisation(size: int, mean, std):
    if size <= 64:
        from pipeline.data import CIFAR10_MEAN, CIFAR10_STD

        defaults, label = (CIFAR10_MEAN, CIFAR10_STD), "CIFAR-10"
    else:
        defaults, label = (IMAGENET_MEAN, IMAGENET_STD), "ImageNet"
    click.secho(
        f"note: normalising inputs with {label} mean/std (set --mean/--std to match training)",
        fg="yellow",
        err=True,
    )
    return mean or defaults[0], std or defaults[1]


def _load_data(path: Path, input_size: int):
    from pipeline.data import DataError, load_dataset

    try:
        return load_dataset(path, image_size=input_size)
    except DataError as error:
        raise click.BadParameter(str(error), param_hint="--calib") from None


def _spread(images, labels, count: int):
    """`count` training images, the same number from every class where possible (seeded)."""
    import numpy as np

    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    classes = np.unique(labels)
    per_class = [order[labels[order] == c] for c in classes]
    picked = [i for group in zip(*per_class, strict=False) for i in group][:count]
    if len(picked) < count:
        chosen = set(picked)
        picked += [i for i in order if i not in chosen][: count - len(picked)]
    return images[np.sort(np.asarray(picked, dtype=int))]


class _progress:
    """A rich spinner on stderr whose text follows the export's steps."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("exporting", total=None)
        return lambda text: self._progress.update(self._task, description=text)

    def __exit__(self, *exc) -> None:
        self._progress.stop()


def _summary(output: Path, document: dict) -> None:
    click.echo(
        f"wrote {output}  ({document['arch_key']}, {document['macs'] / 1e6:.1f} M MACs, "
        f"{document['params'] / 1e6:.3f} M params)"
    )
    for entry in document["files"].values():
        parity = entry["parity"]
        if parity["rtol"] is not None:
            check = f"max rel err {parity['max_rel']:.1e}"
        elif document["weights"]["trained"]:
            check = f"top-1 agreement {parity['top1_agreement']:.1%}"
        else:  # near-tied logits of initial weights: agreement means nothing (see metadata)
            check = "untrained: not judged"
        line = f"  {entry['path']:<18} {entry['bytes'] / 1e6:7.2f} MB  {check:<26}"
        delegation = entry.get("delegation")
        if delegation:
            line += f" XNNPACK {delegation['delegated_nodes']}/{delegation['nodes']} ops"
            if delegation["not_delegated"]:
                slow = ", ".join(f"{op} x{n}" for op, n in delegation["not_delegated"].items())
                line += f"; NOT delegated: {slow}"
        click.echo(line)
    top1 = document.get("accuracy", {}).get("top1")
    if top1:
        click.echo("  top-1 accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in top1.items()))
