"""The "after final training" part of ``report.md``: the winners and the baseline with their
final accuracies and noise, the verdict searched vs baseline said in words, AKD's relative gain,
and the exported files (size, accuracy, latency, and whether the timing settled)."""

from __future__ import annotations

from pathlib import Path

from models.export.common import FORMATS
from models.files import read_json
from pipeline.layout import RunLayout, is_baseline, searched_label
from pipeline.report_plots import plot_training
from pipeline.report_text import (
    finished,
    kd_gain,
    kd_gain_se,
    markdown_table,
    num,
    pct,
    plus_minus,
    quadrature,
    relative_gain,
    test_images,
    top1_se,
)

TFLITE_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.runtime == "litert")
SETTLED_SPREAD = 0.02  # the timing protocols' spread_target (device_bench MeasureSettings)


def _top1_cell(metrics: dict | None) -> str:
    if not metrics:
        return "n/a"
    if not finished(metrics):
        return f"unfinished ({metrics.get('epochs_done', '?')}/{metrics.get('epochs', '?')} ep.)"
    se = top1_se(metrics)
    return pct(metrics["top1"]) + ("" if se is None else f" ± {se:.2f}")


def _cost(metadata: dict, metrics: dict) -> tuple[int | None, int | None]:
    """MACs and parameters: the bundle's, else counted from the trained arch string."""
    if metadata.get("macs"):
        return metadata["macs"], metadata.get("params")
    from models.network import decode_network

    try:
        cost = decode_network(metadata.get("arch") or metrics.get("model", "")).cost()
    except ValueError:
        return None, metrics.get("params")
    return cost.macs, cost.params


def _models_table(layout: RunLayout, trained, winners, by_file) -> list[str]:
    key_of = {searched_label(w["key"]): w for w in winners or [] if w.get("arch")}
    losses = sorted({loss for per_loss in trained.values() for loss in per_loss})
    header = ["model", "MACs (M)", "params (M)", "proxy acc (%)"]
    header += [f"top-1 {loss} (%)" for loss in losses] + ["KD - CE (pp)"]
    header += [f"{fmt} ms" for fmt in TFLITE_FORMATS]
    rows = []
    for label, per_loss in sorted(trained.items(), key=lambda item: is_baseline(item[0])):
        macs, params = _cost(
            read_json(layout.bundle_metadata(label)) or {}, next(iter(per_loss.values()))
        )
        rows.append(
            [f"`{label}`", num(macs and macs / 1e6, ".1f"), num(params and params / 1e6, ".3f")]
            + [pct(key_of.get(label, {}).get("accuracy"))]
            + [_top1_cell(per_loss.get(loss)) for loss in losses]
            + [plus_minus(kd_gain(per_loss), kd_gain_se(per_loss))]
            + [num(by_file.get((label, fmt), {}).get("latency_ms")) for fmt in TFLITE_FORMATS]
        )
    images = {test_images(m) for p in trained.values() for m in p.values() if test_images(m)}
    return [
        markdown_table(header, rows),
        "",
        f"± is one binomial standard error of the test split ({', '.join(map(str, images))} "
        "images; one seed per model): differences smaller than about two of them are noise. "
        "Unfinished trainings are left out of every comparison. Latency: the exported LiteRT "
        "files, fastest of the timed runs, ms per image.",
        "",
    ]


def verdict_lines(trained, by_file) -> list[str]:
    """Searched vs baseline in words, per loss: faster or slower, more or less accurate, and
    whether the accuracy difference is larger than its noise."""
    baselines = [label for label in trained if is_baseline(label)]
    if not baselines:
        return []
    base = baselines[0]
    lines = ["**Searched vs baseline.**", ""]
    for label, per_loss in trained.items():
        if is_baseline(label):
            continue
        ms, base_ms = (by_file.get((x, "tflite"), {}).get("latency_ms") for x in (label, base))
        speed = "n/a"
        if ms and base_ms:
            speed = f"{base_ms / ms:.2f}x faster" if ms < base_ms else f"{ms / base_ms:.2f}x slower"
        for loss in sorted(per_loss):
            ours, theirs = per_loss[loss], trained[base].get(loss)
            if not (finished(ours) and finished(theirs)):
                continue
            diff = 100 * (ours["top1"] - theirs["top1"])
            errors = [top1_se(ours), top1_se(theirs)]
            noise = None if None in errors else quadrature(*errors)
            if noise is not None and abs(diff) <= 2 * noise:
                accuracy = f"as accurate within noise ({diff:+.2f} ± {noise:.2f} pp)"
            else:
                word = "more" if diff > 0 else "less"
                accuracy = f"{word} accurate ({plus_minus(diff, noise)} pp)"
            beaten = diff < 0 and not (noise is not None and abs(diff) <= 2 * noise)
            lines.append(
                f"- `{label}` with {loss}: {speed} than `{base}` on the target device and "
                f"{accuracy}."
                + (
                    " **The baseline beats the searched student here.**"
                    if beaten and ms and base_ms and base_ms <= ms
                    else ""
                )
            )
    return lines + [""]


