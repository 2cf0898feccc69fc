"""`pearl run`: teacher + data + device + budget in, a trained, exported, re-timed student and a
report out.  Stages, each writing into the run folder and skipped when its output exists (so a
re-run after a kill continues rather than restarts); every path comes from
`pipeline.layout.RunLayout`::

    search/               the KD-guided search (`pipeline.search`; resumes inside itself)
    search/summary.json   written when the search reached its budget
    winners.json          the winner of each latency target (`pipeline.winners`)
    train/LABEL-LOSS/     final training of each winner and of the baseline, per loss
                          (`pipeline.training`; resumes from its last finished epoch)
    export/LABEL/         the bundle: .tflite fp32/fp16/int8, .onnx, metadata.json
                          (`models.export.run_export` in a worker process, from the first
                          loss's weights)
    latency.json          the exported files re-timed on the target device (and ONNX on the
                          host's ONNX Runtime, kept apart: runtimes are never mixed)
    report.md + figures/  `pipeline.run_report`

LABEL: `pipeline.layout` (``searched-KEY`` for a winner, ``baseline-NAME``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.files import atomic_write_json, read_json
from pipeline.config_hash import config_hash, save_config, saved_config_hash
from pipeline.config_paths import resolve_path
from pipeline.layout import RunLayout, baseline_label, searched_label
from pipeline.lock import folder_contents
from pipeline.registry import LOSSES
from pipeline.run_config import RunConfig

Log = Callable[[str], None]


class RunError(RuntimeError):
    """A stage cannot go on; the message names the stage, the cause and what to do."""


# -- the stages ------------------------------------------------------------------------------


def stage_search(config: RunConfig, run_dir: Path, log: Log, progress: bool) -> dict:
    layout = RunLayout(run_dir).search
    done = layout.summary
    if done.is_file():
        log(f"search: done ({done}), skipped")
        return read_json(done)
    from pipeline.search import Search, SearchError, build_setup

    out = layout.root
    search_config = config.search_config()
    resume = layout.store.is_file()
    log(f"search: {'resuming' if resume else 'starting'} in {out}")
    setup = build_setup(search_config, log)
    try:  # the Search locks its folder (`pearl search --resume` on it meanwhile is refused)
        with Search(
            search_config, out, setup, resume=resume, log=log, show_progress=progress
        ) as search:
            summary = search.run()
    except SearchError as error:
        raise RunError(f"search stage: {error}") from None
    finally:
        setup.close()
    atomic_write_json(done, summary)
    return summary


def stage_winners(config: RunConfig, run_dir: Path, log: Log) -> list[dict]:
    layout = RunLayout(run_dir)
    path = layout.winners
    if path.is_file():
        return read_json(path)
    from pipeline.search_report import winners_of
    from pipeline.store import ResultsStore

    with ResultsStore(layout.search.store) as store:
        rows = store.scored()
    winners = winners_of(rows, config)
    if not any(w.get("arch") for w in winners):
        raise RunError(
            f"winners stage: the search in {layout.search.root} has no scored candidate; "
            "raise search.max_candidates and run again"
        )
    atomic_write_json(path, winners)
    for w in winners:
        if w.get("arch"):
            log(
                f"winner at target {w['target']:g}: {w['key']} (proxy accuracy {w['accuracy']:.3f})"
                + (f"; {w['note']}" if w.get("note") else "")
            )
    return winners


def models_to_train(config: RunConfig, winners: list[dict]) -> list[tuple[str, str]]:
    """``(label, arch string)`` of each distinct winner, then the baseline."""
    from models.baselines import resolve_arch

    units, seen = [], set()
    for w in winners:
        if w.get("arch") and w["key"] not in seen:
            seen.add(w["key"])
            units.append((searched_label(w["key"]), w["arch"]))
    if config.train.baseline:
        try:
            arch = resolve_arch(
                config.train.baseline, config.space.input_size, config.space.num_classes
            )
        except ValueError as error:
            raise RunError(f"train.baseline: {error}") from None
        name = config.train.baseline if "|" not in config.train.baseline else arch.key()
        units.append((baseline_label(name), arch.encode()))
    return units


def stage_train(config: RunConfig, run_dir: Path, units, log: Log, progress: bool) -> dict:
    """Train every unit with every loss; returns ``{label: {loss: metrics}}``."""
    from pipeline.final_jobs import FinalTrainData
    from pipeline.training import METRICS_FILE, STATE_FILE, TrainSettings, input_statistics, train

    layout = RunLayout(run_dir)
    stage = config.train
    results: dict[str, dict[str, dict]] = {}
    pending = []
    for label, arch in units:
        for loss in stage.losses:
            folder = layout.train_dir(label, loss)
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
    if any(LOSSES[loss].needs_teacher for _, _, loss, _ in pending):
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
    if config.search.executor == "ray":
        data = FinalTrainData(train_arrays, test_arrays, teacher)
        return _train_on_ray(config, pending, data, results, log)
    for label, arch, loss, folder in pending:
        log(f"train: {label} with {loss} for {stage.epochs} epochs -> {folder}")
        settings = TrainSettings.from_recipe(stage, model=arch, loss=loss)
        run_info = _run_info(config, label, loss)
        results.setdefault(label, {})[loss] = train(
            settings,
            train_arrays,
            test_arrays,
            folder,
            teacher=teacher if LOSSES[loss].needs_teacher else None,
            resume=(folder / STATE_FILE).is_file(),
            run_info=run_info,
            progress=progress,
            threads=stage.threads or None,
            compute=config.compute,
        )
    return results


def _run_info(config: RunConfig, label: str, loss: str) -> dict[str, Any]:
    """What a final training records beside its settings (compared on resume)."""
    return {
        "data": {
            "path": config.train_data(),
            "train_limit": config.train.train_images,
            "test_limit": config.train.test_images,
        },
        "teacher": config.teacher.spec if LOSSES[loss].needs_teacher else None,
        "command": f"pearl run (stage train, {label})",
    }


def _train_on_ray(config: RunConfig, pending, data, results: dict, log: Log) -> dict:
    """The final trainings of `pending` in parallel as Ray tasks (`pipeline.final_jobs`):
    the data and teacher go to the cluster once; each finished training's files are written
    into the run folder as it ends.  Failures are reported after the others have finished."""
    from pipeline.final_jobs import FinalTrainJob, collect
    from pipeline.ray_executor import RayExecutor, RayExecutorError, worker_compute
    from pipeline.training import TrainSettings

    threads = max(1, int(config.ray.cpus_per_candidate))  # each task holds this many CPUs
    jobs = [
        FinalTrainJob(
            label,
            loss,
            TrainSettings.from_recipe(config.train, model=arch, loss=loss),
            str(folder),
            _run_info(config, label, loss),
            needs_teacher=LOSSES[loss].needs_teacher,
            threads=threads,
            compute=worker_compute(config.compute, config.ray),
        )
        for label, arch, loss, folder in pending
    ]
    try:
        executor = RayExecutor(None, config.ray, log, device=config.compute.device)
    except RayExecutorError as error:
        raise RunError(f"train stage: {error}") from None

    def done(job: FinalTrainJob, metrics: dict) -> None:
        results.setdefault(job.label, {})[job.loss] = metrics
        log(f"train: {job.label} with {job.loss} done -> {job.folder}")

    try:
        log(f"train: {len(jobs)} trainings of {config.train.epochs} epochs on Ray")
        failures = collect(executor.train_final(data, jobs), done)
    finally:
        executor.close()
    if failures:
        raise RunError("train stage: final training failed for " + "; ".join(failures))
    return results


def _load_train_data(config: RunConfig):
    import numpy as np

    from pipeline.data import DataError, load_dataset

    try:
        train, test = load_dataset(
            resolve_path(config.train_data()), image_size=config.space.input_size
        )
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

    layout = RunLayout(run_dir)
    loss = config.train.losses[0]
    bundles = {}
    for label, arch in units:
        out = layout.export_dir(label)
        metadata = layout.bundle_metadata(label)
        if not metadata.is_file():
            log(f"export: {label} ({', '.join(config.export.formats)}) -> {out}")
            try:
                request = ExportRequest(
                    arch,
                    out,
                    weights=layout.train_dir(label, loss) / MODEL_FILE,
                    data_path=resolve_path(config.train_data()),
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
    from device_bench.spec import BackendSpec

    if config.export.device:
        return config.export.device
    for spec in config.latency.backends:
        if BackendSpec.parse(spec).artifact_format == "tflite":
            return spec
    return "host:tflite"


def stage_measure(config: RunConfig, run_dir: Path, bundles: dict[str, dict], log: Log) -> dict:
    """``{"device": spec, "onnx_device": "host:onnx", "rows": [...]}``, one row per file."""
    layout = RunLayout(run_dir)
    path = layout.latency
    if path.is_file():
        return read_json(path)
    from device_bench.backends import backend_from_spec
    from device_bench.cache import measure_cached
    from device_bench.measurement import MeasurementError
    from device_bench.ranking import ranking_latency_ms
    from models.export import record_measurement
    from pipeline.search_setup import measurement_cache

    device = target_device(config)
    backends = {}
    cache = measurement_cache(config.latency.measurement_cache)
    rows = []
    try:
        for label, metadata in bundles.items():
            for fmt, entry in metadata["files"].items():
                spec = "host:onnx" if fmt == "onnx" else device
                if spec not in backends:
                    backends[spec] = backend_from_spec(spec)
                log(f"measure: {label} {fmt} on {spec}")
                file_path = layout.export_dir(label) / entry["path"]
                try:
                    measurement, _ = measure_cached(backends[spec], file_path, cache)
                except MeasurementError as error:
                    raise RunError(f"measure stage: {error}") from None
                record_measurement(
                    layout.export_dir(label),
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
    atomic_write_json(path, result)
    return result


# -- the whole run ---------------------------------------------------------------------------


def prepare_run_dir(config: RunConfig, run_dir: Path, *, resume: bool) -> None:
    """Create the run folder with its config, or check a resumed one still holds the config its
    finished stages used."""
    layout = RunLayout(run_dir)
    saved = layout.config
    if resume:
        if not saved.is_file():
            raise RunError(f"{run_dir} has no {saved.name}: not a pearl run folder")
        recorded, now = saved_config_hash(saved), config_hash(config)
        if recorded is not None and recorded != now:
            raise RunError(
                f"{saved} changed since this run started (hash {recorded} then, {now} now): its "
                "finished stages used the old settings; restore the file or start a new run"
            )
        return
    if saved.is_file():
        raise RunError(
            f"{run_dir} already holds a run; continue it with `pearl run --resume {run_dir}` "
            "or choose another --out folder"
        )
    if run_dir.is_dir() and folder_contents(run_dir):
        what = "a `pearl search`" if layout.find_search() else "other files"
        raise RunError(
            f"{run_dir} is not empty (it holds {what}); give a new or empty --out folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)


def discard_unstarted_run(run_dir: Path) -> bool:
    """Remove a run folder that holds nothing but its config (its first stage failed before
    writing anything): a failed start leaves no half-made folder.  True when removed."""
    layout = RunLayout(run_dir)
    if not run_dir.is_dir() or folder_contents(run_dir) != [layout.config.name]:
        return False
    layout.config.unlink()
    run_dir.rmdir()
    return True


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
        "bundles": {label: str(RunLayout(run_dir).export_dir(label)) for label in bundles},
        "latency": latency,
        "report": str(report),
    }
