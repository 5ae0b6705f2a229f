"""The calibration grid as units of work (one per run): the seeds and configurations of
CaliBrain's grid, the same files on one process and on 2 local Dask workers, a worker SIGKILLed
mid-run, a rerun that does no work, one unit per job-array task, and a changed grid refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from meeg_helpers import folder_contents, one_torch_thread  # noqa: F401 - a fixture
from parallel_units import DieAtCommit, two_worker_client
from sklearn.model_selection import ParameterGrid

from neurotorch.errors import CorruptFileError, DatasetExistsError, ParameterError
from neurotorch.io.atomic import TEMP_MARK, atomic_path
from neurotorch.meeg import layout
from neurotorch.meeg.grid import GRID_RECORD, MANIFEST, plan_grid, run_grid, simulate_run
from neurotorch.meeg.leadfield import LeadfieldBuilder, random_leadfield, save_leadfield_npz
from neurotorch.meeg.summaries import read_posterior_summary
from neurotorch.parallel import run_units

TESTS = Path(__file__).resolve().parent
GRID = {"subject": ["s1"], "orientation_type": ["fixed", "free"], "nnz": [2], "alpha_SNR": [0.5]}
NOISE = ("oracle", "baseline")
N_RUNS = 2  # 2 orientations x 2 noise types x 2 runs: 8 units


def _leadfields(folder: Path) -> LeadfieldBuilder:
    for orientation in layout.ORIENTATIONS:
        data = random_leadfield(orientation, 7, 13, seed=1)
        data.src_coords = np.random.default_rng(0).standard_normal((13, 3)) * 0.05
        data.coil_type = 1
        save_leadfield_npz(folder / layout.leadfield_name("s1", orientation), data)
    return LeadfieldBuilder(folder)


def _grid(builder: LeadfieldBuilder, out: Path, **options) -> pd.DataFrame:
    return run_grid(builder, out, GRID, noise_types=NOISE, n_runs=N_RUNS, **options)


def _plan(builder: LeadfieldBuilder, out: Path, **changes):
    options = {"noise_types": NOISE, "n_runs": N_RUNS, **changes}
    return plan_grid(builder, out, options.pop("data_grid", GRID), **options)


def _files(folder: Path) -> dict[str, bytes]:
    return folder_contents(folder)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> LeadfieldBuilder:
    return _leadfields(tmp_path_factory.mktemp("leadfields"))


@pytest.fixture(scope="module")
def reference(builder, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The grid run in this process (``workers=None``): its folder and manifest."""
    out = tmp_path_factory.mktemp("reference") / "runs"
    return out, _grid(builder, out)


@pytest.fixture(scope="module")
def client():
    """A client of 2 single-threaded, non-daemonic local workers that import these tests."""
    with two_worker_client() as client:
        yield client


@pytest.mark.usefixtures("one_torch_thread")
def test_each_run_has_calibrains_configuration_and_seed(builder, reference):
    """Run k is the k-th configuration of scikit-learn's ParameterGrid (noise type fastest)
    repeated n_runs times, seeded with the k-th draw of RandomState(42); its summary holds what
    `simulate_run` gives for that configuration and seed (on one thread, as the units compute:
    on several, the last bits differ)."""
    out, manifest = reference
    configs = [
        (data, noise["noise_type"])
        for data in ParameterGrid(GRID)
        for noise in ParameterGrid({"noise_type": list(NOISE)})
    ]
    runs = [config for config in configs for _ in range(N_RUNS)]
    seeds = np.random.RandomState(42).randint(0, 2**32, size=len(runs))
    assert manifest["global_run_id"].tolist() == list(range(1, len(runs) + 1))
    assert manifest["seed"].tolist() == seeds.tolist()
    assert manifest["noise_type"].tolist() == [noise for _, noise in runs]
    assert manifest["orientation_type"].tolist() == [d["orientation_type"] for d, _ in runs]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, GRID_RECORD, *manifest["posterior_summary"]]
    )
    for position in (2, 5):  # a fixed and a free run, each with its own noise type
        data_params, noise_type = runs[position]
        data = builder.get_leadfield("s1", data_params["orientation_type"], return_metadata=True)
        expected = simulate_run(
            data, nnz=2, alpha=0.5, seed=int(seeds[position]), noise_type=noise_type
        )
        written = read_posterior_summary(out / manifest["posterior_summary"][position])
        shape = written.x_true.shape
        np.testing.assert_array_equal(written.x_true, expected["x_true"].reshape(shape))
        np.testing.assert_array_equal(written.x_hat, expected["x_hat"].reshape(shape))
        assert manifest["gamma"][position] == expected["gamma"]


