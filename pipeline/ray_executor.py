"""The Ray executor (``search.executor = "ray"``; DESIGN.md "Search methods and where they
run"): candidates train as Ray tasks, on this machine's cores and GPUs (a local Ray started
here, ``ray.address = ""``) or on a cluster (``"auto"``, ``"HOST:PORT"`` or
``"ray://HOST:PORT"``).

- The `ProxyTask` (arrays, [proxy] settings, teacher signal, seed) goes to the object store
  once per search; each job is a small remote task, and each worker process fetches the task
  once and keeps it for every later candidate of the search.
- Each task asks for ``ray.cpus_per_candidate`` CPUs (its torch threads) and
  ``ray.gpus_per_candidate`` GPUs (fractions share one GPU); a worker lost mid-candidate is
  retried ``ray.max_retries`` times; a candidate that still fails comes back as an exception
  object, which the search stores as a failed row with its error.
- Results are yielded as each finishes (`ray.wait`), in any order; the driver stores them.
- `close()` shuts down the Ray this executor started (a joined cluster keeps running).

`pearl run`'s final trainings go through the same tasks (`train_final`,
`pipeline.final_jobs`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from pipeline.config import RayConfig
from pipeline.executor import ProxyTask, TrainJob
from pipeline.search_setup import SearchError

INSTALL_HINT = 'pip install -e ".[ray]"'
CONNECT_TIMEOUT_S = 10.0  # an address that does not answer within this is an error
WAIT_S = 60.0  # how often a long wait checks that the cluster can still run the jobs


class RayExecutorError(SearchError):
    """Ray is missing, cannot be reached or cannot run a candidate; the message says what to
    do."""


class CandidateLostError(RuntimeError):
    """The worker training a candidate died on every try (stored as the candidate's error)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayExecutorError(
            'search.executor = "ray" needs Ray, which is not installed here; install it with '
            f'`{INSTALL_HINT}` or set search.executor = "inprocess"'
        ) from None
    return ray


class RayExecutor:
    """Trains candidates as Ray tasks (module docstring); `task` may be None when only final
    trainings (`train_final`) run through it."""

    trains_beside_driver = True  # set from the cluster in __init__ (see `_shares_this_host`)

    def __init__(
        self, task: ProxyTask | None, ray_config: RayConfig, log, *, device: str | None = None
    ) -> None:
        """`device`: the [compute] device the workers train on (default: the task's)."""
        device = device or getattr(task and task.compute, "device", "auto")
        check_device(device, ray_config)
        self.ray = import_ray()
        self.config = ray_config
        self.log = log
        self.started = connect(self.ray, ray_config, log)
        try:
            check_resources(self.ray, ray_config)
            if device == "auto" and ray_config.gpus_per_candidate == 0:
                gpus = self.ray.cluster_resources().get("GPU", 0)
                if gpus:
                    log(
                        f"ray: the cluster has {gpus:g} GPUs but ray.gpus_per_candidate = 0: "
                        "candidates train on CPUs"
                    )
            self.trains_beside_driver = _shares_this_host(self.ray, ray_config)
            options = dict(
                num_cpus=ray_config.cpus_per_candidate,
                num_gpus=ray_config.gpus_per_candidate,
                max_retries=ray_config.max_retries,
            )
            self._score = self.ray.remote(_score_in_worker).options(**options)
            self._final = self.ray.remote(_train_final_in_worker).options(**options)
            self._task_ref = None
            if task is not None:  # once per search; jobs carry only the reference
                self._task_ref = [self.ray.put(worker_task(task, ray_config))]
        except BaseException:
            self.close()
            raise

    # -- Executor ---------------------------------------------------------------------------

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]:
        if self._task_ref is None:
            raise ValueError("this RayExecutor was built without a ProxyTask")
        pending = {self._score.remote(self._task_ref, job): job for job in jobs}
        yield from self._results(pending)

    def train_final(self, data, jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Run `pipeline.final_jobs.FinalTrainJob`s with `data` (a `FinalTrainData`, shipped
        once); yields ``(job, FinalTrainResult or exception)`` as each finishes."""
        data_ref = [self.ray.put(data)]
        pending = {self._final.remote(data_ref, job): job for job in jobs}
        yield from self._results(pending)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    # -- pieces -----------------------------------------------------------------------------

    def _results(self, pending: dict) -> Iterator[tuple[Any, Any]]:
        """Yield each job's result as it finishes; jobs not collected (the driver stopped
        early) are cancelled."""
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                if not done:
                    check_resources(self.ray, self.config)
                    continue
                for ref in done:
                    job = pending.pop(ref)
                    yield job, self._outcome(ref)
        finally:
            for ref in pending:
                try:
                    self.ray.cancel(ref)
                except Exception as error:  # finished meanwhile, or its worker is gone
                    self.log(f"ray: could not cancel a candidate: {error}")

    def _outcome(self, ref) -> Any:
        """The task's return value, or the exception that ended it (never raised)."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as error:  # the job itself raised: its own exception
            cause = getattr(error, "cause", None)
            return cause if isinstance(cause, BaseException) else error
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError) as error:
            tries = 1 + self.config.max_retries
            return CandidateLostError(
                f"the Ray worker training it died {tries} times (ray.max_retries = "
                f"{self.config.max_retries}): {type(error).__name__}: {error}"
            )
        except exceptions.RayError as error:  # out of memory, cancelled, object lost...
            return error


# -- connecting -----------------------------------------------------------------------------


