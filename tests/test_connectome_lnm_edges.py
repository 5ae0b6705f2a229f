"""Lesion network mapping at the edges: constant and non-finite series, the seed voxel, lesion
values, spaces and files, subject subsets, PINI, thresholded maps, permutations, devices.

Every expected value comes from numpy/scipy/sklearn computations written out here, on tiny
hand-made connectomes (7 subjects in files of 4 and 3, 23 timepoints, a 5 x 6 x 4 grid).
"""

from __future__ import annotations

import gzip
import json
import math
from fractions import Fraction

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from neurotorch.connectome import ConnectomeBatches, load_lesions, network_map
from neurotorch.connectome.atlas import Atlas
from neurotorch.connectome.lnm import R_MAX, Z_MAX
from neurotorch.connectome.permutation import fwe_p_values, permutation_max_t, sign_flips
from neurotorch.connectome.pini import pini_masks, select_voxels
from neurotorch.connectome.stats import ShiftedSums
from neurotorch.connectome.writer import write_batch
from neurotorch.errors import (
    CorruptFileError,
    FormatError,
    NonFiniteError,
    ParameterError,
    ShapeMismatchError,
    SpaceMismatchError,
)

SHAPE = (5, 6, 4)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-4.0, -6.0, -3.0]
N_SUBJECTS, N_TIMEPOINTS = 7, 23
SPACE = "MNI152NLin6Asym"


def _write_connectome(folder, series, space=SPACE):
    """Batch files of 4 and 3 subjects from (subjects, timepoints, voxels) series on the grid."""
    folder.mkdir(exist_ok=True)
    idx = np.argwhere(np.ones(SHAPE, dtype=bool))
    for k, (start, stop) in enumerate([(0, 4), (4, len(series))]):
        write_batch(
            folder / f"t_chunk_{k:03d}.h5",
            iter(series[start:stop]),
            [f"sub-{s:02d}" for s in range(start, stop)],
            idx,
            AFFINE,
            SHAPE,
            N_TIMEPOINTS,
            space=space,
        )
    return ConnectomeBatches(folder)


def _series(seed=0):
    """Random series with a shared component, so that maps are not all noise."""
    rng = np.random.default_rng(seed)
    n_voxels = int(np.prod(SHAPE))
    shared = rng.standard_normal((N_SUBJECTS, N_TIMEPOINTS, 1))
    loading = rng.uniform(-1, 1, n_voxels)
    noise = rng.standard_normal((N_SUBJECTS, N_TIMEPOINTS, n_voxels))
    return (shared * loading + noise + 5.0).astype(np.float32)


def _reference_z(series, seed_columns):
    """Per-subject Fisher z in float64: np.corrcoef where defined, 0 where a series is constant."""
    z = np.zeros((len(series), series.shape[2]))
    for s, x in enumerate(series.astype(np.float64)):
        seed = x[:, seed_columns].mean(axis=1)
        for v in range(x.shape[1]):
            if np.ptp(x[:, v]) > 0 and np.ptp(seed) > 0:
                r = np.corrcoef(seed, x[:, v])[0, 1]
                z[s, v] = np.arctanh(np.clip(r, -R_MAX, R_MAX))
    return z


def _lesion(columns):
    mask = np.zeros(int(np.prod(SHAPE)), dtype=bool)
    mask[columns] = True
    return mask


@pytest.fixture()
def series():
    return _series()


def test_constant_series_give_r_zero_for_that_subject(tmp_path, series):
    """Lacuna's rule: a voxel constant in one subject has r = 0 there and keeps its map."""
    series[2, :, 10] = 0.3  # constant in subject 2 only
    series[:, :, 11] = 0.7  # constant in every subject
    series[4, :, [20, 21]] = 1.9  # two of the lesion's voxels are constant in subject 4
    batches = _write_connectome(tmp_path, series)
    lesion = [20, 21, 33, 34]
    result = network_map({"les": _lesion(lesion)}, batches)
    z = _reference_z(series[:, :, :], lesion)
    assert np.all(np.isfinite(result.t)) and np.all(np.isfinite(result.mean_z))
    np.testing.assert_allclose(result.mean_z[0], z.mean(axis=0), atol=2e-5)
    varying = np.flatnonzero(np.ptp(z, axis=0) > 0)
    expected = stats.ttest_1samp(z[:, varying], 0.0)
    np.testing.assert_allclose(result.t[0, varying], expected.statistic, rtol=2e-4, atol=2e-4)
    assert (result.mean_z[0, 11], result.t[0, 11], result.p[0, 11], result.q[0, 11]) == (
        0,
        0,
        1,
        1,
    )


