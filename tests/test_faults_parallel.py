"""Fault injection of the units of work: a units folder of another run or of the user, a unit run
before the stage it needs, the result asked before the units are done, bad split sizes, unit
indices and worker counts, and Dask schedulers that are not there.

Each case calls what a user would call and records how it failed (`tests/faults/framework.py`):
a named error of the expected class whose message names the folder, stage, value or address.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faults.framework import Fault, run_fault, tmp_case
from parallel_commands import plan, small_connectome
from parallel_units import SquaresUnit

from neurotorch.errors import DataNotFoundError, DatasetExistsError, ParameterError
from neurotorch.parallel import run_units

Case = tuple[Callable[[], object], str]


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    return small_connectome(tmp_path_factory.mktemp("connectome") / "conn")


def another_run(tmp: Path, connectome) -> Case:
    plan(tmp / "units", *connectome, seed=0)
    return (lambda: plan(tmp / "units", *connectome, seed=1)), str(tmp / "units")


def users_folder(tmp: Path, connectome) -> Case:
    (tmp / "units").mkdir()
    (tmp / "units" / "notes.txt").write_text("mine")
    return (lambda: plan(tmp / "units", *connectome)), str(tmp / "units")


def unit_before_its_stage(tmp: Path, connectome) -> Case:
    units = plan(tmp / "units", *connectome).units("permutations")
    return units[0].run, "stage 'maps'"


def result_before_units(tmp: Path, connectome) -> Case:
    work = plan(tmp / "units", *connectome)
    run_units(work.units()[:1], progress=False)
    return work.result, "lnm/maps/file-001_lesions-000"


def split_size(name: str, value: object) -> Callable[[Path, object], Case]:
    def make(tmp: Path, connectome) -> Case:
        return (lambda: plan(tmp / "units", *connectome, **{name: value})), name

    return make


def squares(tmp: Path) -> list[SquaresUnit]:
    return [SquaresUnit(str(tmp), k) for k in range(3)]


def engine_case(culprit: str, **engine) -> Callable[[Path, object], Case]:
    def make(tmp: Path, connectome) -> Case:
        return (lambda: run_units(squares(tmp), progress=False, **engine)), culprit

    return make


def unanswered_scheduler(tmp: Path, connectome) -> Case:
    import dask

    def call() -> None:
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            run_units(squares(tmp), scheduler="tcp://127.0.0.1:9", progress=False)

    return call, "tcp://127.0.0.1:9"


# (name, error, make(scratch folder, connectome) -> (call, culprit))
CASES = [
    ("units-folder-of-another-run", DatasetExistsError, another_run),
    ("units-folder-not-neurotorch", DatasetExistsError, users_folder),
    ("unit-run-before-its-stage", DataNotFoundError, unit_before_its_stage),
    ("result-before-the-units", DataNotFoundError, result_before_units),
    ("lesions-per-unit-zero", ParameterError, split_size("lesions_per_unit", 0)),
    ("permutations-per-unit-fraction", ParameterError, split_size("permutations_per_unit", 2.5)),
    ("unit-index-out-of-range", ParameterError, engine_case("unit index", only=[3])),
    ("workers-zero", ParameterError, engine_case("workers", workers=0)),
    ("scheduler-file-missing", ParameterError, engine_case("gone.json", scheduler="gone.json")),
    ("scheduler-not-answering", ParameterError, unanswered_scheduler),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case[0])
def test_fault(case, connectome, tiny_laion_root, tmp_path, record_property):
    name, error, make = case
    fault: Fault = tmp_case(name, error, lambda tmp: make(tmp, connectome))
    run_fault(fault, tiny_laion_root, tmp_path, record_property)
