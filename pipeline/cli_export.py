"""`pearl export`: write the deployable bundle of a network (TFLite fp32/fp16/int8, ONNX,
labels.txt, metadata.json), every file checked against PyTorch.  The work is
`models.export.run_export`; this module parses the options and prints the outcome."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from models.export.common import ExportError, parse_formats
from pipeline.cli_common import CLASSES_OPTION, INPUT_OPTION
from pipeline.progress import progress_bar

# ExportRequest fields whose bad value is reported as an error on this argument or option
_OPTION_OF_FIELD = {"arch": "ARCH_OR_BASELINE", "weights": "--weights", "data_path": "--calib"}


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


def _shown(flag: str, kind: click.ParamType, default, help_text: str | None = None):
    """An option whose default is shown in --help."""
    return click.option(flag, type=kind, default=default, show_default=True, help=help_text)


@click.command("export")
@click.argument("arch_text", metavar="ARCH_OR_BASELINE")
@click.option(
    "-o",
    "--output",
    "out_dir",
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
@_shown("--calib-images", click.IntRange(min=1), 300, "training images used for int8 calibration")
@_shown(
    "--parity-images",
    click.IntRange(min=1),
    64,
    "test images fed through PyTorch and every exported file",
)
@click.option(
    "--accuracy",
    is_flag=True,
    help="also measure top-1 accuracy of every file on the whole test split",
)
@_shown("--int8-io", click.Choice(["float", "int8"]), "float", "int8 file's input/output type")
@_shown("--onnx-layout", click.Choice(["NCHW", "NHWC"]), "NCHW", "ONNX input layout")
@click.option(
    "--mean",
    "mean_text",
    default=None,
    help="input normalisation mean 'r,g,b' in [0,1] (default: the checkpoint's, else "
    "CIFAR-10's for inputs <= 64 px, ImageNet's above)",
)
@click.option("--std", "std_text", default=None, help="input normalisation std 'r,g,b'")
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--force", is_flag=True, help="replace an existing non-empty output directory")
@click.option("--json", "as_json", is_flag=True, help="print metadata.json instead of a summary")
def export_command(arch_text, formats, mean_text, std_text, as_json, **fields) -> None:
    """Export ARCH_OR_BASELINE to mobile files, check each against PyTorch, and write them with
    labels.txt and metadata.json into the directory -o."""
    # `fields`: the options named after `ExportRequest` fields, passed on as they are
    from models.export.job import ExportRequest

    format_names = None
    if formats is not None:
        try:
            format_names = parse_formats(formats)
        except ExportError as error:
            raise click.BadParameter(str(error), param_hint="--formats") from None
    elif fields["data_path"] is None:
        _note("skipping tflite-int8, which needs --calib DATA")
    try:
        request = ExportRequest(
            arch_text,
            formats=format_names,
            mean=_floats3(mean_text, "--mean"),
            std=_floats3(std_text, "--std"),
            **fields,
        )
    except ExportError as error:
        raise _click_error(error, usage=True) from None
    document = _export(request)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        _summary(request.out_dir, document)


def _export(request) -> dict:
    """`run_export` with a spinner, notes and warnings on stderr, errors as click errors."""
    import torch

    from models.export.bundle import ExportWarning
    from models.export.job import run_export
    from pipeline.data import load_dataset

    torch.set_num_threads(request.num_threads)
    with _spinner() as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExportWarning)
        try:
            document = run_export(request, load_data=load_dataset, on_step=step, on_note=_note)
        except ExportError as error:
            raise _click_error(error, usage=False) from None
    for warning in caught:
        if issubclass(warning.category, ExportWarning):
            click.secho(f"WARNING: {warning.message}", fg="yellow", bold=True, err=True)
    return document


def _click_error(error: ExportError, *, usage: bool) -> click.ClickException:
    """A bad argument or option value: an error on it (exit 2); a request that cannot be built
    (options that do not go together): a usage error (exit 2); else a plain error (exit 1)."""
    if error.field in _OPTION_OF_FIELD:
        return click.BadParameter(str(error), param_hint=_OPTION_OF_FIELD[error.field])
    return click.UsageError(str(error)) if usage else click.ClickException(str(error))


def _note(text: str) -> None:
    click.secho(f"note: {text}", fg="yellow", err=True)


@contextmanager
def _spinner() -> Iterator[Callable[[str], None]]:
    """A step callback that shows the current step on a transient spinner (on stderr).  The
    spinner starts at the first step, so notes printed before it are not drawn over."""
    bar = progress_bar(counted=False, transient=True)
    task = None

    def step(text: str) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(text, total=None)
        bar.update(task, description=text)

    try:
        yield step
    finally:
        if task is not None:  # a Progress that never started would still print a blank line
            bar.stop()


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
