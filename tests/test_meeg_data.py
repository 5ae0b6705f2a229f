"""M/EEG datasets, CaliBrain readers, fMRI-informed sensors and the synthetic writers."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurotorch.data.meeg.calibration import (
    CalibrationBatches,
    CalibrationDataset,
    CalibrationRunsDataset,
)
from neurotorch.data.meeg.from_fmri import FMRIInformedSensors, mask_voxel_coords_mm
from neurotorch.data.meeg.simulation import SimulatedSensorBatches, SimulatedSensorDataset
from neurotorch.data.registry import load_dataset
from neurotorch.errors import CorruptFileError, FormatError, ParameterError
from neurotorch.meeg.leadfield import LeadfieldData, random_leadfield
from neurotorch.meeg.summaries import read_aggregated_run, read_posterior_summary


@pytest.fixture(scope="module")
def leadfield() -> LeadfieldData:
    return random_leadfield("fixed", 16, 40, seed=0)


def test_map_style_items_depend_on_seed_and_index_only(leadfield):
    a = SimulatedSensorDataset(leadfield, length=10, nnz=(1, 3), seed=5)
    b = SimulatedSensorDataset(leadfield, length=10, nnz=(1, 3), seed=5)
    for i in (7, 2):
        first, second = a[i], b[i]
        assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(a[1]["y"], a[2]["y"])
    item = a[4]
    assert item["y"].shape == (16, 250) and item["x"].shape == (40, 250)
    active = item["active_indices"][item["active_indices"] >= 0]
    assert len(active) == int(item["nnz"])
    clean = leadfield.leadfield @ item["x"].double().numpy()  # y = L x + noise
    noise = item["y"].double().numpy() - clean
    alpha = float(item["alpha"])
    ratio = np.linalg.norm(noise) / np.linalg.norm(clean)
    # float32 sensors: the noise is recovered to ~1e-6 of its own size
    np.testing.assert_allclose(ratio, (1 - alpha) / alpha, rtol=1e-4)
    with pytest.raises(IndexError):
        a[10]


@pytest.mark.slow
def test_items_are_identical_in_worker_processes(leadfield):
    ds = SimulatedSensorDataset(leadfield, length=6, nnz=(1, 3, 5), seed=1)
    loaded = list(DataLoader(ds, batch_size=3, num_workers=2))
    expected = torch.stack([ds[i]["y"] for i in range(6)])
    assert torch.equal(torch.cat([b["y"] for b in loaded]), expected)
    batches = SimulatedSensorBatches(leadfield, batch_size=4, n_batches=5, nnz=(2,), seed=3)
    from_workers = list(DataLoader(batches, batch_size=None, num_workers=2))
    direct = SimulatedSensorBatches(leadfield, batch_size=4, n_batches=5, nnz=(2,), seed=3)
    in_process = list(direct)
    assert len(from_workers) == 5
    key = lambda b: b["y"].sum().item()  # noqa: E731
    assert sorted(map(key, from_workers)) == sorted(map(key, in_process))
    assert sorted(map(key, list(direct))) != sorted(map(key, in_process))  # next epoch differs


def test_calibration_items_hold_the_posterior(leadfield):
    ds = CalibrationDataset(leadfield, length=4, nnz=(2,), alpha=(0.5,), seed=0, gamma="oracle")
    item = ds[1]
    lf = leadfield.leadfield
    gamma, noise = float(item["gamma"]), float(item["assumed_noise_var"])
    cov_y = gamma * lf @ lf.T + noise * np.eye(16)
    expected = gamma * lf.T @ np.linalg.solve(cov_y, item["y"].double().numpy())
    np.testing.assert_allclose(
        item["mean"].numpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()
    )
    np.testing.assert_allclose(gamma, np.mean(item["x_true"].double().numpy() ** 2), rtol=1e-5)
    batch = next(
        iter(
            CalibrationBatches(
                leadfield, batch_size=3, n_batches=1, nnz=(2,), alpha=(0.5,), noise_var_scale=2.0
            )
        )
    )
    assert batch["mean"].shape == (3, 40, 250) and batch["var"].shape == (3, 40)
    torch.testing.assert_close(batch["assumed_noise_var"], 2.0 * batch["noise_var"])
    with pytest.raises(ValueError, match="alpha < 1"):
        CalibrationDataset(leadfield, nnz=(1,), alpha=(1.0,))


def test_learned_gamma_is_calibrains_fixed_point(leadfield):
    """gamma="learn" (default) solves CaliBrain's update, checked with dense numpy algebra."""
    item = CalibrationDataset(leadfield, length=2, nnz=(3,), alpha=(0.4,), seed=5)[0]
    lf, y = leadfield.leadfield, item["y"].double().numpy()
    gamma, noise = float(item["gamma"]), float(item["assumed_noise_var"])
    assert noise == pytest.approx(float(item["noise_var"]), rel=1e-6)
    c_inv = np.linalg.inv(gamma * lf @ lf.T + noise * np.eye(lf.shape[0]))
    llt = lf @ lf.T
    scale = np.sum(y**2) / np.linalg.norm(lf, 2) ** 2
    update = scale * np.trace(y.T @ c_inv @ llt @ c_inv @ y) / y.shape[1] / np.trace(c_inv @ llt)
    assert update == pytest.approx(gamma, rel=1e-6)


