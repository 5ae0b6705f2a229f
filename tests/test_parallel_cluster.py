"""The commands' units on a local Dask cluster of 2 worker processes (one for the module): the
same bytes as one process for lesion network mapping, verification and downloads; a worker
SIGKILLed in the middle of a unit (some of its files written, its manifest not) costs only that
unit; two runs started at once share the work and give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from parallel_commands import assert_same_maps, plan, small_connectome, tree_bytes, unit_files
from parallel_units import DieAtCommit, two_worker_client

from neurotorch.fmri.download import download_laion_fmri, download_units
from neurotorch.parallel import run_units
from neurotorch.verify import verify_path, verify_units

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
SESSION = {"subjects": ["sub-01"], "sessions": ["ses-01"]}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A client of 2 single-threaded, non-daemonic local workers that import these tests."""
    with two_worker_client() as client:
        yield client


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    return small_connectome(tmp_path_factory.mktemp("connectome") / "conn")


@pytest.fixture(scope="module")
def lnm_reference(connectome, tmp_path_factory):
    """The run in this process: (units folder, result)."""
    folder = tmp_path_factory.mktemp("lnm") / "loop"
    return folder, plan(folder, *connectome, method="pini").run(progress=False)


def workers_of(client) -> int:
    return len(client.scheduler_info()["workers"])


def test_lnm_on_two_workers_gives_the_bytes_of_one_process(client, connectome, lnm_reference):
    folder, expected = lnm_reference
    assert workers_of(client) == 2
    units = folder.parent / "two-workers"
    result = plan(units, *connectome, method="pini").run(scheduler=client, progress=False)
    assert_same_maps(result, expected)
    assert unit_files(units) == unit_files(folder)


def test_lnm_worker_killed_mid_unit_costs_only_that_unit(client, connectome, lnm_reference):
    folder, expected = lnm_reference
    units = folder.parent / "killed"
    work = plan(units, *connectome, method="pini")
    flags = []
    for stage in work.stages:
        stage_units = work.units(stage)
        flags.append(units.parent / f"{stage}.died")
        stage_units[2] = DieAtCommit(stage_units[2], str(flags[-1]), commits=1)
        results = run_units(stage_units, scheduler=client, progress=False)
        assert {r.status for r in results} <= {"ran", "skipped"}
    assert all(flag.exists() for flag in flags)  # a worker really died in every stage
    assert_same_maps(work.result(), expected)
    assert unit_files(units) == unit_files(folder)


