"""CaliBrain-style parameter grid: run order and seeds, summaries, manifest, aggregation, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurotorch.errors import (
    DataNotDownloadedError,
    DatasetExistsError,
    FormatError,
    ParameterError,
    UnsafePathError,
)
from neurotorch.meeg import layout
from neurotorch.meeg.calibration import coverage_curve
from neurotorch.meeg.grid import (
    MANIFEST,
    aggregate_runs,
    calibrate_runs,
    parameter_grid,
    read_manifest,
    run_grid,
)
from neurotorch.meeg.leadfield import LeadfieldBuilder, random_leadfield, save_leadfield_npz
from neurotorch.meeg.summaries import read_posterior_summary

pytestmark = pytest.mark.slow

GRID = {
    "subject": ["s1"],
    "orientation_type": ["fixed", "free"],
    "nnz": [2],
    "alpha_SNR": [0.3, 0.7],
}


def _builder(folder):
    for orientation in layout.ORIENTATIONS:
        data = random_leadfield(orientation, 7, 13, seed=1)
        data.src_coords = np.random.default_rng(0).standard_normal((13, 3)) * 0.05
        data.coil_type = 1
        save_leadfield_npz(folder / layout.leadfield_name("s1", orientation), data)
    return LeadfieldBuilder(folder)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    run_grid(_builder(folder), folder / "runs", GRID, noise_types=("oracle", "baseline"), n_runs=2)
    return folder / "runs"


def test_parameter_grid_order_is_sklearns():
    grid = parameter_grid({"b": [1, 2], "a": ["x", "y"]})
    assert grid == [{"a": "x", "b": 1}, {"a": "x", "b": 2}, {"a": "y", "b": 1}, {"a": "y", "b": 2}]


def test_manifest_rows_seeds_and_summaries(grid_dir):
    manifest = pd.read_csv(grid_dir / MANIFEST)
    # 2 alphas x 2 orientations x 2 noise types, 2 runs each; the noise type varies fastest
    assert len(manifest) == 16 and manifest["global_run_id"].tolist() == list(range(1, 17))
    assert manifest["run_id"].tolist() == [1, 2] * 8
    assert manifest["noise_type"].tolist()[:4] == ["oracle"] * 2 + ["baseline"] * 2
    assert manifest["alpha_SNR"].tolist() == [0.3] * 8 + [0.7] * 8
    assert manifest["orientation_type"].tolist()[:8] == ["fixed"] * 4 + ["free"] * 4
    seeds = np.random.RandomState(42).randint(0, 2**32, size=16)  # CaliBrain's seeds
    assert manifest["seed"].tolist() == seeds.tolist()
    for row in manifest.itertuples():
        run = read_posterior_summary(grid_dir / row.posterior_summary)
        assert run.metadata["seed"] == row.seed and run.orientation_type == row.orientation_type
        assert (run.x_true != 0).any(axis=-1).sum() == 2 * (
            1 if row.orientation_type == "fixed" else 3
        )


def test_aggregate_and_calibrate(grid_dir):
    fixed = aggregate_runs(grid_dir / MANIFEST, orientation_type="fixed", noise_type="oracle")
    assert fixed.x_true.shape == (4 * 13, 250) and fixed.metadata["n_runs"] == 4
    free = aggregate_runs(grid_dir / MANIFEST, orientation_type="free")
    assert free.cov_blocks.shape == (8 * 13, 3, 3)
    with pytest.raises(FormatError, match="mix orientations"):
        aggregate_runs(grid_dir / MANIFEST, noise_type="oracle")
    with pytest.raises(ParameterError, match="No run"):
        aggregate_runs(grid_dir / MANIFEST, nnz=5)
    # numpy criteria are criteria: an array is a list, a float32 alpha is that alpha
    low = aggregate_runs(grid_dir / MANIFEST, orientation_type="fixed", alpha_SNR=0.3)
    for alpha in (np.float32(0.3), np.array([0.3]), [np.float32(0.3)]):
        picked = aggregate_runs(grid_dir / MANIFEST, orientation_type="fixed", alpha_SNR=alpha)
        assert picked.metadata["n_runs"] == low.metadata["n_runs"] > 0
    both = aggregate_runs(
        grid_dir / MANIFEST, orientation_type="fixed", alpha_SNR=np.array([0.3, 0.7])
    )
    assert both.metadata["n_runs"] == 2 * low.metadata["n_runs"]
    result = calibrate_runs(fixed, fixed)
    # evaluated on its own training runs, the recalibrated curve is the identity up to the
    # isotonic fit's pooling of violators
    before = coverage_curve(fixed.x_true, fixed.x_hat, fixed.var, result["levels"])
    np.testing.assert_array_equal(result["coverage_before"], before)
    assert (
        result["metrics_after"]["mean_absolute_deviation"]
        <= result["metrics_before"]["mean_absolute_deviation"]
    )


def test_grid_rejects_bad_parameters(tmp_path):
    builder = _builder(tmp_path)
    with pytest.raises(ParameterError, match="keys"):
        run_grid(builder, tmp_path / "r", {"subject": ["s1"]})
    with pytest.raises(ParameterError, match="alpha_SNR = 1"):
        run_grid(builder, tmp_path / "r", {**GRID, "alpha_SNR": [1.0]})
    with pytest.raises(ParameterError, match="noise_types"):
        run_grid(builder, tmp_path / "r", GRID, noise_types=("known",))
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_grid_values_are_checked_not_rounded_or_split(tmp_path):
    """A count is an integer (2.7 is refused, never simulated as 2), a subject string is one
    name (never its characters), alpha_SNR lies in [0, 1]."""
    builder = _builder(tmp_path)
    for key, value, match in (
        ("nnz", [2.7], r"nnz\[0\] must be an integer, got 2.7"),
        ("nnz", [0], "nnz"),
        ("alpha_SNR", [1.3], "alpha_SNR"),
        ("orientation_type", ["both"], "orientation_type='both'"),
    ):
        with pytest.raises(ParameterError, match=match):
            run_grid(builder, tmp_path / "r", {**GRID, key: value})
    with pytest.raises(UnsafePathError, match="subject"):
        run_grid(builder, tmp_path / "r", {**GRID, "subject": ["../s1"]})
    with pytest.raises(ParameterError, match="n_runs"):
        run_grid(builder, tmp_path / "r", GRID, n_runs=1.5)
    assert not (tmp_path / "r").exists()
    grid = {"subject": "s1", "orientation_type": "fixed", "nnz": 1, "alpha_SNR": 0.5}
    manifest = run_grid(builder, tmp_path / "one", grid, n_runs=1)
    assert manifest["subject"].tolist() == ["s1"] and manifest["nnz"].tolist() == [1]


def test_grid_writes_a_new_folder_complete_or_absent(tmp_path):
    builder = _builder(tmp_path)
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="mine"):
        run_grid(builder, occupied, GRID)
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    # the second subject has no leadfield: the run fails after writing the first subject's runs
    with pytest.raises(DataNotDownloadedError, match="s2_fixed_leadfield"):
        run_grid(builder, tmp_path / "half", {**GRID, "subject": ["s1", "s2"]})
    assert sorted(p.name for p in tmp_path.iterdir() if "half" in p.name) == []


@pytest.mark.parametrize(
    ("solver", "noise_types", "names"),
    [
        ("BMN", ("oracle", "adaptive_joint_learning"), ["BMN", "BMN_joint"]),
        ("gamma_map", ("baseline", "adaptive_joint_learning"), ["gamma_map", "gamma_lambda_map"]),
    ],
)
def test_manifest_names_solvers_as_calibrain(tmp_path, solver, noise_types, names):
    grid = {**GRID, "orientation_type": ["fixed"], "alpha_SNR": [0.5]}
    manifest = run_grid(
        _builder(tmp_path), tmp_path / "runs", grid, noise_types, n_runs=1, solver=solver
    )
    assert manifest["solver"].tolist() == names
    for row in manifest.itertuples():
        assert (
            read_posterior_summary(tmp_path / "runs" / row.posterior_summary).metadata["solver"]
            == row.solver
        )


def test_manifest_paths_stay_inside_the_manifest_folder(grid_dir, tmp_path):
    """Relative and absolute paths inside the folder are read; a path that leaves it, a
    repeated header or a missing column are refused, naming the row."""
    original = pd.read_csv(grid_dir / MANIFEST)
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in original["posterior_summary"]:
        (folder / name).write_bytes((grid_dir / name).read_bytes())
    absolute = original.assign(
        posterior_summary=[str(folder / n) for n in original["posterior_summary"]]
    )
    absolute.to_csv(folder / MANIFEST, index=False)
    read = read_manifest(folder / MANIFEST)
    assert [p.name for p in read["path"]] == original["posterior_summary"].tolist()
    runs = aggregate_runs(folder / MANIFEST, orientation_type="fixed", noise_type="oracle")
    assert runs.x_true.shape == (4 * 13, 250)
    for bad, error, match in (
        ("../other/x.h5", UnsafePathError, "Row 3 .* '../other/x.h5'"),
        (str(tmp_path / "x.h5"), UnsafePathError, "Row 3 .*outside"),
        ("posterior_summary", FormatError, "Row 3 .* repeats the header"),
    ):
        broken = original.copy()
        broken.loc[1, "posterior_summary"] = bad
        broken.to_csv(folder / MANIFEST, index=False)
        with pytest.raises(error, match=match):
            aggregate_runs(folder / MANIFEST)
    original.drop(columns="posterior_summary").to_csv(folder / MANIFEST, index=False)
    with pytest.raises(FormatError, match="no 'posterior_summary' column"):
        read_manifest(folder / MANIFEST)
