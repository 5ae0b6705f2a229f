"""Units of work: idempotent, atomic pieces that any engine can run, in any order, more than once.

A unit is a small picklable object with

* ``key``: a stable, unique name (``"prepare/sub-01/ses-03"``), used in progress, errors and as the
  task key of a distributed engine;
* ``done()``: whether its outputs already exist, complete and current (a manifest written last,
  checked against the inputs), so a rerun skips it;
* ``run()``: do the work and write the outputs atomically (`neurotorch.io.atomic`, manifest last),
  returning a small, picklable summary; running it again, or twice at once, gives the same files;
* ``lock_path``: a file the engine locks around ``done()`` + ``run()``, so two runs started at once
  never do a unit twice at the same time (``None``: the unit needs no lock).

A lost worker costs only its unit: nothing it half wrote is ever read (atomic writes), and the
unit is run again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Status = Literal["ran", "skipped", "failed"]


@runtime_checkable
class Unit(Protocol):
    """What an engine needs of a unit of work (see the module docstring)."""

    @property
    def key(self) -> str: ...

    @property
    def lock_path(self) -> Path | None: ...

    def done(self) -> bool: ...

    def run(self) -> Any: ...


@dataclass(frozen=True)
class UnitResult:
    """What became of one unit.

    Attributes
    ----------
    key
        The unit's key.
    status
        ``"ran"``, ``"skipped"`` (already done, by an earlier or a concurrent run) or ``"failed"``.
    value
        What ``run()`` returned (``None`` when skipped or failed).
    error
        ``"<ExceptionType>: <message>"`` of a failed unit, else ``None``.
    seconds
        Time spent in the unit, on its worker.
    exception
        The exception a failed unit raised, where it could be brought back (``None`` when its
        worker died), so that a command can re-raise it as its own error.
    """

    key: str
    status: Status
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch and the BLAS/OpenMP pools of numpy and scipy on one thread inside the block: a unit's
    bytes then do not depend on the core count of the machine or worker it ran on (a
    multi-threaded matrix product rounds differently; Dask's workers start with one BLAS thread,
    the calling process with one per core)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def unit_lines(units: Sequence[Unit]) -> list[str]:
    """One line per unit, for a job array: its position (the ``only=`` / ``--unit`` index),
    whether it is done, and its key."""
    width = len(str(max(len(units) - 1, 0)))
    return [
        f"{index:>{width}}  {'done' if unit.done() else 'todo'}  {unit.key}"
        for index, unit in enumerate(units)
    ]


def result_lines(results: Sequence[UnitResult]) -> list[str]:
    """One line per result: the unit's status and key, and the error of a failed one."""
    return [
        f"{result.status}  {result.key}" + (f"  {result.error}" if result.error else "")
        for result in results
    ]