@pytest.mark.parametrize("noise_type", ["baseline", "adaptive_joint_learning"])
def test_noise_types(leadfield, noise_type):
    ds = CalibrationDataset(leadfield, length=2, nnz=(2,), alpha=(0.5,), noise_type=noise_type)
    item = ds[0]
    y = item["y"].double().numpy()
    if (
        noise_type == "baseline"
    ):  # mean over sensors of the variance of the 125 pre-stimulus samples
        expected = np.mean(np.var(y[:, :125], axis=1))
        assert float(item["assumed_noise_var"]) == pytest.approx(expected, rel=1e-5)
    else:
        assert float(item["assumed_noise_var"]) > 0
    with pytest.raises(ParameterError, match="noise_type"):
        CalibrationDataset(leadfield, nnz=(2,), noise_type="known")
    with pytest.raises(ParameterError, match="gamma='learn'"):
        CalibrationDataset(leadfield, nnz=(2,), gamma=2.0, noise_type="adaptive_joint_learning")


def test_registry_builders(leadfield):
    ds = load_dataset("meeg-sim", split="val", leadfield=leadfield, length=5, nnz=(1,))
    assert len(ds) == 5 and isinstance(ds, SimulatedSensorDataset)
    train = load_dataset("meeg-sim", split="train", leadfield=leadfield, length=5, nnz=(1,))
    assert not torch.equal(ds[0]["y"], train[0]["y"])
    stream = load_dataset("meeg-calibration", streaming=True, retrieve_mode="random", n_sensors=8, n_sources=20,
                          batch_size=2, n_batches=1, nnz=(1,), alpha=(0.5,))  # fmt: skip
    assert next(iter(stream))["y"].shape == (2, 8, 250)


def _write_summary_h5(path, x_true, x_hat, cov, metadata, q_basis=None):
    with h5py.File(path, "w") as handle:
        handle["x_true"], handle["x_hat"], handle["posterior_cov"] = x_true, x_hat, cov
        handle["Q_basis"] = np.nan if q_basis is None else q_basis
        handle.attrs["metadata_json"] = json.dumps(metadata)