def test_constant_seed_gives_r_zero_everywhere_for_that_subject(tmp_path, series):
    series[3, :, [40, 41]] = np.array([[2.5], [-1.25]])  # both lesion voxels constant in subject 3
    batches = _write_connectome(tmp_path, series)
    result = network_map({"les": _lesion([40, 41])}, batches)
    z = _reference_z(series, [40, 41])
    assert np.all(z[3] == 0)
    np.testing.assert_allclose(result.mean_z[0], z.mean(axis=0), atol=2e-5)


def test_non_finite_series_raise_naming_the_subject(tmp_path, series):
    series[5, 7, 30] = np.nan
    batches = _write_connectome(tmp_path, series)
    with pytest.raises(NonFiniteError, match=r"sub-05.*t_chunk_001\.h5"):
        network_map({"les": _lesion([1, 2])}, batches)
    # the subjects without NaN are served as usual
    network_map({"les": _lesion([1, 2])}, batches, subjects=[0, 1, 2])


def test_seed_voxel_rule(tmp_path, series):
    """A one-voxel lesion: r = 1 at its voxel in every subject, so z = arctanh(1 - 2^-24)."""
    assert Z_MAX == pytest.approx(np.arctanh(1 - 2.0**-24), rel=1e-12)
    assert Z_MAX == pytest.approx(12.5 * math.log(2.0), rel=1e-8)  # 0.5 ln(2^25 - 1)
    batches = _write_connectome(tmp_path, series)
    result = network_map({"one": _lesion([17])}, batches)
    assert result.mean_z[0, 17] == pytest.approx(Z_MAX, rel=1e-6)
    assert result.t[0, 17] == np.inf and result.p[0, 17] == 0
    assert np.all(np.abs(np.delete(result.mean_z[0], 17)) < Z_MAX - 1)


