"""CaliBrain-style parameter grid: run order and seeds, summaries, manifest, aggregation, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurotorch.errors import FormatError, ParameterError
from neurotorch.meeg import layout
from neurotorch.meeg.calibration import coverage_curve
from neurotorch.meeg.grid import (
    MANIFEST,
    aggregate_runs,
    calibrate_runs,
    parameter_grid,
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