@pytest.mark.slow
def test_two_local_workers_write_the_bytes_of_one_process(builder, reference, tmp_path):
    out, manifest = reference
    two = _grid(builder, tmp_path / "two", workers=2)
    pd.testing.assert_frame_equal(two, manifest)
    assert _files(tmp_path / "two") == _files(out)  # summaries, manifest and record
    assert not (tmp_path / "two.units").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_only_its_run(builder, reference, client, tmp_path):
    out, manifest = reference
    units = _plan(builder, tmp_path / "killed").units()
    flag = tmp_path / "died"
    units[3] = DieAtCommit(units[3], str(flag), commits=0)  # killed before its summary lands
    results = run_units(units, scheduler=client, progress=False)
    assert flag.exists()  # a worker really died
    assert {r.status for r in results} <= {"ran", "skipped"}
    again = _grid(builder, tmp_path / "killed", scheduler=client)
    pd.testing.assert_frame_equal(again, manifest)
    assert _files(tmp_path / "killed") == _files(out)  # nothing the killed writer left behind


def test_a_run_being_written_elsewhere_is_waited_for_not_moved(builder, reference, tmp_path):
    """Another process (a thread here) is writing run 1 under its lock when this process runs the
    grid: this one waits, finds the run done and finishes; the folder it renames holds no
    half-written summary, and the other writer's file lands where it meant it to."""
    out = tmp_path / "runs"
    plan = _plan(builder, out)
    for k in range(1, len(plan.units())):
        plan.run(only=k)
    first = plan.units()[0]
    summary = (reference[0] / first.name).read_bytes()
    errors: list[BaseException] = []
    holding = threading.Event()

    def write_elsewhere() -> None:
        try:
            with FileLock(str(first.lock_path)):
                holding.set()
                with atomic_path(first.path()) as tmp:
                    tmp.write_bytes(summary)
                    deadline = time.monotonic() + 3.0  # or until a finish moves the folder
                    while time.monotonic() < deadline and not out.exists():
                        time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    writer = threading.Thread(target=write_elsewhere)
    writer.start()
    holding.wait(10)
    plan.run()
    writer.join()
    assert errors == []
    assert _files(out) == _files(reference[0])  # no temporary left behind


def test_a_plan_made_before_another_run_finished_computes_nothing_after(
    builder, reference, tmp_path, monkeypatch
):
    """A run planned on the work folder, which another run then finishes (moving the folder to
    ``out_dir``), finds every run done there: it computes nothing and returns the manifest."""
    from neurotorch.meeg import grid as grid_module

    out = tmp_path / "runs"
    late = _plan(builder, out)
    _grid(builder, out)
    monkeypatch.setattr(grid_module, "simulate_run", lambda *a, **k: pytest.fail("computed"))
    manifest = late.run()
    pd.testing.assert_frame_equal(manifest, reference[1])
    assert _files(out) == _files(reference[0])


