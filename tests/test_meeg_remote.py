"""CaliBrain roots behind s3:// (a real S3 server on loopback) read like the local root."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurotorch.data.meeg.calibration import CalibrationRunsDataset
from neurotorch.errors import DataNotDownloadedError
from neurotorch.meeg import layout
from neurotorch.meeg.leadfield import LeadfieldBuilder
from neurotorch.meeg.summaries import read_run

pytest_plugins = ["s3_server"]

SUMMARIES = "posterior_summaries"
AGGREGATED = "calibration_datasets"


@pytest.fixture(scope="module")
def calibrain_root(tmp_path_factory) -> Path:
    from neurotorch.synthetic.meeg import make_calibrain

    return make_calibrain(tmp_path_factory.mktemp("calibrain") / "cb", size="tiny", progress=False)


@pytest.fixture(scope="module")
def calibrain_url(moto_server, calibrain_root) -> str:
    return moto_server.upload_tree(calibrain_root, "calibrain-private", prefix="data")


@pytest.fixture(scope="module")
def options(moto_server) -> dict:
    return moto_server.options()


@pytest.mark.parametrize("orientation", ["fixed", "free"])
def test_leadfield_through_s3_equals_the_local_file(
    calibrain_root, calibrain_url, options, orientation
):
    remote = LeadfieldBuilder(f"{calibrain_url}/{layout.LEADFIELD_DIR}", options).get_leadfield(
        "sub-meg01", orientation, return_metadata=True
    )
    with np.load(calibrain_root / layout.leadfield_file("sub-meg01", orientation)) as raw:
        np.testing.assert_array_equal(remote.leadfield, raw["leadfield"])  # stored in fT/nAm
        np.testing.assert_array_equal(remote.src_coords, raw["src_coords"])
        assert remote.ch_names == raw["ch_names"].tolist()
        assert remote.sensor_unitmult == int(raw["sensor_unitmult"]) == layout.UNITM_F
        if orientation == "free":
            np.testing.assert_array_equal(remote.Q_basis, raw["Q_basis"])


def test_calibrain_data_may_be_a_url(calibrain_root, calibrain_url, options, monkeypatch):
    monkeypatch.setenv(layout.ENV_VAR, calibrain_url)
    builder = LeadfieldBuilder(storage_options=options)
    assert builder.path("fsaverage", "fixed") == (
        f"{calibrain_url}/{layout.leadfield_file('fsaverage', 'fixed')}"
    )
    copy = pickle.loads(pickle.dumps(builder))  # what a spawned DataLoader worker receives
    with np.load(calibrain_root / layout.leadfield_file("fsaverage", "fixed")) as raw:
        np.testing.assert_array_equal(copy.get_leadfield("fsaverage", "fixed"), raw["leadfield"])
    with pytest.raises(DataNotDownloadedError, match="nobody_fixed_leadfield.npz"):
        builder.get_leadfield("nobody", "fixed")
    with pytest.raises(ValueError, match="local folder"):
        builder.get_leadfield("fsaverage", "fixed", retrieve_mode="simulate", n_sources=10)


def test_posterior_summary_through_s3_equals_h5py(calibrain_root, calibrain_url, options):
    name = sorted((calibrain_root / SUMMARIES).iterdir())[0].name
    run = read_run(f"{calibrain_url}/{SUMMARIES}/{name}", options)
    assert run.path == f"{calibrain_url}/{SUMMARIES}/{name}"
    with h5py.File(calibrain_root / SUMMARIES / name, "r") as handle:
        np.testing.assert_array_equal(run.x_true, handle["x_true"][()])
        np.testing.assert_array_equal(run.x_hat, handle["x_hat"][()])
        variances = np.diag(handle["posterior_cov"][()]).reshape(run.var.shape)
        metadata = json.loads(handle.attrs["metadata_json"])
    np.testing.assert_allclose(run.var, variances, rtol=0, atol=0)
    assert run.metadata == metadata


def test_aggregated_run_and_sidecar_through_s3(calibrain_root, calibrain_url, options):
    name = sorted((calibrain_root / AGGREGATED).glob("*.npz"))[0].name
    run = read_run(f"{calibrain_url}/{AGGREGATED}/{name}", options)
    with np.load(calibrain_root / AGGREGATED / name) as raw:
        np.testing.assert_array_equal(run.x_true, raw["x_true"])
        np.testing.assert_array_equal(run.x_hat, raw["x_hat"])
    sidecar = json.loads((calibrain_root / AGGREGATED / name).with_suffix(".json").read_text())
    for key, value in sidecar["dataset_info"].items():
        assert run.metadata[key] == value


def test_runs_dataset_and_datamodule_from_a_url_prefix(calibrain_root, calibrain_url, options):
    from neurotorch.lightning.meeg import CalibrationDataModule, CalibrationRunsDataModule

    local = CalibrationRunsDataset(calibrain_root / SUMMARIES)
    remote = pickle.loads(
        pickle.dumps(CalibrationRunsDataset(f"{calibrain_url}/{SUMMARIES}", options))
    )
    assert [Path(p).name for p in remote.paths] == [p.name for p in local.paths]
    for index in range(len(local)):
        want, got = local[index], remote[index]
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())

    module = CalibrationRunsDataModule(f"{calibrain_url}/{AGGREGATED}", storage_options=options)
    module.setup()
    assert sum(len(module.datasets[split]) for split in ("train", "val", "test")) == 4
    sim = CalibrationDataModule(
        leadfield={"data_dir": calibrain_url, "storage_options": options},
        nnz=(1,),
        train_length=2,
        val_length=1,
        test_length=1,
    )
    sim.setup()
    with np.load(calibrain_root / layout.leadfield_file("fsaverage", "fixed")) as raw:
        np.testing.assert_array_equal(sim.leadfield_data.leadfield, raw["leadfield"])


def test_describe_a_calibrain_url(calibrain_root, calibrain_url, options):
    from neurotorch.describe import describe

    remote, local = describe(calibrain_url, options), describe(calibrain_root)
    assert remote.kinds == local.kinds == ["calibrain"]
    assert remote.meeg[0].leadfields.equals(local.meeg[0].leadfields)
    assert remote.meeg[0].posterior_summaries == local.meeg[0].posterior_summaries == 4