def connect(ray, config: RayConfig, log) -> bool:
    """Start a local Ray (``address = ""``) or join a cluster; True when this call started
    Ray (and `close` must shut it down).  A Ray already running in this process is used as
    it is."""
    if ray.is_initialized():
        log("ray: using the Ray session already running in this process")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    if not config.address:
        ray.init(num_cpus=_usable_cores(), include_dashboard=False, **quiet)
        log(f"ray: started a local Ray ({_describe(ray.cluster_resources())})")
        return True
    probe(config.address)
    try:
        ray.init(address=config.address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise RayExecutorError(
            f"cannot join the Ray cluster at ray.address = {config.address!r}: {error}; start "
            'one with `ray start --head` or set ray.address = "" to start a local Ray'
        ) from None
    log(f"ray: joined {config.address} ({_describe(ray.cluster_resources())})")
    return False


def probe(address: str) -> None:
    """Raise `RayExecutorError` unless something answers at `address` within
    `CONNECT_TIMEOUT_S` (Ray itself waits minutes for a head that does not answer)."""
    host_port = _host_port(address)
    if host_port is None:
        return  # "auto" with no cluster recorded: ray.init says so at once
    host, port = host_port
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise RayExecutorError(
            f"nothing answers at ray.address = {address!r} ({host}:{port}: {error}; time-out "
            f"{CONNECT_TIMEOUT_S:g} s); start the head with `ray start --head`, check the "
            'address and the firewall, or set ray.address = "" to start a local Ray'
        ) from None


def _host_port(address: str) -> tuple[str, int] | None:
    """The head's (host, port): ``ray://HOST:PORT``, ``HOST:PORT``, or for ``auto`` the
    cluster Ray recorded ($RAY_ADDRESS, else the last ``ray start`` on this machine)."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # none recorded (ray.init reports it) or a changed private API
            return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayExecutorError(
            f'ray.address = {address!r} is not an address; use "" (a local Ray), "auto", '
            '"HOST:PORT" or "ray://HOST:PORT"'
        )
    return host, int(port)


def check_device(device: str, config: RayConfig) -> None:
    """A GPU device needs GPUs per candidate (Ray hides the GPUs from tasks that ask none)."""
    if device.startswith("cuda") and config.gpus_per_candidate == 0:
        raise RayExecutorError(
            f"compute.device = {device!r} but ray.gpus_per_candidate = 0, so Ray gives the "
            "workers no GPU; set ray.gpus_per_candidate (e.g. 1, or 0.5 for two candidates "
            'per GPU) or compute.device = "cpu"'
        )


def check_resources(ray, config: RayConfig) -> None:
    """Raise unless some node of the cluster offers one candidate's CPUs and GPUs (Ray would
    otherwise keep the tasks pending for ever)."""
    need_cpus, need_gpus = config.cpus_per_candidate, config.gpus_per_candidate
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for node in nodes:
        have = node.get("Resources", {})
        if have.get("CPU", 0) >= need_cpus and have.get("GPU", 0) >= need_gpus:
            return
    offered = "; ".join(_describe(n.get("Resources", {})) for n in nodes) or "no node is alive"
    raise RayExecutorError(
        f"no Ray node offers what one candidate asks for ({need_cpus:g} CPUs, {need_gpus:g} "
        f"GPUs; nodes: {offered}); lower ray.cpus_per_candidate / ray.gpus_per_candidate or "
        "add nodes"
    )


def _shares_this_host(ray, config: RayConfig) -> bool:
    """Can candidates train on this machine while the driver works (a local Ray, or a
    cluster with a node here)?  Then host timing waits until no candidate trains."""
    if not config.address:
        return True
    try:
        here = ray.util.get_node_ip_address()
        return any(
            n.get("Alive") and n.get("NodeManagerAddress") == here and n["Resources"].get("CPU")
            for n in ray.nodes()
        )
    except Exception:  # cannot tell: assume it does (timing then never overlaps training)
        return True


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _describe(resources: dict) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    return f"{cpus:g} CPUs, {gpus:g} GPUs"


# -- in the workers ---------------------------------------------------------------------------


def worker_compute(compute, config: RayConfig):
    """The [compute] section as a worker applies it: Ray chooses the GPU (each worker sees only
    the GPUs it was given, as cuda:0), so ``cuda:N`` becomes ``cuda``."""
    device = getattr(compute, "device", "")
    if config.gpus_per_candidate > 0 and device.startswith("cuda:"):
        return replace(compute, device="cuda")
    return compute


def worker_task(task: ProxyTask, config: RayConfig) -> ProxyTask:
    """The task as the workers run it: torch threads = the CPUs each candidate holds, and the
    device of `worker_compute`."""
    threads = max(1, math.floor(config.cpus_per_candidate))
    return replace(task, threads=threads, compute=worker_compute(task.compute, config))


_FETCHED: dict[str, Any] = {}  # per worker process: the object of the search it works for


def _fetch_once(holder: list) -> Any:
    """The object behind ``holder[0]`` (an ObjectRef, wrapped so that Ray does not resolve it
    per task), fetched once per worker process and kept until another search's arrives."""
    import ray

    key = holder[0].hex()
    if key not in _FETCHED:
        _FETCHED.clear()
        _FETCHED[key] = ray.get(holder[0])
    return _FETCHED[key]


def _score_in_worker(task_holder: list, job: TrainJob) -> Any:
    return _fetch_once(task_holder).score(job)


def _train_final_in_worker(data_holder: list, job) -> Any:
    return job.run(_fetch_once(data_holder))