@pytest.mark.slow
def test_two_runs_started_at_once_give_the_bytes_of_one(builder, reference, tmp_path):
    """Two processes run the same grid into the same folder: both return, and the folder is the
    one-process run's (whichever renamed the work folder, the other read the manifest there)."""
    out, manifest = reference
    script = (
        "import sys; from neurotorch.meeg.grid import run_grid;"
        "from neurotorch.meeg.leadfield import LeadfieldBuilder;"
        f"m = run_grid(LeadfieldBuilder(sys.argv[1]), sys.argv[2], {GRID!r}, {NOISE!r}, {N_RUNS});"
        "print(m.seed.sum())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(builder.leadfield_dir), str(tmp_path / "runs")],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "NEUROTORCH_PROGRESS": "0"},
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outputs == [[str(manifest["seed"].sum())]] * 2
    assert _files(tmp_path / "runs") == _files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_second_run_does_no_work(builder, reference):
    out, manifest = reference
    before = _mtimes(out)
    results = run_units(_plan(builder, out).units(), progress=False)
    assert [r.status for r in results] == ["skipped"] * len(manifest)
    pd.testing.assert_frame_equal(_grid(builder, out), manifest)
    assert _mtimes(out) == before


@pytest.mark.usefixtures("one_torch_thread")
def test_a_finished_grid_whose_manifest_was_deleted_writes_it_again(builder, reference, tmp_path):
    out, manifest = reference
    copy = shutil.copytree(out, tmp_path / "runs")
    written = (copy / MANIFEST).read_bytes()
    (copy / MANIFEST).unlink()
    pd.testing.assert_frame_equal(_grid(builder, copy), manifest)
    assert (copy / MANIFEST).read_bytes() == written


def test_a_job_array_task_runs_one_unit_and_the_last_run_finishes(builder, reference, tmp_path):
    out, manifest = reference
    plan = _plan(builder, tmp_path / "array")
    row = plan.run(only=5, progress=False)
    pd.testing.assert_frame_equal(row, manifest.iloc[[5]].reset_index(drop=True))
    work = tmp_path / "array.units"
    assert not (tmp_path / "array").exists()  # nothing is finished by one task
    assert sorted(p.name for p in work.iterdir()) == [
        GRID_RECORD,
        manifest["posterior_summary"][5],
    ]
    with pytest.raises(ParameterError, match="only"):
        plan.run(only=len(manifest))
    results = run_units(_plan(builder, tmp_path / "array").units(), progress=False)
    assert [r.status for r in results].count("skipped") == 1 and results[5].status == "skipped"
    pd.testing.assert_frame_equal(_grid(builder, tmp_path / "array"), manifest)
    assert _files(tmp_path / "array") == _files(out) and not work.exists()


def test_another_grid_is_refused_in_a_work_folder_or_a_finished_folder(builder, tmp_path):
    _plan(builder, tmp_path / "runs").run(only=0, progress=False)
    record = (tmp_path / "runs.units" / GRID_RECORD).read_bytes()
    for changes in (
        {"n_runs": 3},
        {"noise_types": ("oracle",)},
        {"data_grid": {**GRID, "alpha_SNR": [0.6]}},
        {"solver_options": {"normalization": True}},
    ):
        with pytest.raises(DatasetExistsError, match=r"runs\.units holds the unfinished runs"):
            _plan(builder, tmp_path / "runs", **changes)
    # a leadfield rewritten since the grid started makes another grid
    copy = _leadfields(Path(shutil.copytree(builder.leadfield_dir, tmp_path / "lf")))
    _plan(copy, tmp_path / "other").run(only=0, progress=False)
    _leadfields(tmp_path / "lf")
    with pytest.raises(DatasetExistsError, match="unfinished runs of another grid"):
        _plan(copy, tmp_path / "other")
    assert (tmp_path / "runs.units" / GRID_RECORD).read_bytes() == record
    one = {"data_grid": {**GRID, "orientation_type": ["fixed"]}, "noise_types": "oracle"}
    _plan(builder, tmp_path / "done", n_runs=1, **one).run(progress=False)
    with pytest.raises(DatasetExistsError, match=r"done holds the runs of another grid"):
        _plan(builder, tmp_path / "done", **one)
    foreign = tmp_path / "mine.units"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match=r"mine\.units .* holds no runs of neurotorch"):
        _plan(builder, tmp_path / "mine")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_a_failed_run_raises_its_own_error_and_the_others_are_kept(builder, tmp_path):
    """A damaged leadfield fails its runs with the reader's error (not a list of units); the
    runs of the sound leadfield stay in the work folder, and out_dir does not exist."""
    copy = Path(shutil.copytree(builder.leadfield_dir, tmp_path / "lf"))
    (copy / layout.leadfield_name("s1", "free")).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CorruptFileError, match="s1_free_leadfield"):
        _grid(LeadfieldBuilder(copy), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    written = [p.name for p in (tmp_path / "runs.units").iterdir() if TEMP_MARK not in p.name]
    assert len(written) == 1 + 4  # the record and the fixed orientation's 4 runs
