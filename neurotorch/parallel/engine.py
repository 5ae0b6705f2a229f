"""`run_units`: run units of work on one process, local processes, or a Dask cluster.

The engine is chosen by two arguments, the same on every command (``--workers``,
``--scheduler``):

=====================================  ==================================================
``workers=None`` (or 1), no scheduler   a loop in this process (what a single run does)
``workers=N``, no scheduler             N local worker processes: a Dask ``LocalCluster``
                                        when ``dask.distributed`` is installed (the
                                        ``parallel`` extra), else a process pool
``workers=N, threads=True``             N threads of this process (units that wait on the
                                        network: downloads)
``scheduler="tcp://host:8786"``         the Dask scheduler at that address (any cluster:
                                        ``dask-jobqueue`` on SLURM/PBS/SGE, Kubernetes, ...)
``scheduler="scheduler.json"``          the scheduler a Dask scheduler file describes
                                        (``dask scheduler --scheduler-file``)
``scheduler=<Client or cluster>``       that Dask client or cluster object
=====================================  ==================================================

Units already done are skipped before anything is sent; each unit runs under its lock and
checks ``done()`` again, so concurrent runs share the work instead of repeating it. A worker that
dies (killed, out of memory) loses only its unit: Dask reschedules it on another worker, and the
process pool is rebuilt and the unfinished units resubmitted. A unit that raises is reported (its
error kept) after every other unit has finished; the outputs of the others stay, so running the
same command again redoes only what failed.

Units that run in threads can stop early when the run is interrupted (Ctrl-C): they poll
`stop_requested` between pieces of work (a download between chunks), and the run waits for
them before it re-raises the interrupt, so nothing is still writing when it returns.

The local Dask workers this module starts may start processes of their own (Dask's workers are
daemonic by default, which forbids it): a unit may check a file in a child process that the file
can crash (`neurotorch.io.integrity`). On a cluster started by other means, a unit whose file
crashes its worker is retried and then reported failed (``KilledWorker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock
from tqdm.auto import tqdm

from neurotorch._options import check_int
from neurotorch.config import show_progress
from neurotorch.errors import (
    MissingDependencyError,
    ParameterError,
    UnitIndexError,
    UnitsFailedError,
)
from neurotorch.parallel.units import Unit, UnitResult

log = logging.getLogger(__name__)
#: How many times the process pool is rebuilt after a worker died, before giving up.
POOL_REBUILDS = 3
# the stop event of the threaded run the current thread works for (see `stop_requested`)
_thread_run = threading.local()


def stop_requested() -> bool:
    """Whether the threaded run this unit runs in was interrupted: a long unit polls it and
    returns (or raises) early; always False outside a threaded run."""
    stop = getattr(_thread_run, "stop", None)
    return stop is not None and stop.is_set()


def execute_unit(unit: Unit) -> UnitResult:
    """Run one unit under its lock, unless it is done; never raises for the unit's own error."""
    start = time.perf_counter()
    lock: AbstractContextManager = (
        nullcontext() if unit.lock_path is None else FileLock(str(unit.lock_path))
    )
    try:
        with lock:
            if unit.done():
                return UnitResult(unit.key, "skipped")
            value = unit.run()
    except Exception as exc:  # noqa: BLE001 - the unit's error is reported, not raised here
        elapsed = time.perf_counter() - start
        error = f"{type(exc).__name__}: {exc}"
        return UnitResult(unit.key, "failed", error=error, seconds=elapsed, exception=exc)
    return UnitResult(unit.key, "ran", value=value, seconds=time.perf_counter() - start)


def run_units(
    units: Sequence[Unit],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    only: Iterable[int] | None = None,
    progress: bool | None = None,
    desc: str = "units",
    threads: bool = False,
) -> list[UnitResult]:
    """Run every unit that is not done yet; return one `UnitResult` per unit, in order.

    Parameters
    ----------
    units
        The units (see `neurotorch.parallel.units`); their keys must be unique.
    workers
        Local worker processes (see the module docstring); ``None`` or 1 runs in this process.
    scheduler
        A Dask scheduler address (``"tcp://host:8786"``), a scheduler file (``.json``), or a
        Dask ``Client`` or cluster object.
    only
        Positions of the units to run (a job array runs one position per task); default all.
    progress
        Show a progress bar (default: ``NEUROTORCH_PROGRESS``).
    desc
        What the progress bar calls the units.
    threads
        Run ``workers`` units at once in threads of this process instead of worker processes
        (for units that wait on the network); ignored with a ``scheduler``.

    Raises
    ------
    UnitsFailedError
        Some units raised: after all units have finished, listing each failed key and its error;
        ``.results`` holds every unit's result.
    """
    selected = _select(units, only)
    if workers is not None:
        check_int("workers", workers, minimum=1)
    results: dict[str, UnitResult] = {}
    todo = []
    for unit in selected:
        if unit.done():
            results[unit.key] = UnitResult(unit.key, "skipped")
        else:
            todo.append(unit)
    bar = tqdm(
        total=len(selected), initial=len(results), desc=desc, disable=not show_progress(progress)
    )
    with bar:
        for result in _dispatch(todo, workers, scheduler, threads=threads):
            results[result.key] = result
            bar.update()
    ordered = [results[unit.key] for unit in selected]
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        raise UnitsFailedError(ordered)
    return ordered


