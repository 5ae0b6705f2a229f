"""`run_units`: run units of work on one process, local processes, or a Dask cluster.

The engine is chosen by two arguments, the same on every command (``--workers``,
``--scheduler``):

=====================================  ==================================================
``workers=None`` (or 1), no scheduler   a loop in this process (what a single run does)
``workers=N``, no scheduler             N local worker processes: a Dask ``LocalCluster``
                                        when ``dask.distributed`` is installed (the
                                        ``parallel`` extra), else a process pool
``scheduler="tcp://host:8786"``         the Dask scheduler at that address (any cluster:
                                        ``dask-jobqueue`` on SLURM/PBS/SGE, Kubernetes, ...)
``scheduler=<Client or cluster>``       that Dask client or cluster object
=====================================  ==================================================

Units already done are skipped before anything is sent; each unit runs under its lock and
checks ``done()`` again, so concurrent runs share the work instead of repeating it. A worker that
dies (killed, out of memory) loses only its unit: Dask reschedules it on another worker, and the
process pool is rebuilt and the unfinished units resubmitted. A unit that raises is reported (its
error kept) after every other unit has finished; the outputs of the others stay, so running the
same command again redoes only what failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from filelock import FileLock
from tqdm.auto import tqdm

from neurotorch._options import check_int
from neurotorch.config import show_progress
from neurotorch.errors import MissingDependencyError, ParameterError, UnitsFailedError
from neurotorch.parallel.units import Unit, UnitResult

log = logging.getLogger(__name__)
#: How many times the process pool is rebuilt after a worker died, before giving up.
POOL_REBUILDS = 3


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
        return UnitResult(unit.key, "failed", error=f"{type(exc).__name__}: {exc}", seconds=elapsed)
    return UnitResult(unit.key, "ran", value=value, seconds=time.perf_counter() - start)


def run_units(
    units: Sequence[Unit],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    only: Iterable[int] | None = None,
    progress: bool | None = None,
    desc: str = "units",
) -> list[UnitResult]:
    """Run every unit that is not done yet; return one `UnitResult` per unit, in order.

    Parameters
    ----------
    units
        The units (see `neurotorch.parallel.units`); their keys must be unique.
    workers
        Local worker processes (see the module docstring); ``None`` or 1 runs in this process.
    scheduler
        A Dask scheduler address (``"tcp://host:8786"``), or a Dask ``Client`` or cluster object.
    only
        Positions of the units to run (a job array runs one position per task); default all.
    progress
        Show a progress bar (default: ``NEUROTORCH_PROGRESS``).
    desc
        What the progress bar calls the units.

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
        for result in _dispatch(todo, workers, scheduler):
            results[result.key] = result
            bar.update()
    ordered = [results[unit.key] for unit in selected]
    failed = [r for r in ordered if r.status == "failed"]
    if failed:
        raise UnitsFailedError(ordered)
    return ordered


def _select(units: Sequence[Unit], only: Iterable[int] | None) -> list[Unit]:
    units = list(units)
    keys = [unit.key for unit in units]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ParameterError(f"unit keys must be unique; repeated: {repeated[:5]}.")
    if only is None:
        return units
    positions = [check_int("unit index", k, minimum=0, maximum=len(units) - 1) for k in only]
    return [units[k] for k in positions]


def _dispatch(units: list[Unit], workers: int | None, scheduler: Any):
    """Results of ``units`` as they complete, on the engine the arguments choose."""
    if not units:
        return iter(())
    if scheduler is not None:
        return _on_dask(units, scheduler)
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


def _on_local_dask(units: list[Unit], workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        yield from _gather(client, units)


def _on_dask(units: list[Unit], scheduler: Any):
    try:
        from distributed import Client
    except ImportError as exc:
        raise MissingDependencyError(
            "scheduler= needs dask.distributed: pip install 'neurotorch[parallel]'."
        ) from exc
    if isinstance(scheduler, Client):
        yield from _gather(scheduler, units)
        return
    with Client(scheduler) as client:  # an address or a cluster object
        yield from _gather(client, units)


def _gather(client: Any, units: list[Unit]):
    from distributed import as_completed as dask_completed

    futures = client.map(execute_unit, units, key=[unit.key for unit in units], pure=False)
    for future in dask_completed(futures):
        try:
            yield future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: its worker died repeatedly
            yield UnitResult(future.key, "failed", error=f"{type(exc).__name__}: {exc}")
