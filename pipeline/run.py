"""`pearl run`: teacher + data + device + budget in, a trained, exported, re-timed student and a
report out.  Stages, each writing into the run folder and skipped when its output exists (so a
re-run after a kill continues rather than restarts)::

    search/               the KD-guided search (`pipeline.search`; resumes inside itself)
    search/summary.json   written when the search reached its budget
    winners.json          best reward per latency target, ties broken by measured latency
    train/LABEL-LOSS/     final training of each winner and of the baseline, per loss
                          (`pipeline.training`; resumes from its last finished epoch)
    export/LABEL/         the bundle: .tflite fp32/fp16/int8, .onnx, metadata.json
                          (`models.export.run_export` in a worker process, from the first
                          loss's weights)
    latency.json          the exported files re-timed on the target device (and ONNX on the
                          host's ONNX Runtime, kept apart: runtimes are never mixed)
    report.md + figures/  `pipeline.run_report`

LABEL is ``searched-KEY`` for a winner (KEY: the arch's key) and ``baseline-NAME``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import CONFIG_FILE_NAME, config_hash, save_config
from pipeline.run_config import RunConfig

SEARCH_DIR, WINNERS_FILE, LATENCY_FILE = "search", "winners.json", "latency.json"
SUMMARY_FILE = "summary.json"
Log = Callable[[str], None]


class RunError(RuntimeError):
    """A stage cannot go on; the message names the stage, the cause and what to do."""


def write_json(path: Path, document: Any) -> None:
    """Atomic JSON write: a kill leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# -- the stages ------------------------------------------------------------------------------


def stage_search(config: RunConfig, run_dir: Path, log: Log, progress: bool) -> dict:
    out = run_dir / SEARCH_DIR
    done = out / SUMMARY_FILE
    if done.is_file():
        log(f"search: done ({done}), skipped")
        return read_json(done)
    from pipeline.search import Search, SearchError, build_setup
    from pipeline.store import STORE_FILE_NAME

    search_config = config.search_config()
    resume = (out / STORE_FILE_NAME).is_file()
    log(f"search: {'resuming' if resume else 'starting'} in {out}")
    setup = build_setup(search_config, log)
    try:
        search = Search(search_config, out, setup, resume=resume, log=log, show_progress=progress)
        summary = search.run()
    except SearchError as error:
        raise RunError(f"search stage: {error}") from None
    finally:
        setup.close()
    write_json(done, summary)
    return summary


def stage_winners(config: RunConfig, run_dir: Path, log: Log) -> list[dict]:
    path = run_dir / WINNERS_FILE
    if path.is_file():
        return read_json(path)
    from pipeline.store import STORE_FILE_NAME, ResultsStore
    from pipeline.winners import pick_winners

    with ResultsStore(run_dir / SEARCH_DIR / STORE_FILE_NAME) as store:
        rows = store.candidates("WHERE reused_from IS NULL AND status IN ('ok','terminated')")
    targets = list(config.search.report_targets or (config.reward.target,))
    winners = pick_winners(rows, targets, config.reward.spec())
    if not any(w.get("arch") for w in winners):
        raise RunError(
            f"winners stage: the search in {run_dir / SEARCH_DIR} has no scored candidate; "
            "raise search.max_candidates and run again"
        )
    write_json(path, winners)
    for w in winners:
        if w.get("arch"):
            log(
                f"winner at target {w['target']:g}: {w['key']} (proxy accuracy {w['accuracy']:.3f})"
            )
    return winners


def models_to_train(config: RunConfig, winners: list[dict]) -> list[tuple[str, str]]:
    """``(label, arch string)`` of each distinct winner, then the baseline."""
    from models.baselines import resolve_arch

    units, seen = [], set()
    for w in winners:
        if w.get("arch") and w["key"] not in seen:
            seen.add(w["key"])
            units.append((f"searched-{w['key']}", w["arch"]))
    if config.train.baseline:
        try:
            arch = resolve_arch(
                config.train.baseline, config.space.input_size, config.space.num_classes
            )
        except ValueError as error:
            raise RunError(f"train.baseline: {error}") from None
        name = config.train.baseline if "|" not in config.train.baseline else arch.key()
        units.append((f"baseline-{name}", arch.encode()))
    return units