def test_read_calibrain_files_written_independently(tmp_path):
    rng = np.random.default_rng(0)
    n, k, t = 5, 3, 4
    root = rng.standard_normal((n * k, n * k))
    cov = root @ root.T
    x = rng.standard_normal((n, k, t))
    meta = {
        "orientation_type": "free",
        "coil_type": 1,
        "alpha_SNR": 0.3,
        "nnz": 2,
        "seed": 9,
        "run_id": 4,
    }
    _write_summary_h5(
        tmp_path / "posterior_summary_run00000004_seed9.h5", x, x + 1, cov, meta, np.ones((n, 3, 3))
    )
    run = read_posterior_summary(tmp_path / "posterior_summary_run00000004_seed9.h5")
    for i in range(n):
        np.testing.assert_allclose(run.cov_blocks[i], cov[i * k : (i + 1) * k, i * k : (i + 1) * k])
    np.testing.assert_allclose(run.var.reshape(-1), np.diag(cov))
    assert run.metadata["alpha_SNR"] == 0.3 and run.Q_basis.shape == (n, 3, 3)

    fixed_cov = np.diag(np.arange(1.0, 6.0))
    _write_summary_h5(
        tmp_path / "posterior_summary_run00000005_seed1.h5",
        x[:, 0],
        x[:, 0],
        fixed_cov,
        {"orientation_type": "fixed"},
    )
    np.testing.assert_allclose(
        read_posterior_summary(tmp_path / "posterior_summary_run00000005_seed1.h5").var,
        np.arange(1.0, 6.0),
    )

    npz = tmp_path / "fsaverage_bmn_run00000001_seed3.npz"
    np.savez_compressed(npz, x_true=x[:, 0], x_hat=x[:, 0] * 2, posterior_var=np.full(n, 0.5),
                        orientation_type=np.array("fixed"), alpha_SNR=np.array(0.7), nnz=np.array(1),
                        info=np.array({"pickled": True}, dtype=object))  # fmt: skip
    agg = read_aggregated_run(npz)
    np.testing.assert_allclose(agg.x_hat, 2 * x[:, 0])
    assert agg.metadata["alpha_SNR"] == 0.7 and "info" not in agg.metadata
    items = CalibrationRunsDataset(tmp_path)
    assert len(items) == 2 and items[0]["cov_blocks"].shape == (n, k, k)
    assert float(items[0]["alpha"]) == pytest.approx(0.3)

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="bad.npz"):
        read_aggregated_run(tmp_path / "bad.npz")
    _write_summary_h5(
        tmp_path / "flat.h5",
        x.reshape(n * k, t),
        x.reshape(n * k, t),
        cov,
        {"orientation_type": "free"},
    )
    with pytest.raises(FormatError, match=r"\(N, K, T\)"):
        read_posterior_summary(tmp_path / "flat.h5")


def _brute_force_sources(betas, coords_mm, src_mm, max_distance):
    distance = np.linalg.norm(src_mm[:, None, :] - coords_mm[None, :, :], axis=-1)
    nearest = distance.argmin(axis=1)
    inside = distance.min(axis=1) <= max_distance
    return np.where(inside, betas[nearest], 0.0), inside


def test_fmri_informed_sensors_sample_betas_at_sources():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -8.0]
    mask = np.zeros((10, 12, 9), dtype=bool)
    mask[2:8, 3:10, 2:7] = True
    coords = mask_voxel_coords_mm(mask, affine)
    world = np.argwhere(mask) * 2.0 + affine[:3, 3]
    np.testing.assert_allclose(coords, world)
    rng = np.random.default_rng(0)
    src_head = rng.uniform(-0.012, 0.012, (30, 3))  # metres; some fall outside the mask
    head_to_t1w = np.diag([1000.0, 1000.0, 1000.0, 1.0])
    head_to_t1w[:3, 3] = [1.0, 0.5, 0.0]
    lf = LeadfieldData(rng.standard_normal((8, 30)), src_coords=src_head)
    betas = rng.standard_normal((3, len(coords))).astype(np.float32)
    trials = [{"betas": torch.from_numpy(b), "label": f"img{i}"} for i, b in enumerate(betas)]
    ds = FMRIInformedSensors(trials, coords, lf, head_to_t1w, alpha=0.4, seed=2)
    src_mm = src_head * 1000.0 + head_to_t1w[:3, 3]
    expected, inside = _brute_force_sources(betas[1], coords, src_mm, np.sqrt(3.0) + 1e-6)
    assert 0 < inside.sum() < 30
    np.testing.assert_array_equal(ds.in_mask, inside)
    item = ds[1]
    assert item["label"] == "img1"
    np.testing.assert_allclose(item["sources"].numpy(), expected, rtol=1e-6)
    clean = lf.leadfield @ expected
    noise = item["sensors"].double().numpy() - clean
    np.testing.assert_allclose(np.linalg.norm(noise) / np.linalg.norm(clean), 0.6 / 0.4, rtol=1e-4)
    assert torch.equal(ds[1]["sensors"], item["sensors"])