def test_subject_subset_matches_a_direct_computation(tmp_path, series):
    batches = _write_connectome(tmp_path, series)
    subset = [6, 0, 3, 4]
    result = network_map({"les": _lesion([8, 9, 14])}, batches, subjects=subset)
    z = _reference_z(series[subset], [8, 9, 14])
    expected = stats.ttest_1samp(z, 0.0)
    assert result.n_subjects == 4
    np.testing.assert_allclose(result.mean_z[0], z.mean(axis=0), atol=2e-5)
    np.testing.assert_allclose(result.t[0], expected.statistic, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(result.p[0], expected.pvalue, rtol=2e-3, atol=1e-6)
    with pytest.raises(ParameterError):
        network_map({"les": _lesion([8])}, batches, subjects=[0, 0, 1])
    with pytest.raises(ParameterError):
        network_map({"les": _lesion([8])}, batches, subjects=[0, 7])


@pytest.mark.parametrize("subjects", ["012", [0.0, 1.0, 2.0], [2.9, 3.5, 4.99], [True, False, 2]])
def test_subjects_that_are_not_integers_are_refused_not_truncated(tmp_path, series, subjects):
    # a string must not become its characters, a float must not be truncated to another subject
    batches = _write_connectome(tmp_path, series)
    with pytest.raises(ParameterError, match=r"subjects\[0\] must be an integer"):
        network_map({"les": _lesion([8])}, batches, subjects=subjects)


def test_network_map_leaves_torch_threads_alone(tmp_path, series, monkeypatch):
    batches = _write_connectome(tmp_path, series)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    before = torch.get_num_threads()
    network_map({"les": _lesion([3])}, batches)
    assert calls == [] and torch.get_num_threads() == before


def _lesion_image(values):
    return nib.Nifti1Image(np.asarray(values, dtype=np.float32).reshape(SHAPE), AFFINE)


@pytest.mark.parametrize("odd_value", [2.0, 0.6, np.nan])
def test_non_binary_masks_are_refused_without_a_threshold(tmp_path, series, odd_value):
    batches = _write_connectome(tmp_path, series)
    values = np.zeros(int(np.prod(SHAPE)))
    values[[4, 5, 6]] = 1.0
    values[7] = odd_value
    with pytest.raises(FormatError, match="threshold"):
        load_lesions({"odd": _lesion_image(values)}, batches)
    if np.isfinite(odd_value):
        lesions = load_lesions({"odd": _lesion_image(values)}, batches, threshold=0.5)
        np.testing.assert_array_equal(lesions.masks[0], values > 0.5)
        assert lesions.volumes_mm3[0] == pytest.approx(np.sum(values > 0.5) * 8.0)


def test_truncated_lesion_file_is_named(tmp_path, series):
    batches = _write_connectome(tmp_path, series)
    path = tmp_path / "lesion.nii.gz"
    nib.save(_lesion_image(_lesion([4, 5])), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="lesion.nii.gz"):
        load_lesions(path, batches)
    path.write_bytes(gzip.compress(b"not a nifti file at all"))
    with pytest.raises(FormatError, match="lesion.nii.gz"):
        load_lesions(path, batches)


def test_lesion_space_must_match_the_connectome(tmp_path, series):
    batches = _write_connectome(tmp_path / "c", series)
    path = tmp_path / "sub-01_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz"
    nib.save(_lesion_image(_lesion([4, 5])), path)
    with pytest.raises(SpaceMismatchError, match="MNI152NLin2009cAsym"):
        load_lesions(path, batches)
    assert load_lesions(path, batches, allow_other_space=True).masks[0].sum() == 2
    assert load_lesions(path, batches, space=SPACE).masks[0].sum() == 2  # the caller knows better
    with pytest.raises(SpaceMismatchError):
        load_lesions({"x": _lesion([4])}, batches, space="MNI152NLin2009cAsym")
    unknown = _write_connectome(tmp_path / "u", series, space=None)
    assert unknown.space == "unknown"
    assert load_lesions(path, unknown).masks[0].sum() == 2  # nothing to compare with


def test_synthetic_connectome_space_is_nilearns_template(tmp_path):
    pytest.importorskip("nilearn")
    from neurotorch.synthetic.connectome import BATCH_DIR, make_connectome

    root = make_connectome(tmp_path / "s", n_subjects=2, n_timepoints=5, subjects_per_chunk=2)
    assert ConnectomeBatches(root / BATCH_DIR).space == "MNI152NLin2009aAsym"


def test_pini_selection_matches_sklearn_pca(tmp_path, series):
    decomposition = pytest.importorskip("sklearn.decomposition")
    batches = _write_connectome(tmp_path, series)
    columns = [2, 3, 8, 9, 14, 15, 20, 26, 27]
    masks = np.stack([_lesion(columns), _lesion([50, 51, 56])])
    seeds = pini_masks(masks, batches, range(N_SUBJECTS), percentile=40)
    for k, lesion_columns in enumerate([columns, [50, 51, 56]]):
        x = series[:, :, lesion_columns].astype(np.float64)
        r = np.array(
            [[np.corrcoef(s.mean(axis=1), s[:, v])[0, 1] for v in range(s.shape[1])] for s in x]
        )
        loadings = np.abs(decomposition.PCA(n_components=1).fit(r).components_[0])
        keep = loadings >= np.percentile(loadings, 40)
        np.testing.assert_array_equal(np.flatnonzero(seeds[k]), np.asarray(lesion_columns)[keep])
    assert 0 < seeds[0].sum() < len(columns)
    assert select_voxels(np.random.default_rng(0).standard_normal((7, 5)), 0).all()  # >= as Lacuna
    pini = network_map({"les": masks[0]}, batches, method="pini", pini_percentile=40)
    boes_on_selection = network_map({"les": seeds[0]}, batches)
    np.testing.assert_array_equal(pini.mean_z, boes_on_selection.mean_z)
    assert pini.seed_voxels[0] == seeds[0].sum() and pini.lesion_voxels[0] == len(columns)


def test_r_thresholded_maps_and_provenance(tmp_path, series):
    batches = _write_connectome(tmp_path / "c", series)
    result = network_map({"a": _lesion([8, 9]), "b": _lesion([44])}, batches)
    np.testing.assert_allclose(result.map("r", "a"), np.tanh(result.mean_z[0]), rtol=1e-6)
    paths = result.save(tmp_path / "out", alpha=0.01, t_threshold=3.0, table_format="tsv")
    names = {p.name for p in paths}
    assert {
        "summary.tsv",
        "provenance.json",
        "a_desc-r_map.nii.gz",
        "b_desc-fdr_mask.nii.gz",
    } <= names
    inside = tuple(result.mask_indices.T)
    for k, name in enumerate(result.names):
        t_mask = np.asarray(
            nib.load(tmp_path / "out" / f"{name}_desc-tthreshold_mask.nii.gz").dataobj
        )
        np.testing.assert_array_equal(t_mask[inside], np.abs(result.t[k]) > 3.0)
        fdr = np.asarray(nib.load(tmp_path / "out" / f"{name}_desc-fdr_mask.nii.gz").dataobj)
        np.testing.assert_array_equal(
            fdr[inside], stats.false_discovery_control(result.p[k]) < 0.01
        )
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["inputs"]["subjects"] == [f"sub-{s:02d}" for s in range(N_SUBJECTS)]
    assert record["inputs"]["connectome_space"] == SPACE
    assert record["parameters"]["method"] == "boes" and "torch" in record["versions"]
    assert set(record["outputs"]["files"]) == names - {"provenance.json"}
    summary = result.summary(alpha=0.01).set_index("lesion")
    for k, (name, lesion_columns) in enumerate({"a": [8, 9], "b": [44]}.items()):
        outside = np.abs(result.t[k]).astype(np.float64)
        outside[lesion_columns] = -1  # the seed voxel (t = inf for "b") is not the peak
        peak = AFFINE @ np.r_[np.unravel_index(np.argmax(outside), SHAPE), 1.0]
        row = summary.loc[name]
        assert (row.peak_x_mm, row.peak_y_mm, row.peak_z_mm) == tuple(peak[:3])
    assert summary.loc["b", "max_t"] == np.inf
    overlap = result.overlap(t_threshold=3.0)
    np.testing.assert_array_equal(overlap, (np.abs(result.t) > 3.0).sum(axis=0))
    for bad in (5, 0, 1, -0.1):
        with pytest.raises(ParameterError, match="alpha"):
            result.summary(alpha=bad)


def test_permutation_null_matches_scipy_per_permutation():
    rng = np.random.default_rng(11)
    z = rng.standard_normal((N_SUBJECTS, 2, 41)) + np.linspace(0, 1.5, 41)
    signs = sign_flips(37, N_SUBJECTS, seed=5)
    assert torch.equal(signs, sign_flips(37, N_SUBJECTS, seed=5))
    assert set(torch.unique(signs).tolist()) == {-1.0, 1.0}
    null = permutation_max_t(z.astype(np.float32), signs)
    flipped = signs.numpy()[:, :, None, None] * z.astype(np.float32).astype(np.float64)
    expected = np.abs(stats.ttest_1samp(flipped, 0.0, axis=1).statistic).max(axis=2)
    np.testing.assert_allclose(null, expected, rtol=1e-10)
    # a null max equal to |t| counts: (1 + 2) / (3 + 1)
    assert fwe_p_values(np.array([[-2.0]]), np.array([[1.0], [2.0], [3.0]]))[0, 0] == 0.75
    t = stats.ttest_1samp(z, 0.0).statistic
    p = fwe_p_values(t, null)
    for k in range(2):
        for v in (0, 20, 40):
            count = sum(null[i, k] >= abs(t[k, v]) for i in range(len(null)))
            assert p[k, v] == (1 + count) / (len(null) + 1)


def test_network_map_permutations(tmp_path, series):
    batches = _write_connectome(tmp_path, series)
    result = network_map({"les": _lesion([8, 9])}, batches, n_permutations=63, seed=2)
    again = network_map({"les": _lesion([8, 9])}, batches, n_permutations=63, seed=2)
    np.testing.assert_array_equal(result.p_fwe, again.p_fwe)
    z = _reference_z(series, [8, 9])[:, None, :]
    expected_null = permutation_max_t(z, sign_flips(63, N_SUBJECTS, 2))
    np.testing.assert_allclose(result.max_t_null, expected_null, rtol=1e-4)
    assert np.all(result.p_fwe >= result.p - 1e-12)  # FWER control is never less strict
    assert result.significant_fwe(0, 0.05).sum() <= (result.p[0] < 0.05).sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path, series):
    batches = _write_connectome(tmp_path, series)
    lesions = {"a": _lesion([8, 9]), "b": _lesion([30, 31, 36])}
    cpu = network_map(lesions, batches, n_permutations=31)
    gpu = network_map(lesions, batches, n_permutations=31, device="cuda")
    np.testing.assert_allclose(gpu.mean_z, cpu.mean_z, atol=1e-5)
    np.testing.assert_allclose(gpu.t, cpu.t, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu.max_t_null, cpu.max_t_null, rtol=1e-3)


