"""Work that can outgrow one machine, as idempotent units on an existing engine (Dask).

`run_units` runs units of work (`Unit`: ``key``, ``done()``, ``run()``, ``lock_path``) in this
process, on local worker processes, or on any Dask cluster (``scheduler=``). The units of each
command live beside the code they run (the prepared store, verification, lesion network mapping,
the M/EEG grid); this package knows nothing about datasets.
"""

from __future__ import annotations

from neurotorch.parallel.engine import execute_unit, run_units, shared_engine, stop_requested
from neurotorch.parallel.units import Unit, UnitResult, one_thread, result_lines, unit_lines

__all__ = [
    "Unit",
    "UnitResult",
    "execute_unit",
    "one_thread",
    "result_lines",
    "run_units",
    "shared_engine",
    "stop_requested",
    "unit_lines",
]