def stage_train(config: RunConfig, run_dir: Path, units, log: Log, progress: bool) -> dict:
    """Train every unit with every loss; returns ``{label: {loss: metrics}}``."""
    from pipeline.training import METRICS_FILE, STATE_FILE, TrainSettings, input_statistics, train

    stage = config.train
    results: dict[str, dict[str, dict]] = {}
    pending = []
    for label, arch in units:
        for loss in stage.losses:
            folder = run_dir / "train" / f"{label}-{loss}"
            metrics_path = folder / METRICS_FILE
            if metrics_path.is_file() and read_json(metrics_path).get("finished"):
                results.setdefault(label, {})[loss] = read_json(metrics_path)
            else:
                pending.append((label, arch, loss, folder))
    if not pending:
        log("train: every model is trained, skipped")
        return results

    train_arrays, test_arrays = _load_train_data(config)
    mean, std = input_statistics(train_arrays)
    teacher = None
    if any(loss in ("kd", "od") for _, _, loss, _ in pending):
        from models.teacher_loading import TeacherError, load_teacher

        try:
            teacher = load_teacher(
                config.teacher.spec,
                num_classes=train_arrays.num_classes,
                input_size=int(train_arrays.images.shape[1]),
                mean=mean,
                std=std,
            )
        except TeacherError as error:
            raise RunError(f"train stage: {error}") from None
    for label, arch, loss, folder in pending:
        log(f"train: {label} with {loss} for {stage.epochs} epochs -> {folder}")
        settings = TrainSettings(
            model=arch,
            epochs=stage.epochs,
            batch_size=stage.batch_size,
            lr=stage.lr,
            weight_decay=stage.weight_decay,
            warmup_epochs=stage.warmup_epochs,
            schedule=stage.schedule,
            loss=loss,
            temperature=stage.temperature,
            alpha=stage.alpha,
            seed=stage.seed,
        )
        run_info = {
            "data": {
                "path": config.train_data(),
                "train_limit": config.train.train_images,
                "test_limit": config.train.test_images,
            },
            "teacher": config.teacher.spec if loss != "ce" else None,
            "command": f"pearl run (stage train, {label})",
        }
        results.setdefault(label, {})[loss] = train(
            settings,
            train_arrays,
            test_arrays,
            folder,
            teacher=teacher if loss != "ce" else None,
            resume=(folder / STATE_FILE).is_file(),
            run_info=run_info,
            progress=progress,
            threads=stage.threads or None,
        )
    return results


def _load_train_data(config: RunConfig):
    import numpy as np

    from pipeline.data import DataError, load_dataset

    try:
        train, test = load_dataset(config.train_data(), image_size=config.space.input_size)
    except DataError as error:
        raise RunError(f"train stage: {error}") from None
    if config.train.train_images:
        train = train.take(np.arange(min(config.train.train_images, len(train))))
    if config.train.test_images:
        test = test.take(np.arange(min(config.train.test_images, len(test))))
    return train, test


def stage_export(config: RunConfig, run_dir: Path, units, log: Log) -> dict[str, dict]:
    """Export every unit from the weights of its first loss (`models.export.run_export`, each in
    a fresh worker process, so that the converters' memory is returned after each bundle)."""
    from models.export import ExportError, ExportRequest
    from pipeline.training import MODEL_FILE

    loss = config.train.losses[0]
    bundles = {}
    for label, arch in units:
        out = run_dir / "export" / label
        metadata = out / "metadata.json"
        if not metadata.is_file():
            log(f"export: {label} ({', '.join(config.export.formats)}) -> {out}")
            try:
                request = ExportRequest(
                    arch,
                    out,
                    weights=run_dir / "train" / f"{label}-{loss}" / MODEL_FILE,
                    data_path=config.train_data(),
                    formats=config.export.formats,
                    calib_images=config.export.calib_images,
                    accuracy=True,
                    force=True,
                )
                _export_in_worker(request, label, log)
            except ExportError as error:
                raise RunError(f"export stage: exporting {label} failed: {error}") from None
        bundles[label] = read_json(metadata)
    return bundles