def test_lesion_outside_grid_needs_resample(tmp_path, series):
    batches = _write_connectome(tmp_path, series)
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0  # half a voxel off
    img = nib.Nifti1Image(_lesion([4, 5]).reshape(SHAPE).astype(np.uint8), shifted)
    with pytest.raises(ShapeMismatchError, match="resample=True"):
        load_lesions({"off": img}, batches)
    assert load_lesions({"off": img}, batches, resample=True).masks[0].any()


def test_shifted_sums_keep_t_exact_for_large_z_with_tiny_spread():
    """z near the clip with a spread of a few float32 ulps: t against exact rational arithmetic."""
    ulp = np.spacing(np.float32(8.5))
    steps = np.array([0, 3, 1, 4, 1, 5, 9, 2, 6, 5, 3], dtype=np.float32)
    z = np.float32(8.5) + steps * ulp  # exact in float32
    sums = ShiftedSums((1,), torch.device("cpu"))
    for value in z:
        sums.add(torch.tensor([value]))
    mean, t = sums.mean_and_t()
    exact = [Fraction(float(v)) for v in z]
    n = len(exact)
    exact_mean = sum(exact) / n
    variance = sum((v - exact_mean) ** 2 for v in exact) / (n - 1)
    assert mean[0] == pytest.approx(float(exact_mean), rel=1e-15)
    assert t[0] == pytest.approx(float(exact_mean) / math.sqrt(float(variance) / n), rel=1e-9)


