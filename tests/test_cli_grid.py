"""``neurotorch grid``: the calibration grid from the command line writes the files `run_grid`
writes with the same arguments, lists its runs, runs one per job-array task, does nothing when
run again, gives the same bytes on 2 workers, and refuses bad values with one named error."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
from meeg_helpers import folder_contents

from neurotorch.cli.main import build_parser, main
from neurotorch.meeg.grid import GRID_RECORD, MANIFEST, run_grid
from neurotorch.meeg.leadfield import LeadfieldBuilder

#: every grid option at a value other than its default, so a dropped flag changes the files
GRID = {"subject": ["fsaverage"], "orientation_type": ["fixed"], "nnz": [1, 3], "alpha_SNR": [0.6]}
OPTIONS = {
    "noise_types": ["oracle", "baseline"],
    "n_runs": 2,
    "random_state": 7,
    "solver": "BMN",
    "solver_options": {"normalization": True},
    "manifest_paths": "absolute",
}
ARGS = [
    "--subject",
    "fsaverage",
    "--orientation",
    "fixed",
    "--nnz",
    "1",
    "3",
    "--alpha-snr",
    "0.6",
    "--noise-types",
    "oracle",
    "baseline",
    "--n-runs",
    "2",
    "--seed",
    "7",
    "--solver",
    "BMN",
    "--solver-options",
    '{"normalization": true}',
    "--manifest-paths",
    "absolute",
]
N_UNITS = 2 * 2 * 2  # nnz x noise types x runs


@pytest.fixture(scope="module")
def leadfields(tmp_path_factory) -> Path:
    from neurotorch.synthetic.meeg import make_calibrain

    root = make_calibrain(tmp_path_factory.mktemp("calibrain") / "cb", size="tiny", progress=False)
    return root / "1284src_leadfield"


@pytest.fixture(scope="module")
def reference(leadfields, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The folder and files `run_grid` writes, called directly with the arguments of `ARGS`."""
    out = tmp_path_factory.mktemp("reference") / "runs"
    run_grid(LeadfieldBuilder(leadfields), out, GRID, **OPTIONS)
    return out, files(out)


def files(folder: Path) -> dict[str, bytes]:
    return folder_contents(folder)


def grid(leadfields: Path, out: Path, *more: str) -> list[str]:
    return ["grid", str(leadfields), "--out", str(out), *ARGS, *more]


@pytest.fixture
def expected(reference):
    """The files `run_grid` writes, as written at another ``out`` (absolute manifest paths name
    the folder)."""
    folder, written = reference
    old = str(folder.absolute()).encode()
    return lambda out: {
        name: data.replace(old, str(out.absolute()).encode()) for name, data in written.items()
    }


