"""`neurotorch prepare` at scale: a store written in bounded memory with its CRC-32 computed
while writing, and one unit of `neurotorch.parallel` per session (local workers, a Dask
scheduler, one unit per job-array task), with the engine's guarantees: the same bytes on any
engine, a killed worker costs only its unit, a second run does no work, concurrent runs share
the work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from store_units import DiesMidWrite

from neurotorch.cli import main
from neurotorch.data.fmri.store import build_store, prepare_units
from neurotorch.fmri import layout
from neurotorch.fmri.voxel_selection import VoxelSelection
from neurotorch.parallel import run_units

TESTS = Path(__file__).resolve().parent
SUBJECTS = ["sub-01", "sub-02"]


@pytest.fixture
def workers_import_tests(monkeypatch):
    """Spawned workers import the test units from this folder."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)


def prepare(root: Path, cache: Path, *options: str) -> int:
    """``neurotorch prepare`` of both subjects, whole brain, into ``cache``."""
    args = ["prepare", "--data-dir", str(root), "--subject", *SUBJECTS, "--cache-dir", str(cache)]
    return main([*args, *options])


def store_files(cache: Path) -> dict[str, bytes]:
    """Every file of every store under ``cache``: manifests without the ``.npy`` modification
    time (it differs from run to run), no locks."""
    files = {}
    for path in sorted(cache.rglob("*")):
        if path.is_dir() or path.name.endswith(".lock"):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            manifest = json.loads(data)
            manifest["betas_file"].pop("mtime_ns")
            data = json.dumps(manifest).encode()
        files[str(path.relative_to(cache))] = data
    return files


def ran_and_skipped(output: str) -> tuple[int, int]:
    line = next(line for line in output.splitlines() if line.startswith("units:"))
    words = line.split()
    return int(words[1]), int(words[3])


def test_the_crc_of_the_store_is_the_crc_of_its_bytes(tiny_laion_root, tmp_path):
    store = build_store(
        tiny_laion_root, "sub-01", voxels=VoxelSelection(roi="all"), cache_dir=tmp_path
    )
    for session in store.sessions:
        files = store.session(session)
        written = files.manifest()["betas_file"]
        data = files.betas_path.read_bytes()
        assert written["crc32"] == f"{zlib.crc32(data):08x}" and written["size"] == len(data)
        betas = nib.load(tiny_laion_root / layout.session_betas("sub-01", session)).dataobj
        np.testing.assert_array_equal(
            np.load(files.betas_path), np.asarray(betas)[store.voxel_mask].T
        )


def test_units_list_one_array_task_and_a_second_run(tiny_laion_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert prepare(tiny_laion_root, cache, "--list-units") == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]  # as grid and lnm
    assert [line[:2] for line in listed] == [[str(k), "todo"] for k in range(4)]
    assert "sub-02" in listed[3][2]
    assert prepare(tiny_laion_root, cache, "--unit", "3") == 0  # one job-array task
    assert ran_and_skipped(capsys.readouterr().out) == (1, 0)
    assert prepare(tiny_laion_root, cache, "--list-units") == 0
    status = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert status == ["todo", "todo", "todo", "done"]
    assert prepare(tiny_laion_root, cache) == 0
    assert ran_and_skipped(capsys.readouterr().out) == (3, 1)
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("ses-*.npy")}
    assert prepare(tiny_laion_root, cache) == 0  # a second run does no work
    assert ran_and_skipped(capsys.readouterr().out) == (0, 4)
    assert before == {p: p.stat().st_mtime_ns for p in cache.rglob("ses-*.npy")}
    assert prepare(tiny_laion_root, cache, "--unit", "4") == 2  # no such position: usage
    assert "unit index 4" in capsys.readouterr().err


@pytest.mark.slow
def test_two_local_dask_workers_write_the_same_bytes(tiny_laion_root, tmp_path, capsys):
    assert prepare(tiny_laion_root, tmp_path / "one") == 0
    assert prepare(tiny_laion_root, tmp_path / "two", "--workers", "2") == 0
    assert ran_and_skipped(capsys.readouterr().out)[0] == 4
    assert store_files(tmp_path / "two") == store_files(tmp_path / "one")


@pytest.mark.slow
def test_a_scheduler_address_runs_the_sessions(tiny_laion_root, tmp_path):
    from distributed import LocalCluster

    assert prepare(tiny_laion_root, tmp_path / "one") == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        assert (
            prepare(tiny_laion_root, tmp_path / "dask", "--scheduler", cluster.scheduler_address)
            == 0
        )
    assert store_files(tmp_path / "dask") == store_files(tmp_path / "one")


@pytest.mark.slow
def test_a_worker_killed_mid_write_costs_only_its_unit(
    tiny_laion_root, tmp_path, workers_import_tests
):
    assert prepare(tiny_laion_root, tmp_path / "one") == 0
    cache = tmp_path / "killed"
    units = [
        unit
        for subject in SUBJECTS
        for unit in prepare_units(
            tiny_laion_root, subject, voxels=VoxelSelection(), cache_dir=cache
        )
    ]
    units[1] = DiesMidWrite(units[1], str(tmp_path / "died"))
    results = run_units(units, workers=2)
    assert {r.status for r in results} <= {"ran", "skipped"} and (tmp_path / "died").exists()
    assert store_files(cache) == store_files(tmp_path / "one")  # no temporary file left either


@pytest.mark.slow
def test_two_runs_started_at_once_share_the_work(tiny_laion_root, tmp_path):
    assert prepare(tiny_laion_root, tmp_path / "one") == 0
    cache = tmp_path / "shared"
    command = [sys.executable, "-m", "neurotorch", "prepare", "--data-dir", str(tiny_laion_root)]
    command += ["--subject", *SUBJECTS, "--cache-dir", str(cache)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    counts = [ran_and_skipped(output) for output in outputs]
    assert sum(ran for ran, _ in counts) == 4  # every session built once in all
    assert store_files(cache) == store_files(tmp_path / "one")
