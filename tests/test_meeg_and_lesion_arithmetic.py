"""Behaviours of the M/EEG simulation and calibration, the atlas and the lesion network model
that other tests left unpinned (an ERP length never drawn, a tie at the threshold, isotonic
weights, an oblique voxel volume, the masked loss), each against a hand count, numpy or scipy."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.optimize import isotonic_regression

from neurotorch.connectome.atlas import Atlas
from neurotorch.meeg.calibration import (
    IsotonicRecalibration,
    coverage_curve,
    coverage_from_scores,
)
from neurotorch.meeg.simulation import ERPConfig, SourceSimulator, item_generator
from neurotorch.models.lesion_network import LesionNetworkModel


def test_erp_timing_draws_every_length_and_every_start():
    """Lengths are uniform on erp_min_length..n_post (both ends included) and, for a length D,
    the start is uniform on 0..n_post - D (both ends included): with 6 lengths and 21 (length,
    start) pairs, 30000 draws miss a pair with probability < 21 (1 - 1/126)^30000 ~ 1e-102."""
    config = ERPConfig(tmin=-0.1, tmax=0.5, sfreq=100.0, erp_min_length=45)
    n_post = config.n_post
    assert n_post == 50  # 60 samples, the onset at sample 10
    sim = SourceSimulator(config, dtype=torch.float64)
    lengths, starts = sim.draw_timing(30000, item_generator(0, 0))
    lengths, starts = lengths.numpy(), starts.numpy()
    expected = {(d, s) for d in range(45, n_post + 1) for s in range(n_post - d + 1)}
    assert set(zip(lengths.tolist(), starts.tolist(), strict=True)) == expected
    # uniform lengths: each of the 6 is drawn 5000 +- 5 sd (sd = sqrt(30000 * 1/6 * 5/6) ~ 65)
    counts = np.bincount(lengths - 45, minlength=6)
    assert np.all(np.abs(counts - 5000) < 5 * 65)


def test_coverage_counts_scores_at_the_threshold_as_covered():
    """A true value exactly on an interval's edge is inside it: the fraction of scores <= z."""
    scores = np.array([0.0, 0.5, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(
        coverage_from_scores(scores, np.array([0.0, 1.0, 1.5, 2.0])), [0.2, 0.8, 0.8, 1.0]
    )
    # an exact estimate is covered even by the level-0 interval (z = 0, zero width)
    x = np.arange(12.0).reshape(3, 4)
    curve = coverage_curve(x, x.copy(), np.ones(3), levels=np.array([0.0, 0.5]), mode="pointwise")
    np.testing.assert_array_equal(np.asarray(curve), [1.0, 1.0])


def test_isotonic_fit_uses_its_weights():
    """Pool-adjacent-violators with weights: the pooled value is the weighted mean."""
    levels = np.array([0.2, 0.4, 0.6])
    empirical = np.array([0.5, 0.3, 0.9])
    weights = np.array([3.0, 1.0, 2.0])
    iso = IsotonicRecalibration().fit(levels, empirical, weights=weights)
    pooled = (3 * 0.5 + 1 * 0.3) / 4  # 0.45, not the unweighted 0.4
    np.testing.assert_allclose(iso.predict(levels), [pooled, pooled, 0.9], rtol=1e-12)
    reference = isotonic_regression(empirical, weights=weights).x
    np.testing.assert_allclose(iso.predict(levels), reference, rtol=1e-12)


def test_isotonic_fit_does_not_depend_on_the_order_of_its_levels():
    levels = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    empirical = np.array([0.05, 0.35, 0.3, 0.6, 0.95])
    ordered = IsotonicRecalibration().fit(levels, empirical)
    shuffled = IsotonicRecalibration().fit(levels[[3, 0, 4, 2, 1]], empirical[[3, 0, 4, 2, 1]])
    grid = np.linspace(0.0, 1.0, 21)
    np.testing.assert_allclose(shuffled.predict(grid), ordered.predict(grid), rtol=1e-12)
    np.testing.assert_allclose(ordered.predict(levels), [0.05, 0.325, 0.325, 0.6, 0.95])


def test_regional_damage_volume_uses_the_voxel_volume_of_an_oblique_grid():
    """The volume of a voxel is |det| of the affine's 3x3 part (8 mm^3 for 2 mm voxels, whatever
    the rotation), not the product of its diagonal."""
    angle = np.deg2rad(30.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]]
    )
    affine = np.eye(4)
    affine[:3, :3] = 2.0 * rotation
    affine[:3, 3] = [-5.0, -6.0, -4.0]
    labels = np.zeros((6, 6, 4), dtype=np.int16)
    labels[:3] = 1
    labels[3:] = 2
    lesion = np.zeros(labels.shape, dtype=np.uint8)
    lesion[1:5, 2:4, 1:3] = 1  # 8 voxels in each parcel
    atlas = Atlas.from_files(nib.Nifti1Image(labels, affine), {1: "one", 2: "two"})
    frame = atlas.regional_damage({"les": nib.Nifti1Image(lesion, affine)}).set_index("index")
    for label in (1, 2):
        hit = int(np.count_nonzero((labels == label) & (lesion == 1)))
        assert frame.loc[label, "n_lesioned_voxels"] == hit == 8
        assert frame.loc[label, "lesioned_volume_mm3"] == pytest.approx(hit * 8.0, rel=1e-12)


def test_lesion_network_loss_is_the_mean_over_the_voxels_it_keeps():
    """The loss is the mean squared error over every (seed, voxel) pair except each seed's own
    voxel: computed here with numpy's corrcoef and arctanh."""
    n_subjects, n_times, n_voxels = 3, 40, 6
    rng = np.random.default_rng(4)
    series = rng.standard_normal((n_subjects, n_times, n_voxels)).astype(np.float32)
    model = LesionNetworkModel(rank=2, n_seeds=3, n_voxels=n_voxels, seed=1)
    voxels = torch.tensor([0, 2, 5])
    with torch.no_grad():
        loss = model._loss({"timeseries": torch.from_numpy(series.copy())}, voxels)
    with np.errstate(divide="ignore"):  # r = 1 at each seed's own voxel, which is left out
        observed = np.mean(
            [np.arctanh(np.corrcoef(s.astype(np.float64).T)[voxels.numpy()]) for s in series],
            axis=0,
        )
    masks = np.zeros((3, n_voxels), dtype=np.float32)
    masks[np.arange(3), voxels.numpy()] = 1.0
    with torch.no_grad():
        predicted = model(torch.from_numpy(masks)).double().numpy()
    keep = masks == 0
    expected = np.mean((predicted - observed)[keep] ** 2)
    # float32 correlations: z within ~1e-6 of float64, the squared error within ~1e-5 relative
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_lesion_network_prediction_of_a_lesion_is_the_mean_of_its_voxels_predictions():
    """The model is linear in the seed weights (the mean over the lesion's voxels, as the seed of
    `network_map`), so a lesion's map is the average of its voxels' single-voxel maps."""
    n_voxels = 7
    model = LesionNetworkModel(rank=3, n_seeds=2, n_voxels=n_voxels, seed=2)
    with torch.no_grad():
        model.bias.copy_(torch.linspace(-1.0, 1.0, n_voxels))
        single = model(torch.eye(n_voxels)).double().numpy()
        lesion = torch.zeros(2, n_voxels)
        lesion[0, [1, 4, 5]] = 1.0
        lesion[1, 3] = 1.0
        predicted = model(lesion).double().numpy()
    np.testing.assert_allclose(predicted[0], single[[1, 4, 5]].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted[1], single[3], rtol=1e-6, atol=1e-7)
