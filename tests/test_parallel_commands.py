"""The commands as units of work, in one process: lesion network mapping reduced from units equals
`network_map` to float rounding (the bounds of `neurotorch.connectome.lnm_units`), a rerun does no
work, a job array (one unit per task, then the reduction) gives the same bytes as one run, and
verify / download run, list and skip their units from the command line.

The runs on a local Dask cluster (2 workers, killed workers, concurrent runs) are in
`tests/test_parallel_cluster.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from parallel_commands import (
    N_PERMUTATIONS,
    N_SUBJECTS,
    SEED,
    assert_same_maps,
    plan,
    relative_gap,
    small_connectome,
    unit_files,
)
from scipy import stats

from neurotorch.cli.main import main
from neurotorch.connectome import network_map
from neurotorch.connectome.stats import ShiftedSums
from neurotorch.errors import DataNotFoundError, UnitsFailedError
from neurotorch.io.integrity import check_file
from neurotorch.io.storage import DataRoot
from neurotorch.parallel import run_units

# the bounds stated in neurotorch/connectome/lnm_units.py
MEAN_Z_ATOL, T_RTOL, P_RTOL = 1e-6, 1e-5, 1e-3


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    return small_connectome(tmp_path_factory.mktemp("connectome") / "conn")


def assert_within_rounding(units, single) -> None:
    """The bounds of the module docstring of `neurotorch.connectome.lnm_units`."""
    assert units.names == single.names and units.n_subjects == single.n_subjects
    np.testing.assert_array_equal(units.seed_voxels, single.seed_voxels)
    np.testing.assert_allclose(units.mean_z, single.mean_z, rtol=0, atol=MEAN_Z_ATOL)
    assert relative_gap(single.t, units.t, scale=1.0) <= T_RTOL
    assert relative_gap(single.p, units.p, scale=0.0) <= P_RTOL
    assert relative_gap(single.q, units.q, scale=0.0) <= P_RTOL
    np.testing.assert_allclose(units.max_t_null, single.max_t_null, rtol=T_RTOL)
    np.testing.assert_array_equal(units.p_fwe, single.p_fwe)  # the same FWER p values


@pytest.mark.slow
@pytest.mark.parametrize("method", ["boes", "pini"])
def test_units_equal_network_map_to_float_rounding(method, connectome, tmp_path):
    batches, lesions = connectome
    reduced = plan(tmp_path / "units", batches, lesions, method=method).run(progress=False)
    single = network_map(lesions, batches, method=method, n_permutations=N_PERMUTATIONS, seed=SEED)
    assert_within_rounding(reduced, single)
    assert reduced.p_fwe.min() < 0.5  # the planted networks survive the correction


@pytest.mark.slow
def test_a_connectome_recreated_at_the_same_paths_is_read_afresh(tmp_path):
    """In one process (a notebook): a connectome re-created where the first run read it is the
    one the next run maps, not the files opened by the first run."""
    from neurotorch.synthetic.connectome import make_connectome

    batches, lesions = small_connectome(tmp_path / "conn")
    first = plan(tmp_path / "first", batches, lesions).run(progress=False)
    make_connectome(
        tmp_path / "conn", n_subjects=N_SUBJECTS, n_timepoints=30, seed=2, overwrite=True
    )
    again = plan(tmp_path / "again", batches, lesions).run(progress=False)
    single = network_map(lesions, batches, n_permutations=N_PERMUTATIONS, seed=SEED)
    assert_within_rounding(again, single)
    assert np.abs(again.mean_z - first.mean_z).max() > 0.1  # the new data do differ


@pytest.mark.slow
def test_units_follow_the_subject_order_of_the_sign_flips(connectome, tmp_path):
    """A subset of subjects out of file order: sign i still flips subject i of the run."""
    batches, lesions = connectome
    subjects = [10, 0, 4, 7, 1, 5, 9]
    reduced = plan(tmp_path / "units", batches, lesions, subjects=subjects).run(progress=False)
    single = network_map(
        lesions, batches, subjects=subjects, n_permutations=N_PERMUTATIONS, seed=SEED
    )
    assert reduced.n_subjects == len(subjects)
    assert_within_rounding(reduced, single)


def test_merged_sums_give_numpy_mean_and_t_and_keep_constant_voxels_exact():
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 0.2, size=(N_SUBJECTS, 2, 5)).astype(np.float32)
    z[:, 1, 2] = np.float32(8.664339)  # the same value in every subject (a seed voxel)
    z[:, 0, 4] = 0  # a voxel without variance anywhere
    parts = []
    for start, stop in [(0, 3), (3, 6), (6, 9), (9, 11)]:
        sums = ShiftedSums((2, 5), torch.device("cpu"))
        for row in z[start:stop]:
            sums.add(torch.from_numpy(row))
        parts.append(ShiftedSums.from_state(sums.state()))  # saved and read back, as units do
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    mean, t = merged.mean_and_t()
    np.testing.assert_allclose(mean, z.astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-15)
    expected_t = stats.ttest_1samp(z.astype(np.float64), 0.0, axis=0).statistic
    fine = np.isfinite(expected_t)
    np.testing.assert_allclose(t[fine], expected_t[fine], rtol=1e-9)
    assert t[1, 2] == np.inf and t[0, 4] == 0  # exact zero variance survives the merge


@pytest.mark.slow
def test_rerun_does_no_work_and_a_job_array_gives_the_same_bytes(connectome, tmp_path):
    batches, lesions = connectome
    first = plan(tmp_path / "one-run", batches, lesions)
    result = first.run(progress=False)
    written = unit_files(tmp_path / "one-run")
    again = run_units(first.units(), progress=False)
    assert {r.status for r in again} == {"skipped"}
    assert unit_files(tmp_path / "one-run") == written

    array = plan(tmp_path / "array", batches, lesions)  # planned again: what each task does
    stages = [u.stage for u in array.units()]
    assert stages == sorted(stages, key=array.stages.index)  # positions go stage by stage
    for task in range(len(array.units())):
        (done,) = run_units(plan(tmp_path / "array", batches, lesions).units(), only=[task])
        assert done.status == "ran"
    assert_same_maps(array.result(), result)
    assert unit_files(tmp_path / "array") == written


def test_a_unit_run_before_the_stage_it_needs_names_that_stage(connectome, tmp_path):
    batches, lesions = connectome
    units = plan(tmp_path / "units", batches, lesions).units()
    permutation = next(k for k, u in enumerate(units) if u.stage == "permutations")
    with pytest.raises(UnitsFailedError) as caught:
        run_units(units, only=[permutation])
    (failed,) = caught.value.results
    assert isinstance(failed.exception, DataNotFoundError)
    assert "stage 'maps'" in failed.error and "--list-units" in failed.error
    with pytest.raises(DataNotFoundError, match="the result needs"):
        units[0].plan.result()


LNM_ARGS = ["--permutations", "7", "--lesions-per-unit", "2", "--permutations-per-unit", "3"]


@pytest.mark.slow
def test_lnm_command_lists_runs_one_unit_and_reduces(connectome, tmp_path, capsys):
    batches, lesions = connectome
    folder = lesions[0].parent
    base = ["lnm", str(folder), "--connectome", str(batches), "--no-figures", *LNM_ARGS]
    out = tmp_path / "maps"
    assert main([*base, "--out", str(out), "--list-units"]) == 0
    listed = capsys.readouterr().out.splitlines()
    n_files, n_lesion_batches, n_chunks = 4, 3, 3  # 11 subjects by 3; 6 lesions by 2; 7 by 3
    assert len(listed) == n_files * n_lesion_batches + n_chunks * n_lesion_batches
    assert listed[0].split() == ["0", "todo", "lnm/maps/file-000_lesions-000"]
    assert main([*base, "--out", str(out), "--unit", "1"]) == 0
    assert capsys.readouterr().out.split() == ["ran", listed[1].split()[2]]
    assert not out.exists()  # a task of a job array writes only its unit
    assert main([*base, "--out", str(out), "--workers", "1"]) == 0
    assert (out / "provenance.json").is_file()
    assert main([*base, "--out", str(tmp_path / "same"), "--units-dir", str(out) + ".units"]) == 0
    single = tmp_path / "single"
    assert main([*base, "--out", str(single)]) == 0  # no unit option: one process
    maps = sorted(p.name for p in out.glob("*_map.nii.gz"))
    assert maps == sorted(p.name for p in single.glob("*_map.nii.gz"))
    assert all(
        (tmp_path / "same" / name).read_bytes() == (out / name).read_bytes() for name in maps
    )


def test_verify_runs_each_file_once_and_lists_its_units(tiny_laion_root, tmp_path, capsys):
    import shutil

    tree = shutil.copytree(tiny_laion_root / "splits", tmp_path / "tree" / "splits")
    from neurotorch.verify import verify_path

    first = verify_path(tree, progress=False)
    root = DataRoot(tree)
    assert first == [check_file(root, r.path) for r in first]  # the format's own check
    assert main(["verify", str(tree), "--list-units"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(first) and all(" done " in line for line in listed)
    assert verify_path(tree, progress=False, recheck=True) == first
    (tree / listed[0].split()[2].removeprefix("verify/")).write_text("{not json")
    assert main(["verify", str(tree), "--unit", "0", "--all"]) == 1
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].split()[:3] == ["bad", "json", listed[0].split()[2].removeprefix("verify/")]
    assert shown[-1].split() == ["all", "0", "0", "1", "0"]  # that one file, and no other


def test_download_lists_and_runs_its_units_one_by_one(tiny_laion_root, tmp_path, capsys):
    out = tmp_path / "copy"
    base = ["download", "laion-fmri", "--source", str(tiny_laion_root), "--subject", "sub-01"]
    base += ["--ses", "ses-01", "--out", str(out)]
    assert main([*base, "--list-units"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert main([*base, "--unit", "2"]) == 0
    relpath = listed[2].split()[2].removeprefix("download/")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == [relpath]
    assert (out / relpath).read_bytes() == (tiny_laion_root / relpath).read_bytes()
    assert main(base) == 0
    assert f"{len(listed) - 1} transferred" in capsys.readouterr().out
    assert main([*base, "--list-units"]) == 0
    assert all(" done " in line for line in capsys.readouterr().out.splitlines())


def _check_in_daemon(path: str, queue) -> None:
    from neurotorch.io.integrity import check_files

    root = DataRoot(Path(path).parent)
    queue.put([r.status for r in check_files(root, [Path(path).name], progress=False)])


def test_hdf5_is_checked_in_a_daemonic_worker_that_may_not_start_children(tiny_laion_root):
    """What a Dask worker started by others is: its HDF5 checks run in the worker itself."""
    import multiprocessing

    h5 = next((tiny_laion_root / "stimuli").glob("*.h5"))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_check_in_daemon, args=(str(h5), queue), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == 0 and queue.get(timeout=5) == [
        check_file(DataRoot(h5.parent), h5.name).status
    ]


def test_units_compute_on_one_thread_and_give_the_threads_back(connectome, tmp_path, monkeypatch):
    """Documented: a unit's bytes do not depend on the core count of the machine it ran on."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from neurotorch.connectome import lnm_units

    seen, blas = [], []
    real = lnm_units.accumulate_z

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        blas.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return real(*args, **kwargs)

    monkeypatch.setattr(lnm_units, "accumulate_z", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(limits=2, user_api="blas"):  # numpy's BLAS on both cores outside
            run_units(plan(tmp_path / "units", *connectome).units(), only=[0])
        assert seen == [1] and torch.get_num_threads() == 2
        assert blas and set(blas) == {1}, blas  # numpy's and scipy's BLAS on one thread too
    finally:
        torch.set_num_threads(before)