def _export_in_worker(request, label: str, log: Log) -> None:
    """`run_export` in an `ExportWorker` started for this bundle and closed after it; its notes
    and warnings go to the log."""
    from models.export import ExportWarning, ExportWorker
    from pipeline.data import load_dataset

    def note(text: str) -> None:
        log(f"export: {label}: note: {text}")

    with (
        ExportWorker(num_threads=request.num_threads, warm_up=False) as worker,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ExportWarning)
        worker.run_export(request, load_data=load_dataset, on_note=note)
    for warning in caught:
        log(f"export: {label}: WARNING: {warning.message}")


def target_device(config: RunConfig) -> str:
    """Where exported .tflite files are re-timed: [export].device, else the first phone or host
    backend of the latency chain, else this machine's LiteRT."""
    if config.export.device:
        return config.export.device
    for spec in config.latency.backends:
        if spec.partition(":")[0].lower() in ("adb", "host") and spec.lower() != "host:onnx":
            return spec
    return "host:tflite"


def stage_measure(config: RunConfig, run_dir: Path, bundles: dict[str, dict], log: Log) -> dict:
    """``{"device": spec, "onnx_device": "host:onnx", "rows": [...]}``, one row per file."""
    path = run_dir / LATENCY_FILE
    if path.is_file():
        return read_json(path)
    from device_bench.backends import backend_from_spec
    from device_bench.cache import MeasurementCache, measure_cached
    from device_bench.measurement import MeasurementError
    from device_bench.ranking import ranking_latency_ms
    from models.export import record_measurement

    device = target_device(config)
    backends = {}
    cache = MeasurementCache(config.latency.measurement_cache or None)
    rows = []
    try:
        for label, metadata in bundles.items():
            for fmt, entry in metadata["files"].items():
                spec = "host:onnx" if fmt == "onnx" else device
                if spec not in backends:
                    backends[spec] = backend_from_spec(spec)
                log(f"measure: {label} {fmt} on {spec}")
                file_path = run_dir / "export" / label / entry["path"]
                try:
                    measurement, _ = measure_cached(backends[spec], file_path, cache)
                except MeasurementError as error:
                    raise RunError(f"measure stage: {error}") from None
                record_measurement(
                    run_dir / "export" / label,
                    "latency",
                    f"{fmt}@{measurement.device}",
                    {"spec": spec, **measurement.to_dict()},
                )
                rows.append(
                    {
                        "label": label,
                        "format": fmt,
                        "spec": spec,
                        "latency_ms": ranking_latency_ms(measurement),
                        **measurement.to_dict(),
                    }
                )
    finally:
        for backend in backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
    result = {"device": device, "onnx_device": "host:onnx", "rows": rows}
    write_json(path, result)
    return result


# -- the whole run ---------------------------------------------------------------------------


def prepare_run_dir(config: RunConfig, run_dir: Path, *, resume: bool) -> None:
    """Create the run folder with its config, or check a resumed one holds the same config."""
    saved = run_dir / CONFIG_FILE_NAME
    if saved.is_file() and not resume:
        raise RunError(
            f"{run_dir} already holds a run; continue it with `pearl run --resume {run_dir}` "
            "or choose another --out folder"
        )
    if resume:
        if not saved.is_file():
            raise RunError(f"{run_dir} has no {CONFIG_FILE_NAME}: not a pearl run folder")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)


def run_all(config: RunConfig, run_dir: Path, *, log: Log, progress: bool = True) -> dict:
    """Every stage in order; returns a summary (also the basis of ``report.md``)."""
    from pipeline.run_report import write_run_report

    search = stage_search(config, run_dir, log, progress)
    winners = stage_winners(config, run_dir, log)
    units = models_to_train(config, winners)
    trained = stage_train(config, run_dir, units, log, progress)
    bundles = stage_export(config, run_dir, units, log)
    latency = stage_measure(config, run_dir, bundles, log)
    report = write_run_report(run_dir)
    return {
        "run_dir": str(run_dir),
        "config_hash": config_hash(config),
        "search": {k: search[k] for k in ("candidates", "distinct_archs", "generations")},
        "winners": winners,
        "final": {
            label: {loss: m.get("top1") for loss, m in per_loss.items()}
            for label, per_loss in trained.items()
        },
        "bundles": {label: str(run_dir / "export" / label) for label in bundles},
        "latency": latency,
        "report": str(report),
    }
