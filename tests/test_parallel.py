"""The execution layer: the same units give the same files on one process, local processes and a
Dask cluster; a rerun does no work; a killed worker costs only its unit; concurrent runs share the
work; failures are reported after the rest finished."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from parallel_units import InterruptUnit, PidUnit, SquaresUnit, runs

from neurotorch.errors import ParameterError, UnitIndexError, UnitsFailedError
from neurotorch.io.atomic import TEMP_MARK
from neurotorch.parallel import run_units

TESTS = Path(__file__).resolve().parent
N = 7  # prime: no engine divides the units evenly


@pytest.fixture
def workers_import_tests(monkeypatch):
    """Spawned workers import the unit class from this folder."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)


def hide_dask(monkeypatch) -> None:
    """Make ``import distributed`` fail: the engine without the optional extra."""
    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)


def units(out: Path, **options) -> list[SquaresUnit]:
    out.mkdir(parents=True, exist_ok=True)
    return [SquaresUnit(str(out), k, **options) for k in range(N)]


def outputs(out: Path) -> dict[str, bytes]:
    """The units' output files (a writer killed mid-write may leave a hidden temporary, which is
    never read; it is not an output)."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npy")) if TEMP_MARK not in p.name}


def test_one_process_writes_every_unit_and_a_rerun_does_nothing(tmp_path):
    work = units(tmp_path / "a")
    results = run_units(work)
    assert [r.status for r in results] == ["ran"] * N
    for unit, result in zip(work, results, strict=True):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / f"{unit.key}.npy"), unit.expected())
        assert result.value == unit.expected()[-1]
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*.npy")}
    again = run_units(work)
    assert [r.status for r in again] == ["skipped"] * N
    assert runs(tmp_path / "a") == [u.key for u in work]  # each ran once, in the first run
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*.npy")}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "process-pool"])
def test_two_local_workers_give_the_same_bytes(engine, tmp_path, monkeypatch, workers_import_tests):
    if engine == "process-pool":
        hide_dask(monkeypatch)
    run_units(units(tmp_path / "loop"))
    results = run_units(units(tmp_path / "two"), workers=2)
    assert [r.status for r in results] == ["ran"] * N
    assert outputs(tmp_path / "two") == outputs(tmp_path / "loop")
    assert sorted(runs(tmp_path / "two")) == sorted(runs(tmp_path / "loop"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "process-pool"])
def test_a_killed_worker_costs_only_its_unit(engine, tmp_path, monkeypatch, workers_import_tests):
    if engine == "process-pool":
        hide_dask(monkeypatch)
    out = tmp_path / "killed"
    work = units(out)
    work[3] = SquaresUnit(str(out), 3, die_once=True)
    results = run_units(work, workers=2)
    # a unit whose result was held by the killed worker may be run again: it then finds its
    # outputs done and skips, so every status is "ran" or "skipped", and every unit ran
    assert {r.status for r in results} <= {"ran", "skipped"}
    assert set(runs(out)) == {u.key for u in work}
    run_units(units(tmp_path / "loop"))
    assert outputs(out) == outputs(tmp_path / "loop")
    assert (out / "squares-003.died").exists()  # it really was killed once


@pytest.mark.slow
def test_a_scheduler_address_runs_the_units(tmp_path, workers_import_tests):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        results = run_units(units(tmp_path / "remote"), scheduler=cluster.scheduler_address)
    assert [r.status for r in results] == ["ran"] * N
    run_units(units(tmp_path / "loop"))
    assert outputs(tmp_path / "remote") == outputs(tmp_path / "loop")


@pytest.mark.slow
def test_two_runs_started_at_once_share_the_work(tmp_path):
    out = tmp_path / "shared"
    units(out)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from parallel_units import SquaresUnit; from neurotorch.parallel import run_units;"
        f"run_units([SquaresUnit(sys.argv[2], k) for k in range({N})], progress=False)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(TESTS), str(out)]) for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(runs(out)) == sorted(u.key for u in units(out))  # every unit once in total
    run_units(units(tmp_path / "loop"))
    assert outputs(out) == outputs(tmp_path / "loop")


def test_failures_are_reported_after_the_rest_and_a_rerun_redoes_only_them(tmp_path):
    out = tmp_path / "fail"
    work = units(out)
    work[2] = SquaresUnit(str(out), 2, fail=True)
    with pytest.raises(UnitsFailedError, match="squares-002: ValueError: unit 2 was told") as info:
        run_units(work)
    assert [r.status for r in info.value.results].count("ran") == N - 1
    fixed = units(out)
    results = run_units(fixed)
    assert [r.status for r in results] == ["skipped"] * 2 + ["ran"] + ["skipped"] * (N - 3)


def test_a_job_array_task_runs_its_one_unit(tmp_path):
    work = units(tmp_path / "array")
    (result,) = run_units(work, only=[4])
    assert result.key == "squares-004" and runs(tmp_path / "array") == ["squares-004"]
    with pytest.raises(UnitIndexError, match=f"unit index {N} .* positions 0 to {N - 1}"):
        run_units(work, only=[N])


def test_unit_keys_must_be_unique(tmp_path):
    work = units(tmp_path / "dup")
    with pytest.raises(ParameterError, match="unique"):
        run_units([work[0], work[0]])


def test_threads_stop_their_units_when_the_run_is_interrupted(tmp_path):
    """Ctrl-C in one unit: the units still running see `stop_requested` and end, and the run
    re-raises only once they have (nothing is left running behind it)."""
    started = tmp_path / "started"
    waiting = [PidUnit(str(tmp_path), k, wait_for=str(tmp_path / "never")) for k in range(2)]
    started.touch()
    with pytest.raises(KeyboardInterrupt):
        run_units([*waiting, InterruptUnit(str(tmp_path), str(started))], workers=3, threads=True)
    assert not any(unit.done() for unit in waiting)
    (result,) = run_units([PidUnit(str(tmp_path), 9)], workers=2, threads=True)
    assert result.value == os.getpid()  # threads of this process


@pytest.mark.slow
def test_stages_share_one_local_cluster_started_only_for_work(tmp_path, workers_import_tests):
    from neurotorch.parallel import shared_engine

    done = [PidUnit(str(tmp_path / "a"), k) for k in range(3)]
    (tmp_path / "a").mkdir()
    run_units(done)
    with shared_engine(workers=2) as engine:
        assert {r.status for r in run_units(done, **engine)} == {"skipped"}
        assert engine["scheduler"]._client is None  # nothing to do: no cluster started
        (tmp_path / "b").mkdir()
        first = run_units([PidUnit(str(tmp_path / "b"), k) for k in range(N)], **engine)
        second = run_units([PidUnit(str(tmp_path / "b"), k) for k in range(N, 2 * N)], **engine)
    pids = {r.value for r in first}
    assert os.getpid() not in pids and {r.value for r in second} <= pids


@pytest.mark.slow
def test_a_scheduler_file_runs_the_units(tmp_path, workers_import_tests):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.write_scheduler_file(str(tmp_path / "scheduler.json"))
        results = run_units(units(tmp_path / "file"), scheduler=str(tmp_path / "scheduler.json"))
    assert [r.status for r in results] == ["ran"] * N
    run_units(units(tmp_path / "loop"))
    assert outputs(tmp_path / "file") == outputs(tmp_path / "loop")