def _atlas_files(tmp_path, rng):
    """Labels 1, 2, 5, 7 on the connectome grid (shuffled), a TSV naming them and absent label 9."""
    labels = rng.choice([0, 1, 2, 5, 7], size=SHAPE, p=[0.2, 0.3, 0.2, 0.2, 0.1])
    image = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.int16), AFFINE), image)
    table = tmp_path / "atlas.tsv"
    table.write_text("name\tindex\nseven\t7\nnine\t9\none\t1\nfive\t5\ntwo\t2\n")
    return image, table, labels


@pytest.mark.parametrize("how", ["mean", "sum", "median", "percent"])
def test_atlas_aggregation_matches_numpy(tmp_path, series, how):
    rng = np.random.default_rng(12)
    image, table, labels = _atlas_files(tmp_path, rng)
    batches = _write_connectome(tmp_path / "c", series)
    result = network_map({"a": _lesion([8, 9]), "b": _lesion([44])}, batches)
    frame = Atlas.from_files(image, table).aggregate(result, kinds=("t", "r"), how=how)
    voxel_labels = labels[tuple(result.mask_indices.T)]
    reference = {
        "mean": np.mean,
        "sum": np.sum,
        "median": np.median,
        "percent": lambda v: 100.0 * np.count_nonzero(v) / v.size,
    }[how]
    assert len(frame) == 2 * 2 * 5  # lesions x maps x named parcels
    for row in frame.itertuples():
        values = result.map(row.map, row.lesion)[voxel_labels == row.index]
        assert row.n_voxels == values.size
        if values.size:
            assert row.value == pytest.approx(reference(values.astype(np.float64)), rel=1e-5)
        else:
            assert row.name == "nine" and np.isnan(row.value)


def test_regional_damage_counts_lesioned_voxels(tmp_path):
    rng = np.random.default_rng(13)
    image, _, labels = _atlas_files(tmp_path, rng)
    lut = tmp_path / "atlas.txt"
    lut.write_text("1 one\n2 two\n5 five\n7 seven\n")
    lesion = np.zeros(SHAPE, dtype=np.uint8)
    lesion[1:4, 2:5, 1:3] = 1
    lesion_path = tmp_path / "les.nii.gz"
    nib.save(nib.Nifti1Image(lesion, AFFINE), lesion_path)
    frame = Atlas.from_files(image, lut).regional_damage(lesion_path).set_index("index")
    for label in (1, 2, 5, 7):
        in_parcel = labels == label
        hit = np.count_nonzero(in_parcel & (lesion == 1))
        assert frame.loc[label, "n_lesioned_voxels"] == hit
        assert frame.loc[label, "percent_damaged"] == pytest.approx(100 * hit / in_parcel.sum())
        assert frame.loc[label, "lesioned_volume_mm3"] == pytest.approx(hit * 8.0)
    with pytest.raises(FormatError, match="threshold"):
        Atlas.from_files(image, lut).regional_damage(
            {"soft": nib.Nifti1Image(lesion * 0.5, AFFINE)}
        )