def test_command_writes_the_files_of_run_grid(leadfields, expected, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(grid(leadfields, out)) == 0
    assert files(out) == expected(out)  # summaries, manifest and grid record, byte for byte
    assert capsys.readouterr().out.splitlines() == [
        f"runs computed: {N_UNITS}, already done: 0",
        f"manifest: {out / MANIFEST}",
    ]
    record = json.loads((out / GRID_RECORD).read_text())
    assert record["solver_options"] == {"normalization": True} and record["random_state"] == 7


def test_defaults_are_those_of_run_grid():
    args = build_parser().parse_args(["grid", "lf", "--out", "o", "--nnz", "1", "--alpha-snr", "1"])
    defaults = {k: p.default for k, p in inspect.signature(run_grid).parameters.items()}
    given = {
        "noise_types": tuple(args.noise_types),
        "n_runs": args.n_runs,
        "random_state": args.seed,
        "solver": args.solver,
        "solver_options": args.solver_options,
        "manifest_paths": args.manifest_paths,
        "workers": args.workers,
        "scheduler": args.scheduler,
    }
    assert given == {key: defaults[key] for key in given}


def test_units_one_by_one_then_the_rest_then_nothing(leadfields, expected, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(grid(leadfields, out, "--list-units")) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split() for line in listed] == [
        [str(k), "todo", f"grid/run{k + 1:08d}"] for k in range(N_UNITS)
    ]
    assert main(grid(leadfields, out, "--unit", str(N_UNITS))) == 2  # a task too many: usage
    assert f"this run has {N_UNITS} unit(s)" in capsys.readouterr().err
    assert main(grid(leadfields, out, "--unit", "5")) == 0  # one task of a job array
    assert capsys.readouterr().out.split() == ["ran", "grid/run00000006"]
    assert not out.exists()  # the runs wait in OUT.units until the last one
    assert main(grid(leadfields, out, "--list-units")) == 0
    done = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert done == ["done" if k == 5 else "todo" for k in range(N_UNITS)]
    assert main(grid(leadfields, out)) == 0
    assert (
        capsys.readouterr().out.splitlines()[0] == f"runs computed: {N_UNITS - 1}, already done: 1"
    )
    assert files(out) == expected(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(grid(leadfields, out)) == 0  # a rerun computes nothing and writes nothing
    assert capsys.readouterr().out.splitlines()[0] == f"runs computed: 0, already done: {N_UNITS}"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_subjects_default_to_every_leadfield_of_the_folder(leadfields, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["grid", str(leadfields), "--out", str(out), "--nnz", "1", "--alpha-snr", "0.5"]
    assert main([*args, "--orientation", "free", "--n-runs", "1", "--list-units"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # fsaverage and sub-meg01, free
    record = json.loads((tmp_path / "runs.units" / GRID_RECORD).read_text())
    written = sorted(p.name for p in leadfields.glob("*_free_leadfield.npz"))
    assert record["data_grid"]["subject"] == ["fsaverage", "sub-meg01"]
    assert [name for name, _, _ in record["leadfields"]] == written


@pytest.mark.slow
def test_two_workers_write_the_bytes_of_one_process(leadfields, expected, tmp_path):
    out = tmp_path / "runs"
    assert main(grid(leadfields, out, "--workers", "2")) == 0
    assert files(out) == expected(out)


@pytest.mark.slow
def test_synthetic_is_the_built_in_calibrain_root(tmp_path, monkeypatch, capsys):
    from neurotorch.synthetic.resolve import make_synthetic

    monkeypatch.setenv("NEUROTORCH_DATA", str(tmp_path / "data"))
    out = tmp_path / "runs"
    args = ["grid", "synthetic", "--out", str(out), "--nnz", "1", "--alpha-snr", "0.5"]
    assert main([*args, "--n-runs", "1", "--list-units"]) == 0
    root = make_synthetic("calibrain")  # the root configs mean by data_dir: synthetic
    leadfields = sorted((root / "1284src_leadfield").glob("*_leadfield.npz"))
    assert len(capsys.readouterr().out.splitlines()) == len(leadfields)  # subject x orientation
    record = json.loads((tmp_path / "runs.units" / GRID_RECORD).read_text())
    assert sorted(name for name, _, _ in record["leadfields"]) == [p.name for p in leadfields]


USAGE = {
    "nnz not a count": (["--nnz", "2.7"], "--nnz", "2.7"),
    "unknown solver": (["--solver", "champagne"], "--solver", "champagne", "gamma_map"),
    "alpha above 1": (["--alpha-snr", "1.5"], "--alpha-snr", "1.5", "[0, 1]"),
    "unknown noise type": (["--noise-types", "known"], "--noise-types", "known", "baseline"),
    "solver options not JSON": (["--solver-options", "{x"], "--solver-options", "{x"),
    "negative seed": (["--seed", "-1"], "--seed", "-1"),
}


def assert_one_error(capsys, status: int, got: int, *phrases: str) -> None:
    err = capsys.readouterr().err
    assert got == status, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert all(phrase in err for phrase in phrases), (phrases, err)


@pytest.mark.parametrize("case", sorted(USAGE))
def test_bad_values_are_usage_errors_that_name_them(
    case, leadfields, tmp_path, capsys, record_property
):
    record_property("fault", "named")
    change, *phrases = USAGE[case]
    args = [
        "grid",
        str(leadfields),
        "--out",
        str(tmp_path / "o"),
        "--nnz",
        "1",
        "--alpha-snr",
        "0.5",
    ]
    assert_one_error(capsys, 2, main([*args, *change]), *phrases, "--help")
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("subject", [[], ["--subject", "fsaverage"]])
def test_a_missing_leadfield_folder_is_a_data_error_naming_it(
    subject, tmp_path, capsys, record_property
):
    record_property("fault", "named")
    missing = str(tmp_path / "missing")
    args = ["grid", missing, "--out", str(tmp_path / "o"), "--nnz", "1", "--alpha-snr", "0.5"]
    assert_one_error(capsys, 1, main([*args, *subject]), missing, "not found")


def test_a_grid_the_library_refuses_is_a_data_error(leadfields, tmp_path, capsys, record_property):
    record_property("fault", "named")
    args = ["grid", str(leadfields), "--out", str(tmp_path / "o"), "--nnz", "1"]
    unknown = [*args, "--alpha-snr", "0.5", "--solver-options", '{"gamma": 2}']
    assert_one_error(capsys, 1, main(unknown), "'gamma'", "normalization")
    no_noise = [*args, "--alpha-snr", "1"]  # the oracle noise of a noiseless trial
    assert_one_error(capsys, 1, main(no_noise), "alpha_SNR = 1", "noise_type")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    occupied = ["grid", str(leadfields), "--out", str(foreign), "--nnz", "1", "--alpha-snr", "0.5"]
    assert_one_error(capsys, 1, main(occupied), str(foreign), "not empty")
    shutil.rmtree(foreign)