@contextmanager
def shared_engine(workers: int | None = None, scheduler: Any = None) -> Iterator[dict[str, Any]]:
    """The engine of several `run_units` calls in a row (the stages of a command): yields the
    ``workers`` and ``scheduler`` to pass to each, so that N local Dask workers are started once
    for all of them rather than once per call."""
    if scheduler is not None or workers is None or workers == 1:
        yield {"workers": workers, "scheduler": scheduler}
        return
    check_int("workers", workers, minimum=1)
    try:
        import distributed  # noqa: F401
    except ImportError:  # a process pool per call
        yield {"workers": workers, "scheduler": None}
        return
    with ExitStack() as stack:
        yield {"workers": None, "scheduler": _LazyCluster(workers, stack)}


class _LazyCluster:
    """A local Dask cluster started by the first `run_units` call that has work to send."""

    def __init__(self, workers: int, stack: ExitStack):
        self.workers, self.stack, self._client = workers, stack, None

    def client(self) -> Any:
        if self._client is None:
            self._client = self.stack.enter_context(_local_client(self.workers))
        return self._client


def _select(units: Sequence[Unit], only: Iterable[int] | None) -> list[Unit]:
    units = list(units)
    keys = [unit.key for unit in units]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ParameterError(f"unit keys must be unique; repeated: {repeated[:5]}.")
    if only is None:
        return units
    positions = [check_int("unit index", k, minimum=0) for k in only]
    beyond = [k for k in positions if k >= len(units)]
    if beyond:
        positions_held = f", positions 0 to {len(units) - 1}" if units else ""
        raise UnitIndexError(
            f"unit index {beyond[0]} (--unit / only=) is past the last unit: this run has "
            f"{len(units)} unit(s){positions_held}; --list-units (or "
            "neurotorch.parallel.unit_lines) prints them."
        )
    return [units[k] for k in positions]


def _dispatch(units: list[Unit], workers: int | None, scheduler: Any, threads: bool):
    """Results of ``units`` as they complete, on the engine the arguments choose."""
    if not units:
        return iter(())
    if scheduler is not None:
        return _on_dask(units, scheduler)
    if threads:
        return _on_threads(units, workers or 1)
    if workers is None or workers == 1:
        return (execute_unit(unit) for unit in units)
    try:
        import distributed  # noqa: F401
    except ImportError:
        return _on_process_pool(units, workers)
    return _on_local_dask(units, workers)


def _on_process_pool(units: list[Unit], workers: int):
    """A stdlib process pool (spawned workers); rebuilt if a worker dies."""
    import multiprocessing

    pending = {unit.key: unit for unit in units}
    for _ in range(POOL_REBUILDS + 1):
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures: dict[Future, str] = {
                pool.submit(execute_unit, unit): key for key, unit in pending.items()
            }
            try:
                for future in as_completed(futures):
                    result = future.result()
                    del pending[futures[future]]
                    yield result
                return
            except BrokenProcessPool:
                log.warning("a worker process died; %d unit(s) are run again", len(pending))
    for key in pending:
        yield UnitResult(key, "failed", error="its worker process died repeatedly")


def _in_thread(unit: Unit, stop: threading.Event) -> UnitResult:
    _thread_run.stop = stop
    try:
        return execute_unit(unit)
    finally:
        _thread_run.stop = None


def _on_threads(units: list[Unit], workers: int) -> Iterator[UnitResult]:
    """A thread pool of this process; an interrupt asks the running units to stop
    (`stop_requested`), waits for them, then propagates."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            futures = [pool.submit(_in_thread, unit, stop) for unit in units]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextmanager
def _local_client(workers: int) -> Iterator[Any]:
    """A Dask client of a new ``LocalCluster`` of ``workers`` single-threaded processes."""
    import dask
    from distributed import Client, LocalCluster

    # non-daemonic workers may start child processes (see the module docstring); workers that
    # outlive the scheduler by a heartbeat at shutdown are not an error worth showing
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        )
        with cluster, Client(cluster) as client:
            yield client


def _on_local_dask(units: list[Unit], workers: int):
    with _local_client(workers) as client:
        yield from _gather(client, units)


def _on_dask(units: list[Unit], scheduler: Any):
    try:
        from distributed import Client
    except ImportError as exc:
        raise MissingDependencyError(
            "scheduler= needs dask.distributed: pip install 'neurotorch[parallel]'."
        ) from exc
    if isinstance(scheduler, _LazyCluster):
        scheduler = scheduler.client()
    if isinstance(scheduler, Client):
        yield from _gather(scheduler, units)
        return
    with _connect(Client, scheduler) as client:
        yield from _gather(client, units)


def _connect(client_class: type, scheduler: Any) -> Any:
    """A client of the scheduler at an address, in a scheduler file, or of a cluster object;
    `ParameterError` naming the address when nothing answers there."""
    try:
        if isinstance(scheduler, str) and scheduler.endswith(".json"):
            if not Path(scheduler).is_file():
                raise ParameterError(
                    f"scheduler={scheduler!r}: no such scheduler file; give the file the "
                    "scheduler writes (dask scheduler --scheduler-file PATH) or its address."
                )
            return client_class(scheduler_file=scheduler)
        return client_class(scheduler)  # an address or a cluster object
    except OSError as exc:  # includes the connect timeout
        raise ParameterError(
            f"scheduler={scheduler!r}: no Dask scheduler answered ({exc}); start one (dask "
            "scheduler, a dask-jobqueue cluster) or check the address (tcp://host:8786)."
        ) from exc


def _gather(client: Any, units: list[Unit]):
    from distributed import as_completed as dask_completed

    futures = client.map(execute_unit, units, key=[unit.key for unit in units], pure=False)
    for future in dask_completed(futures):
        try:
            yield future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: its worker died repeatedly
            yield UnitResult(future.key, "failed", error=f"{type(exc).__name__}: {exc}")