def relative_gain_lines(trained) -> list[str]:
    """AKD eq. 1 per searched model against the baseline, with its standard error."""
    baseline = next((p for label, p in trained.items() if is_baseline(label)), None)
    if baseline is None or kd_gain(baseline) is None:
        return []
    rows = []
    for label, per_loss in trained.items():
        gain = kd_gain(per_loss)
        if is_baseline(label) or gain is None:
            continue
        errors = [kd_gain_se(per_loss), kd_gain_se(baseline)]
        se = None if None in errors else quadrature(*errors)
        rows.append(
            (
                f"`{label}`",
                plus_minus(gain, kd_gain_se(per_loss)),
                plus_minus(kd_gain(baseline), kd_gain_se(baseline)),
                plus_minus(relative_gain(gain, kd_gain(baseline)), se),
            )
        )
    if not rows:
        return []
    return [
        "### Relative gain (AKD eq. 1)",
        "",
        "[KD(searched) - CE(searched)] - [KD(baseline) - CE(baseline)], percentage points; "
        "positive means the searched student profits more from this teacher than the baseline "
        "does. ± adds the four runs' standard errors in quadrature.",
        "",
        markdown_table(["searched", "KD - CE", "baseline KD - CE", "relative gain"], rows),
        "",
    ]


def files_lines(layout: RunLayout, trained, by_file) -> list[str]:
    """Every exported file: size, top-1 on the test split, latency, and a flag when the timing
    did not settle."""
    rows, unsettled, images = [], False, set()
    for label in trained:
        metadata = read_json(layout.bundle_metadata(label))
        if not metadata:
            continue
        accuracy = metadata.get("accuracy") or {}
        top1 = accuracy.get("top1", {})
        images.add(accuracy.get("images", "?"))
        for fmt, entry in metadata["files"].items():
            timing = by_file.get((label, fmt), {})
            spread = timing.get("spread")
            note = ""
            if spread is not None and spread > SETTLED_SPREAD:
                unsettled, note = True, f"did not settle (spread {100 * spread:.1f}%)"
            rows.append(
                (
                    f"`{label}`",
                    fmt,
                    f"{entry['bytes'] / 1e6:.2f}",
                    pct(top1.get(fmt)),
                    num(timing.get("latency_ms")) if fmt in TFLITE_FORMATS else "(ONNX table)",
                    timing.get("spec", "n/a"),
                    note,
                )
            )
    if not rows:
        return []
    return [
        "### Exported files",
        "",
        f"Top-1 of each file on {', '.join(map(str, sorted(images, key=str)))} test images "
        "(the export's own check, on the calibration dataset's test split).",
        "",
        markdown_table(
            ["model", "file", "size (MB)", "top-1 (%)", "latency (ms)", "timed on", "timing"],
            rows,
        ),
        "",
        *(
            [
                f"A timing that did not settle ran into the run cap with the per-round medians "
                f"still more than {100 * SETTLED_SPREAD:.0f}% apart: take it as approximate.",
                "",
            ]
            if unsettled
            else []
        ),
    ]


def final_section(layout: RunLayout, trained, winners, latency, figures: Path) -> list[str]:
    """The lines of the final-training part of the report (and its figure)."""
    by_file = {(r["label"], r["format"]): r for r in (latency or {}).get("rows", [])}
    lines = ["## Winners and baseline after final training", ""]
    lines += _models_table(layout, trained, winners, by_file)
    lines += verdict_lines(trained, by_file)
    teacher = next(
        (m["teacher"] for p in trained.values() for m in p.values() if m.get("teacher")), None
    )
    if teacher:
        lines += [
            f"Teacher `{teacher.get('spec')}`: test top-1 {pct(teacher.get('top1'))}% on the same "
            "split.",
            "",
        ]
    lines += relative_gain_lines(trained)
    data = next(iter(next(iter(trained.values())).values())).get("data") or {}
    dataset = f"{Path(data.get('path', '?')).name}, {data.get('test_images', '?')} test images"
    chance = 1 / (data.get("num_classes") or 10)
    plot_training(
        trained,
        figures / "final_training.png",
        dataset=dataset,
        teacher_top1=(teacher or {}).get("top1"),
        chance=chance,
    )
    lines += [f"![final training]({figures.name}/final_training.png)", ""]
    lines += files_lines(layout, trained, by_file)
    onnx = [(label, r) for (label, fmt), r in by_file.items() if fmt == "onnx"]
    if onnx:
        lines += [
            "ONNX Runtime on this host (a different runtime from the target device's LiteRT):",
            "",
            markdown_table(
                ["model", "onnx ms (min)", "median ms"],
                [(f"`{label}`", num(r["latency_ms"]), num(r["median_ms"])) for label, r in onnx],
            ),
            "",
        ]
    for label in trained:
        metadata = read_json(layout.bundle_metadata(label))
        if metadata:
            lines += [f"`{label}` arch: `{metadata.get('arch')}`", ""]
    return lines