@pytest.fixture
def tree(tiny_laion_root, tmp_path) -> Path:
    """Part of the tiny tree (HDF5, gzip, tables, JSON), one betas file with a flipped byte."""
    root = tmp_path / "tree"
    for part in ("stimuli", "splits", "derivatives/glmsingle-tedana/sub-01/ses-01"):
        shutil.copytree(tiny_laion_root / part, root / part)
    betas = next((root / "derivatives").rglob("*SingletrialBetas_statmap.nii.gz"))
    data = bytearray(betas.read_bytes())
    data[len(data) // 2] ^= 0xFF
    betas.write_bytes(bytes(data))
    return root


def comparable(results, root: Path) -> list[tuple[str, str, str, str]]:
    return [(r.path, r.kind, r.status, r.detail.replace(str(root), "ROOT")) for r in results]


def test_verify_on_two_workers_and_with_a_killed_worker(client, tree, tmp_path):
    copy = Path(shutil.copytree(tree, tmp_path / "copy"))
    expected = comparable(verify_path(tree, progress=False), tree)
    assert {"hdf5", "nifti-gzip", "table", "json"} <= {kind for _, kind, _, _ in expected}
    assert [status for _, kind, status, _ in expected if kind == "nifti-gzip"].count("bad") == 1
    units = verify_units(copy)
    position = next(k for k, u in enumerate(units) if u.relpath.endswith(".h5"))
    units[position] = DieAtCommit(units[position], str(tmp_path / "died"), commits=0)
    run_units(units, scheduler=client, progress=False)  # died before writing its record
    assert (tmp_path / "died").exists()
    assert comparable(verify_path(copy, scheduler=client, progress=False), copy) == expected
    again = run_units(verify_units(copy), progress=False)
    assert [r.status for r in again].count("ran") == 1  # only the bad file is checked again


def test_download_on_two_workers_and_with_a_killed_worker(client, tiny_laion_root, tmp_path):
    out = tmp_path / "out"
    units = download_units(out, source=tiny_laion_root, **SESSION)
    position = next(k for k, u in enumerate(units) if u.relpath.endswith(".nii.gz"))
    units[position] = DieAtCommit(units[position], str(tmp_path / "died"), commits=0)
    run_units(units, scheduler=client, progress=False)  # died with its file in, no record
    assert (tmp_path / "died").exists()
    result = download_laion_fmri(out, source=tiny_laion_root, scheduler=client, **SESSION)
    assert result.transferred == [] and result.bytes_transferred == 0
    expected = {unit.key.removeprefix("download/") for unit in units}
    assert set(tree_bytes(out)) == expected
    assert all((out / rel).read_bytes() == (tiny_laion_root / rel).read_bytes() for rel in expected)
    assert all(unit.done() for unit in download_units(out, source=tiny_laion_root, **SESSION))


CONCURRENT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from neurotorch.parallel import run_units
kind, where = sys.argv[2], sys.argv[3]
if kind == "lnm":
    from parallel_commands import plan, small_connectome
    work = plan(where, *small_connectome(__import__("pathlib").Path(sys.argv[4])), method="pini")
    results = [r for stage in work.stages for r in run_units(work.units(stage), progress=False)]
elif kind == "verify":
    from neurotorch.verify import verify_units
    results = run_units(verify_units(where), progress=False)
else:
    from neurotorch.fmri.download import download_units
    units = download_units(where, source=sys.argv[4], subjects="sub-01", sessions="ses-01")
    results = run_units(units, progress=False)
print(json.dumps([[r.key, r.status] for r in results]))
"""


def run_twice_at_once(*args: str) -> list[list[list[str]]]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(TESTS), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    return [json.loads(out.splitlines()[-1]) for out in outputs]


def ran_once_in_all(runs: list[list[list[str]]]) -> bool:
    """Every unit ran in exactly one of the runs (and was skipped by the other)."""
    counts: dict[str, int] = {}
    for run in runs:
        for key, status in run:
            counts[key] = counts.get(key, 0) + (status == "ran")
    return set(counts.values()) == {1}


def test_two_lnm_runs_at_once_share_the_units(connectome, lnm_reference, tmp_path):
    folder, expected = lnm_reference
    units = tmp_path / "units"
    runs = run_twice_at_once("lnm", str(units), str(connectome[0].parent))
    assert ran_once_in_all(runs)
    assert_same_maps(plan(units, *connectome, method="pini").result(), expected)
    assert unit_files(units) == unit_files(folder)


def test_two_verify_runs_at_once_share_the_files(tree):
    runs = run_twice_at_once("verify", str(tree))
    sound = [[[key, status] for key, status in run if "Betas_statmap" not in key] for run in runs]
    assert ran_once_in_all(sound)
    bad = [[status for key, status in run if "Betas_statmap" in key] for run in runs]
    assert bad == [["ran"], ["ran"]]  # a bad file is never recorded: both read it


def test_two_downloads_at_once_share_the_files(tiny_laion_root, tmp_path):
    out = tmp_path / "out"
    runs = run_twice_at_once("download", str(out), str(tiny_laion_root))
    assert ran_once_in_all(runs)
    assert all(
        (out / rel).read_bytes() == (tiny_laion_root / rel).read_bytes() for rel in tree_bytes(out)
    )


def test_lnm_command_on_two_local_workers_writes_the_maps_of_one_process(connectome, tmp_path):
    from neurotorch.cli.main import main

    batches, lesions = connectome
    base = ["lnm", str(lesions[0].parent), "--connectome", str(batches), "--no-figures"]
    base += ["--permutations", "7", "--lesions-per-unit", "4", "--permutations-per-unit", "4"]
    assert main([*base, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert main([*base, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    maps = sorted(p.name for p in (tmp_path / "one").glob("*.nii.gz"))
    assert len(maps) > 10
    assert all(
        (tmp_path / "two" / m).read_bytes() == (tmp_path / "one" / m).read_bytes() for m in maps
    )