def test_atlas_tables_are_checked(tmp_path):
    image, _, _ = _atlas_files(tmp_path, np.random.default_rng(14))
    cases = {
        "missing.tsv": "index\tname\n1\tone\n2\ttwo\n",  # 5 and 7 are unnamed
        "twice.tsv": "index\tname\n1\tone\n1\tuno\n2\ttwo\n5\tf\n7\ts\n",
        "nocolumn.tsv": "label\tname\n1\tone\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(FormatError):
            Atlas.from_files(image, tmp_path / name)
    soft = nib.Nifti1Image(np.full(SHAPE, 1.5, dtype=np.float32), AFFINE)
    with pytest.raises(FormatError, match="integer labels"):
        Atlas.from_files(soft, {1: "one"})


def test_group_overlap_maps(tmp_path, series):
    batches = _write_connectome(tmp_path / "c", series)
    lesions = {"a": _lesion([8, 9]), "b": _lesion([9, 44]), "c": _lesion([9, 10, 44])}
    result = network_map(lesions, batches)
    np.testing.assert_array_equal(result.lesion_overlap(), np.sum(list(lesions.values()), axis=0))
    result.save(tmp_path / "out", alpha=0.2)
    inside = tuple(result.mask_indices.T)
    saved = np.asarray(nib.load(tmp_path / "out" / "group_desc-fdroverlap_map.nii.gz").dataobj)
    q = [stats.false_discovery_control(result.p[k]) for k in range(3)]
    np.testing.assert_array_equal(saved[inside], np.sum([qk < 0.2 for qk in q], axis=0))
    saved = np.asarray(nib.load(tmp_path / "out" / "group_desc-lesionoverlap_map.nii.gz").dataobj)
    assert saved[inside][9] == 3 and saved[inside][44] == 2 and saved[inside][8] == 1


def test_lnm_command_options_and_bad_alpha(tmp_path, series, capsys):
    from neurotorch.cli import main

    _write_connectome(tmp_path / "c", series)
    lesion_dir = tmp_path / "lesions"
    lesion_dir.mkdir()
    for name, columns in {"les-a": [8, 9], "les-b": [44, 45]}.items():
        nib.save(_lesion_image(_lesion(columns) * 2.0), lesion_dir / f"{name}.nii.gz")
    image, table, _ = _atlas_files(tmp_path, np.random.default_rng(15))
    base = ["lnm", str(lesion_dir), "--connectome", str(tmp_path / "c"), "--out"]
    for alpha in ("5", "0", "1"):
        assert main([*base, str(tmp_path / "bad"), "--alpha", alpha]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "--alpha" in err and "between 0 and 1" in err
    assert not (tmp_path / "bad").exists()
    assert main([*base, str(tmp_path / "out")]) == 1  # the masks hold 2: refused by default
    assert "threshold" in capsys.readouterr().err
    out = tmp_path / "out"
    options = ["--threshold", "1", "--atlas", str(image), "--atlas-labels", str(table)]
    options += ["--permutations", "15", "--t-threshold", "2.5", "--table-format", "tsv"]
    assert main([*base, str(out), *options]) == 0
    parcels = pd.read_csv(out / "parcels.tsv", sep="\t")
    assert set(parcels["lesion"]) == {"les-a", "les-b"} and set(parcels["map"]) == {"r", "t"}
    damage = pd.read_csv(out / "regional_damage.tsv", sep="\t")
    assert damage.groupby("lesion")["n_lesioned_voxels"].sum().to_dict() == {"les-a": 2, "les-b": 2}
    for suffix in ("desc-pfwe_map", "desc-fwe_mask", "desc-tthreshold_mask", "desc-r_map"):
        assert (out / f"les-a_{suffix}.nii.gz").exists()
    record = json.loads((out / "provenance.json").read_text())
    assert record["parameters"]["lesions"]["threshold"] == 1.0
    assert record["parameters"]["n_permutations"] == 15
    assert {"parcels.tsv", "regional_damage.tsv", "summary.tsv"} <= set(record["outputs"]["files"])