@pytest.mark.slow
def test_write_subject_leadfields_places_sources_in_the_mask(tmp_path):
    from neurotorch.fmri import layout as fmri_layout
    from neurotorch.meeg.leadfield import load_leadfield_npz, read_transform
    from neurotorch.synthetic.meeg import write_subject_leadfields

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 48, 40)], indexing="ij"))
    mask = (
        np.sum((grid / np.array([0.9, 0.95, 0.85])[:, None, None, None]) ** 2, axis=0) <= 1
    ).astype(np.uint8)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-36.0, -50.0, -30.0]
    path = tmp_path / fmri_layout.anatomical_brain_mask("sub-01")
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(mask, affine), path)
    out = write_subject_leadfields(tmp_path, "sub-01", n_sources=200, seed=0)
    fixed = load_leadfield_npz(out / "1284src_leadfield" / "sub-01_fixed_leadfield.npz")
    free = load_leadfield_npz(out / "1284src_leadfield" / "sub-01_free_leadfield.npz")
    transform = read_transform(out / "sub-01_head-to-T1w.txt")
    src_mm = fixed.src_coords @ transform[:3, :3].T + transform[:3, 3]
    vox = np.rint(src_mm @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3]).astype(
        int
    )
    assert mask[vox[:, 0], vox[:, 1], vox[:, 2]].all()
    assert fixed.leadfield.shape == (64, 200) and free.leadfield.shape == (64, 200, 3)
    np.testing.assert_allclose(
        fixed.leadfield, np.einsum("msk,sk->ms", free.leadfield, fixed.src_normals), rtol=1e-10
    )


@pytest.mark.slow
def test_make_calibrain_round_trip(tmp_path):
    from neurotorch.synthetic.meeg import make_calibrain

    root = make_calibrain(tmp_path / "cb", size="tiny", seed=0, progress=False)
    assert make_calibrain(tmp_path / "cb", size="tiny", seed=0) == root  # reused
    summaries = CalibrationRunsDataset(root / "posterior_summaries")
    aggregated = CalibrationRunsDataset(root / "calibration_datasets")
    assert len(summaries) == len(aggregated) == 4
    by_run = {int(item["run_id"]): item for item in aggregated}
    for a in summaries:
        b = by_run[int(a["run_id"])]
        torch.testing.assert_close(a["var"], b["var"])
        torch.testing.assert_close(a["x_true"], b["x_true"])
    with pytest.raises(FileExistsError):
        make_calibrain(tmp_path / "cb", size="small", seed=0)


@pytest.mark.slow
def test_synthetic_laion_fmri_triplets(tmp_path):
    from neurotorch.data.fmri.betas import BetasDataset
    from neurotorch.synthetic.laion_fmri import make_laion_fmri

    root = make_laion_fmri(tmp_path / "laion", size="tiny", seed=0, meeg=True, progress=False)
    betas = BetasDataset(root, "sub-01", features="CLIP", read={"cache_dir": tmp_path / "cache"})
    triplets = FMRIInformedSensors.from_laion_fmri(betas, root, "sub-01", alpha=0.5, seed=1)
    assert triplets.in_mask.all()  # the writer places every source inside the brain mask
    item = triplets[3]
    assert item["sensors"].shape == (64,) and item["embedding"].shape == (1024,)
    assert torch.count_nonzero(item["sources"]) > 0


def test_runs_with_non_finite_values_or_no_files_are_refused(tmp_path):
    from neurotorch.errors import DataNotDownloadedError, NonFiniteError

    path = tmp_path / "s_bmn_run00000001_seed1.npz"
    x = np.zeros((4, 3))
    np.savez(
        path, x_true=x, x_hat=np.where(np.eye(4, 3) > 0, np.nan, 0.0), posterior_var=np.ones(4)
    )
    with pytest.raises(NonFiniteError, match="x_hat.*s_bmn_run00000001_seed1"):
        read_aggregated_run(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotDownloadedError, match="No posterior summaries"):
        CalibrationRunsDataset(tmp_path / "empty")
