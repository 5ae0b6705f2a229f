"""Lesion network mapping against numpy/scipy computations and the planted ground truth."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from neurotorch.connectome import (
    ConnectomeBatches,
    SeedWeights,
    benjamini_hochberg,
    load_lesions,
    network_map,
    seed_correlations,
)
from neurotorch.connectome.stats import two_sided_p
from neurotorch.errors import OrientationMismatchError, ShapeMismatchError
from neurotorch.synthetic.connectome import (
    BATCH_DIR,
    LESION_DIR,
    LESIONS_TABLE,
    NETWORKS_FILE,
    make_connectome,
)


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    root = tmp_path_factory.mktemp("lnm") / "synthetic"
    return make_connectome(root, n_subjects=8, n_timepoints=40, voxel_mm=8, seed=3)


@pytest.fixture(scope="module")
def batches(connectome):
    return ConnectomeBatches(connectome / BATCH_DIR)


@pytest.fixture(scope="module")
def result(connectome, batches):
    return network_map(connectome / LESION_DIR, batches)


def _bh(p):
    """Benjamini-Hochberg written out plainly: q_(i) = min_{j >= i} p_(j) m / j."""
    order = np.argsort(p)
    m = len(p)
    q_sorted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, p[order[rank - 1]] * m / rank)
        q_sorted[rank - 1] = running
    q = np.empty(m)
    q[order] = q_sorted
    return q


def _corrcoef_with_seed(seed, x, block=256):
    """np.corrcoef of a seed with each voxel column, in blocks to keep the matrices small."""
    return np.concatenate(
        [
            np.corrcoef(np.column_stack([seed, x[:, start : start + block]]), rowvar=False)[0, 1:]
            for start in range(0, x.shape[1], block)
        ]
    )


def _reference_z(batches, lesion_mask):
    """Per-subject Fisher z via np.corrcoef, float64."""
    zs = []
    for subject in range(batches.n_subjects):
        x = batches.read_subject(subject).astype(np.float64)
        seed = x[:, lesion_mask].mean(axis=1)
        r = _corrcoef_with_seed(seed, x)
        zs.append(np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7)))
    return np.array(zs)


def test_correlations_match_corrcoef(batches):
    rng = np.random.default_rng(0)
    x = batches.read_subject(1) + 50.0  # a large mean must not cost precision
    masks = np.zeros((3, batches.n_voxels), dtype=bool)
    for k in range(3):
        masks[k, rng.choice(batches.n_voxels, size=5 + k, replace=False)] = True
    r = seed_correlations(torch.from_numpy(x), SeedWeights.from_masks(masks)).numpy()
    for k in range(3):
        seed = x.astype(np.float64)[:, masks[k]].mean(axis=1)
        expected = _corrcoef_with_seed(seed, x.astype(np.float64))
        np.testing.assert_allclose(r[k], expected, atol=1e-5)


def test_statistics_match_scipy(connectome, batches, result):
    lesions = load_lesions(connectome / LESION_DIR, batches)
    for k in (0, 3):
        z = _reference_z(batches, lesions.masks[k])
        np.testing.assert_allclose(result.mean_z[k], z.mean(axis=0), rtol=1e-5, atol=1e-5)
        test = stats.ttest_1samp(z, 0.0, axis=0)
        np.testing.assert_allclose(result.t[k], test.statistic, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result.p[k], test.pvalue, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(result.q[k], _bh(result.p[k]), rtol=1e-12)
        np.testing.assert_allclose(
            result.q[k], stats.false_discovery_control(result.p[k]), rtol=1e-12
        )


def test_p_maps_are_not_significant_outside_the_brain(result):
    """The saved maps hold 0 outside the brain mask, the p value maps 1: thresholding a written
    q map at 0.05 gives the voxels of the FDR mask, not every voxel outside the brain."""
    outside = np.ones(result.mask_shape, dtype=bool)
    outside[tuple(result.mask_indices.T)] = False
    assert outside.sum() > 100
    assert np.all(result.to_nifti("t", 0).get_fdata()[outside] == 0)
    for kind in ("p", "q"):
        volume = result.to_nifti(kind, 0).get_fdata()
        assert np.all(volume[outside] == 1)
        assert np.count_nonzero(volume < 0.05) == np.count_nonzero(result.map(kind, 0) < 0.05)


def test_planted_network_recovered(connectome, result):
    labels = np.asarray(nib.load(connectome / NETWORKS_FILE).dataobj)[tuple(result.mask_indices.T)]
    truth = pd.read_csv(connectome / LESIONS_TABLE).set_index("lesion")["network"]
    for k, name in enumerate(result.names):
        t = result.t[k]
        top = np.argsort(-np.nan_to_num(t, nan=-np.inf))[: int(np.ceil(0.05 * len(t)))]
        assert np.mean(labels[top] == truth[name]) >= 0.8, name


def test_flipped_lesion_file_is_reoriented(connectome, batches, result):
    """A lesion stored left-right flipped with a truthful affine gives the same map."""
    path = sorted((connectome / LESION_DIR).iterdir())[0]
    img = nib.load(path)
    data = np.asarray(img.dataobj)[::-1]
    flip = img.affine.copy()
    flip[:, 0] *= -1
    flip[:3, 3] = img.affine[:3, 3] + img.affine[:3, 0] * (data.shape[0] - 1)
    flipped = nib.Nifti1Image(data, flip)
    assert nib.aff2axcodes(flipped.affine)[0] == "L"
    lesions = load_lesions({"flipped": flipped}, batches)
    np.testing.assert_array_equal(lesions.masks[0], load_lesions(path, batches).masks[0])


def _las_copy(batches: ConnectomeBatches, folder) -> ConnectomeBatches:
    """The connectome stored left-right flipped (LAS, as FSL's MNI templates are), written as
    Lacuna's converters write: (3, voxels) indices, plain deflate, no space attribute."""
    folder.mkdir()
    shape = batches.mask_shape
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = shape[0] - 1
    indices = batches.mask_indices.copy()
    indices[:, 0] = shape[0] - 1 - indices[:, 0]
    order = np.lexsort(indices.T[::-1])  # C order on the flipped grid
    series = np.stack([batches.read_subject(s) for s in range(batches.n_subjects)])[:, :, order]
    with h5py.File(folder / "connectome_batch_000.h5", "w") as f:
        f.create_dataset("timeseries", data=series, chunks=(1, *series.shape[1:]), compression=1)
        f["mask_indices"] = indices[order].T
        f["mask_affine"] = batches.affine @ flip
        f.attrs.update(
            n_subjects=series.shape[0],
            n_timepoints=series.shape[1],
            n_voxels=series.shape[2],
            mask_shape=np.array(shape),
        )
    return ConnectomeBatches(folder, space=batches.space)


def test_a_connectome_stored_las_maps_its_lesions_on_its_own_grid(connectome, batches, tmp_path):
    """A lesion on the LAS connectome's own grid (and the RAS lesion file) is accepted and gives
    the RAS result at the same world positions."""
    las = _las_copy(batches, tmp_path / "las")
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    path = sorted((connectome / LESION_DIR).iterdir())[0]
    img = nib.load(path)
    on_las_grid = nib.Nifti1Image(np.asarray(img.dataobj)[::-1], las.affine)
    world = nib.affines.apply_affine(batches.affine, batches.mask_indices)
    world_las = nib.affines.apply_affine(las.affine, las.mask_indices)
    same_place = [np.flatnonzero((world_las == w).all(axis=1))[0] for w in world]
    ras = network_map({"lesion": img}, batches)
    for lesion in (on_las_grid, img):
        mask = load_lesions({"lesion": lesion}, las).masks[0]
        np.testing.assert_array_equal(mask[same_place], load_lesions(path, batches).masks[0])
        mapped = network_map({"lesion": lesion}, las)
        np.testing.assert_allclose(mapped.mean_z[0][same_place], ras.mean_z[0], atol=1e-6)


def test_lesion_from_finer_grid_is_resampled(connectome, batches):
    """A 4 mm lesion sampled nearest-neighbour lands on the same 8 mm voxels as its centres."""
    path = sorted((connectome / LESION_DIR).iterdir())[0]
    img = nib.load(path)
    fine = np.repeat(np.repeat(np.repeat(np.asarray(img.dataobj), 2, 0), 2, 1), 2, 2)
    affine = img.affine.copy()
    affine[:3, :3] /= 2
    affine[:3, 3] -= np.diag(affine)[:3] / 2  # fine voxel centres straddle the coarse centres
    fine_img = nib.Nifti1Image(fine, affine)
    with pytest.raises(ShapeMismatchError, match="resample=True"):
        load_lesions({"fine": fine_img}, batches)  # another resolution only when asked for
    lesions = load_lesions({"fine": fine_img}, batches, resample=True)
    np.testing.assert_array_equal(lesions.masks[0], load_lesions(path, batches).masks[0])


def test_a_resampled_lesion_between_voxel_centres_is_named_as_such(batches):
    """A small lesion well inside the brain that covers no 8 mm voxel centre: the message says
    that sampling at the centres lost it, not only that it may be in another space."""
    affine = batches.affine.copy()
    affine[:3, :3] /= 4  # a 2 mm grid with the connectome's origin
    fine = np.zeros(tuple(4 * np.array(batches.mask_shape)), dtype=np.uint8)
    i, j, k = 4 * batches.mask_indices[len(batches.mask_indices) // 2]  # a centre in the brain
    fine[i + 1 : i + 3, j + 1 : j + 3, k + 1 : k + 3] = 1  # 2x2x2 voxels beside it
    with pytest.raises(ShapeMismatchError, match="64 mm³ that covers none of those centres"):
        load_lesions({"small": nib.Nifti1Image(fine, affine)}, batches, resample=True)


def test_lesion_header_flip_raises(connectome, batches):
    path = sorted((connectome / LESION_DIR).iterdir())[0]
    img = nib.load(path)
    bad = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    flipped = img.affine.copy()
    flipped[0, 0] *= -1
    bad.set_qform(flipped, code=1)
    bad.set_sform(img.affine, code=1)
    with pytest.raises(OrientationMismatchError):
        load_lesions({"bad": bad}, batches)


def test_lesion_outside_mask_raises(batches):
    affine = batches.affine.copy()
    affine[:3, 3] += 1000.0  # a lesion from another space entirely
    img = nib.Nifti1Image(batches.mask.astype(np.uint8), affine)
    with pytest.raises(ShapeMismatchError):
        load_lesions({"elsewhere": img}, batches)


def test_save_writes_maps_and_summary(tmp_path, result):
    paths = result.save(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["lesion"]) == result.names
    img = nib.load(tmp_path / f"{result.names[0]}_desc-t_map.nii.gz")
    vol = np.asarray(img.dataobj)
    np.testing.assert_allclose(vol[tuple(result.mask_indices.T)], result.t[0])
    # 5 maps + FDR mask per lesion, 2 group maps, summary, provenance
    assert len(paths) == 6 * len(result.names) + 4


def test_fdr_skips_nan_voxels():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=(3, 200)) ** 3
    p[:, ::17] = np.nan
    q = benjamini_hochberg(p)
    finite = ~np.isnan(p[0])
    assert np.all(np.isnan(q[:, ~finite]))
    for row in range(3):
        np.testing.assert_allclose(q[row, finite], _bh(p[row, finite]), rtol=1e-12)


@pytest.mark.parametrize("dof", [1, 2, 5, 19, 60, 150])
def test_two_sided_p_matches_scipy(dof):
    rng = np.random.default_rng(dof)
    t = rng.standard_normal(5000) * rng.choice([0.01, 1.0, 5.0, 50.0], 5000)
    t[:4] = [0.0, np.nan, np.inf, -np.inf]
    expected = 2 * stats.t.sf(np.abs(t), dof)
    np.testing.assert_allclose(two_sided_p(t, dof), expected, rtol=1e-8, atol=0)
