"""What a search needs before its first candidate, built from a config: the space, the data
splits, the teacher signal, the executor that trains candidates and the latency chain that
times them.  Nothing here knows the search loop (`pipeline.search`) or a search method
(`pipeline.methods`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import SearchConfig
from pipeline.config_paths import resolve_path
from pipeline.executor import Executor, InProcessExecutor, ProxyTask
from pipeline.registry import LOSSES, SEARCH_METHODS


class SearchError(RuntimeError):
    """The search cannot go on; the message says why and what to do."""


@dataclass
class SearchSetup:
    """Everything a search needs, built from a config (data, space, teacher, executor...)."""

    config: SearchConfig
    space: Any
    reward_spec: Any
    executor: Executor
    chain: Any  # LatencyChain or None (reward cost macs / params / estimated memory)
    teacher_note: str = ""
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()


def load_splits(config: SearchConfig):
    """``(mini_train, mini_val)`` from the config's data section."""
    import numpy as np

    from pipeline.data import load_dataset, split_train_val

    train, _ = load_dataset(resolve_path(config.data.path), image_size=config.space.input_size)
    mini_train, mini_val = split_train_val(train, config.data.val_fraction, config.data.split_seed)
    if config.data.train_images:
        mini_train = mini_train.take(np.arange(min(config.data.train_images, len(mini_train))))
    if config.data.val_images:
        mini_val = mini_val.take(np.arange(min(config.data.val_images, len(mini_val))))
    return mini_train, mini_val


def proxy_teacher(config: SearchConfig, mini_train):
    """``(CachedTeacher, cache path, hit)``: the teacher's logits for every proxy-training batch
    of this config (computed once, then read from the teacher-logit cache)."""
    from pipeline.teacher_cache import cached_teacher

    return cached_teacher(
        config.teacher.spec,
        mini_train,
        batch_size=config.proxy.batch_size,
        seed=config.search.seed,
        epochs=config.proxy.epochs,
        members=LOSSES[config.proxy.loss].teacher == "members",
        cache_dir=config.teacher.cache_dir,
        input_size=config.space.input_size,
        compute=config.compute,
    )


def build_setup(config: SearchConfig, log: Callable[[str], None]) -> SearchSetup:
    space = SEARCH_METHODS[config.search.method].build_space(config)
    mini_train, mini_val = load_splits(config)
    if mini_train.num_classes != space.num_classes:
        raise SearchError(
            f"{config.data.path} has {mini_train.num_classes} classes but space.num_classes is "
            f"{space.num_classes}; set space.num_classes = {mini_train.num_classes}"
        )
    teacher, note = None, ""
    if LOSSES[config.proxy.loss].needs_teacher:
        started = time.perf_counter()
        teacher, path, hit = proxy_teacher(config, mini_train)
        seconds = time.perf_counter() - started
        note = f"teacher logits {'read from' if hit else 'computed into'} {path} ({seconds:.1f} s)"
        log(note)
    task = proxy_task(config, mini_train, mini_val, teacher)
    executor = build_executor(config, task, log)
    setup = SearchSetup(config, space, config.reward.spec(), executor, None, note)
    setup.closers.append(executor.close)
    reward = config.reward
    if reward.cost == "latency_ms" or (reward.needs_memory and reward.memory_source == "measured"):
        setup.chain = _latency_chain(config, setup, log)
    return setup


def proxy_task(config: SearchConfig, mini_train, mini_val, teacher) -> ProxyTask:
    """The proxy task of `config` (its [proxy] section, seed, threads and [compute])."""
    return ProxyTask(
        mini_train,
        mini_val,
        config.proxy,
        teacher,
        seed=config.search.seed,
        threads=config.proxy.threads,
        compute=config.compute,
    )


def build_executor(config: SearchConfig, task: ProxyTask, log: Callable[[str], None]) -> Executor:
    """The executor that ``search.executor`` names (Ray: `pipeline.ray_executor`), or KDAS's
    shared weights (`pipeline.kdas_shared`) with ``kdas.evaluation = "shared"``."""
    if config.search.method == "kdas" and config.kdas.evaluation == "shared":
        from pipeline.kdas_shared import SharedWeightExecutor

        return SharedWeightExecutor(task, config.kdas.build(config.space))
    if config.search.executor == "ray":
        from pipeline.ray_executor import RayExecutor

        return RayExecutor(task, config.ray, log)
    return InProcessExecutor(task)


def _latency_chain(config: SearchConfig, setup: SearchSetup, log: Callable[[str], None]):
    from functools import partial

    from latency_tables.table import TableError
    from models.export import latency_artifact
    from pipeline.latency_chain import LatencyChain, WorkerExporter

    converter = None  # None: convert in this process (LatencyChain's default)
    if config.latency.overlap:
        converter = WorkerExporter(config.latency.export_cache_dir, num_threads=1)
        setup.closers.append(converter.close)
    exporter = converter
    if config.latency.direct_files:
        from pipeline.latency_files import GuardedExporter

        guard = GuardedExporter(
            config.latency.export_cache_dir,
            converter or partial(latency_artifact, cache_dir=config.latency.export_cache_dir),
            check_every=config.latency.direct_check_every,
            log=log,
        )
        setup.closers.append(lambda: log(guard.summary()))
        exporter = guard
    try:
        chain = LatencyChain(
            config.latency.backends,
            export_cache_dir=config.latency.export_cache_dir,
            measurement_cache=measurement_cache(config.latency.measurement_cache),
            threads=config.latency.threads,
            exporter=exporter,
            log=log,
            precision=config.latency.precision,
        )
    except TableError as error:  # a table of another precision than latency.precision
        setup.close()
        raise SearchError(str(error)) from None
    if chain.best_rank() is None:
        setup.close()
        details = "; ".join(f"{s['spec']}: {s['why']}" for s in chain.status())
        raise SearchError(f"no latency backend is available ({details})")
    return chain


def measurement_cache(setting: str):
    """The measurement cache that ``latency.measurement_cache`` names: "" device_bench's
    default file, "none" no cache (None), else that SQLite file."""
    if setting == "none":
        return None
    from device_bench.cache import MeasurementCache

    return MeasurementCache(setting or None)
