"""Bayesian minimum-norm posterior, coverage of its credible intervals and isotonic recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from meeg_helpers import one_torch_thread  # noqa: F401 - a fixture

from neurotorch.errors import ImplausibleDataError, NonFiniteError, ParameterError
from neurotorch.meeg.calibration import (
    DEFAULT_LEVELS,
    FIT_LEVELS,
    IsotonicRecalibration,
    calibration_metrics,
    coverage_curve,
    ellipsoid_coverage_curve,
)
from neurotorch.meeg.posterior import bmn_posterior


def _numpy_posterior(lf: np.ndarray, y: np.ndarray, gamma: float, noise_var: float):
    """Float64 closed form through the source-space precision matrix."""
    flat = lf.reshape(lf.shape[0], -1)
    cov = np.linalg.inv(flat.T @ flat / noise_var + np.eye(flat.shape[1]) / gamma)
    return cov @ flat.T @ y / noise_var, cov


@pytest.mark.parametrize("k", [None, 3, 2])
def test_posterior_equals_numpy_closed_form(k):
    rng = np.random.default_rng(1)
    shape = (15, 30) if k is None else (15, 30, k)
    lf = rng.standard_normal(shape)
    y = rng.standard_normal((3, 15, 6))
    gammas, noise = np.array([0.5, 1.0, 4.0]), np.array([0.2, 1.0, 3.0])
    post = bmn_posterior(
        torch.tensor(y, dtype=torch.float32),
        torch.tensor(lf),
        torch.tensor(gammas),
        torch.tensor(noise),
    )
    for b in range(3):
        mean, cov = _numpy_posterior(lf, y[b], gammas[b], noise[b])
        nk = cov.shape[0]
        np.testing.assert_allclose(post.mean[b].reshape(nk, -1).numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(post.var[b].reshape(-1).numpy(), np.diag(cov), rtol=1e-4)
        if k is not None:
            blocks = np.stack([cov[k * i : k * i + k, k * i : k * i + k] for i in range(30)])
            np.testing.assert_allclose(post.cov_blocks[b].numpy(), blocks, rtol=1e-4, atol=1e-6)


def _prior_draws(lf: np.ndarray, n: int, gamma: float, noise_var: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, np.sqrt(gamma), (n, *lf.shape[1:], 2))
    flat = x.reshape(n, -1, 2)
    y = lf.reshape(lf.shape[0], -1) @ flat + rng.normal(0, np.sqrt(noise_var), (n, lf.shape[0], 2))
    return x, torch.tensor(y)


@pytest.fixture(scope="module")
def leadfield():
    return np.random.default_rng(2).standard_normal((20, 60))


def test_coverage_matches_nominal_on_prior_draws(leadfield):
    gamma, noise_var = 2.0, 5.0
    x, y = _prior_draws(leadfield, 1000, gamma, noise_var, seed=3)
    post = bmn_posterior(y, torch.tensor(leadfield), gamma, noise_var)
    curve = coverage_curve(x, post.mean.numpy(), post.var.numpy())
    assert np.abs(curve - DEFAULT_LEVELS).max() <= 0.02


def test_free_orientation_ellipsoids_cover_at_nominal_level():
    lf = np.random.default_rng(4).standard_normal((20, 30, 3))
    x, y = _prior_draws(lf, 1000, 1.0, 2.0, seed=5)
    post = bmn_posterior(y, torch.tensor(lf), 1.0, 2.0)
    curve = ellipsoid_coverage_curve(x, post.mean.numpy(), post.cov_blocks.numpy())
    assert np.abs(curve - DEFAULT_LEVELS).max() <= 0.02
    marginal = coverage_curve(x, post.mean.numpy(), post.var.numpy())
    assert np.abs(marginal - DEFAULT_LEVELS).max() <= 0.02


# CaliBrain's names: "underconfidence" is empirical < nominal (noise assumed too small)
@pytest.mark.parametrize(("noise_factor", "direction"), [(0.25, "under"), (10.0, "over")])
def test_misspecified_noise_is_recalibrated_by_isotonic_regression(noise_factor, direction):
    lf = np.random.default_rng(2).standard_normal((40, 40))
    gamma, noise_var = 2.0, 5.0
    x, y = _prior_draws(lf, 1000, gamma, noise_var, seed=6)
    post = bmn_posterior(y, torch.tensor(lf), gamma, noise_var * noise_factor)
    mean, var = post.mean.numpy(), post.var.numpy()
    raw = coverage_curve(x, mean, var)
    assert calibration_metrics(DEFAULT_LEVELS, raw)[f"max_{direction}confidence_deviation"] > 0.03
    train = coverage_curve(x[:500], mean[:500], var[:500], FIT_LEVELS)
    iso = IsotonicRecalibration().fit(FIT_LEVELS, train)
    recalibrated = coverage_curve(x[500:], mean[500:], var[500:], iso.recalibrate(DEFAULT_LEVELS))
    assert np.abs(recalibrated - DEFAULT_LEVELS).max() <= 0.03


def test_isotonic_fit_and_inverse():
    levels = np.array([0.2, 0.4, 0.6, 0.8])
    iso = IsotonicRecalibration().fit(levels, np.array([0.3, 0.25, 0.5, 0.7]))
    # pool-adjacent-violators merges the first two points into their mean
    np.testing.assert_allclose(iso.predict(levels), [0.275, 0.275, 0.5, 0.7])
    targets = np.array([0.1, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(iso.predict(iso.recalibrate(targets)), targets, atol=1e-3)
    # by hand: 0.275 is the plateau 0.2..0.4 (its right end); 0.3 lies a quarter up to (0.6, 0.5)
    flat = IsotonicRecalibration().fit(levels, np.array([0.3, 0.25, 0.5, 0.7]))
    np.testing.assert_allclose(
        flat.recalibrate(np.array([0.275, 0.3])), [0.4, 0.4 + 0.2 * 0.025 / 0.225]
    )
    restored = IsotonicRecalibration.from_dict(iso.to_dict())
    np.testing.assert_allclose(restored.predict(levels), iso.predict(levels))
    with pytest.raises(ParameterError, match="fit"):
        IsotonicRecalibration().predict(levels)


def test_calibration_metrics_by_hand():
    metrics = calibration_metrics(np.array([0.2, 0.5, 0.8]), np.array([0.3, 0.4, 0.8]))
    assert metrics == pytest.approx(
        {
            "max_underconfidence_deviation": 0.1,
            "max_overconfidence_deviation": 0.1,
            "mean_absolute_deviation": 0.2 / 3,
            "mean_signed_deviation": 0.0,
        }
    )
    # CaliBrain's own example: empirical below nominal is its "underconfidence" deviation
    metrics = calibration_metrics(np.array([0.5, 0.9]), np.array([0.3, 0.8]))
    assert metrics["max_underconfidence_deviation"] == pytest.approx(0.2)
    assert metrics["max_overconfidence_deviation"] == 0.0
    assert metrics["mean_signed_deviation"] == pytest.approx(-0.15)


def test_coverage_counts_by_hand():
    x = np.array([[0.0, 1.0, 2.0, 3.0]])
    mean = np.zeros((1, 4))
    var = np.ones(1)
    # |z| = 0, 1, 2, 3; the 68.27 % interval is |z| <= 1, the 95.45 % one |z| <= 2
    levels = np.array([0.6827, 0.9545, 0.9974])
    np.testing.assert_allclose(
        coverage_curve(x, mean, var, levels, mode="pointwise"), [0.5, 0.75, 1.0]
    )
    # time-averaged: mean_t x = 1.5 against sd sqrt(1/4) = 0.5, i.e. |z| = 3, inside only z = 3.01
    np.testing.assert_allclose(coverage_curve(x, mean, var, levels), [0.0, 0.0, 1.0])
    one = coverage_curve(x, mean, var, 0.9545, mode="pointwise")  # one number: one level
    assert one.shape == (1,) and one[0] == 0.75 and "0.9545: 0.75" in repr(one)
    assert len(one.to_frame()) == 1
    with pytest.raises(ParameterError, match="numbers"):  # text is never parsed
        coverage_curve(x, mean, var, "0.9545")
    with pytest.raises(ValueError, match="var"):
        coverage_curve(x, mean, np.ones(4))
    with pytest.raises(ValueError, match=r"x_true \(1, 4\) and mean \(2, 4\)"):  # as given
        coverage_curve(x, np.zeros((2, 4)), var)
    with pytest.raises(ParameterError, match="mode"):
        coverage_curve(x, mean, var, mode="aggregated")


def test_bad_posterior_and_coverage_inputs_raise_named_errors():
    from neurotorch.errors import NonFiniteError, ShapeMismatchError
    from neurotorch.meeg.posterior import baseline_noise_var, learn_hyperparameters

    lf = torch.tensor(np.random.default_rng(0).standard_normal((5, 7)))
    y = torch.ones(2, 5, 4, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match="y holds NaN"):
        bmn_posterior(y * float("nan"), lf, 1.0, 1.0)
    with pytest.raises(NonFiniteError, match="leadfield"):
        bmn_posterior(y, lf * float("inf"), 1.0, 1.0)
    with pytest.raises(ShapeMismatchError, match="same M"):
        bmn_posterior(y, lf[:4], 1.0, 1.0)
    with pytest.raises(ParameterError, match="gamma must be finite and > 0"):
        bmn_posterior(y, lf, torch.tensor([1.0, -1.0]), 1.0)
    with pytest.raises(ParameterError, match="noise_var"):
        bmn_posterior(y, lf, 1.0, 0.0)
    with pytest.raises(ShapeMismatchError, match="one value per trial"):
        bmn_posterior(y, lf, torch.ones(3), 1.0)
    with pytest.raises(ParameterError, match="all zeros"):
        learn_hyperparameters(torch.zeros(1, 5, 4), lf, 1.0)
    with pytest.raises(ParameterError, match="max_iter"):
        learn_hyperparameters(y, lf, 1.0, max_iter=0)
    with pytest.raises(NonFiniteError):
        baseline_noise_var(y * float("nan"))
    x = np.zeros((3, 4))
    with pytest.raises(NonFiniteError, match="mean"):
        coverage_curve(x, x * np.nan, np.ones(3))
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        coverage_curve(x, x, np.ones(3), np.array([0.5, 1.5]))
    with pytest.raises(NonFiniteError, match="cov_blocks"):
        ellipsoid_coverage_curve(
            np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.full((2, 3, 3), np.nan)
        )


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("solver", ["BMN", "eloreta", "gamma_map", "gamma_map_sflex"])
def test_posteriors_do_not_depend_on_the_unit_of_the_data(solver):
    """The same trial in SI units (Am, V, V/Am, V²) and in neurotorch's (nAm, µV, µV/nAm, µV²)
    has the same posterior, rescaled: a solver's stopping rule must not depend on the scale of
    its prior variances (in SI a prior variance is ~1e-16 Am²)."""
    from neurotorch.meeg.solvers import fit_posterior

    rng = np.random.default_rng(3)
    lf = rng.standard_normal((16, 40)) * 0.3  # µV/nAm
    coords = rng.uniform(-0.03, 0.03, (40, 3))
    x = np.zeros((40, 50))
    x[[3, 20]] = 20.0 * rng.standard_normal((2, 50))  # nAm
    y = lf @ x + 2.0 * rng.standard_normal((16, 50))  # µV
    ours = fit_posterior(
        solver, torch.tensor(y)[None], torch.tensor(lf), noise_var=4.0, src_coords=coords
    )
    si = fit_posterior(
        solver,
        torch.tensor(y * 1e-6)[None],  # V
        torch.tensor(lf * 1e3),  # V/Am = 1e-6 V / 1e-9 Am
        noise_var=4.0e-12,  # V²
        src_coords=coords,
    )
    assert float(si.gamma[0]) * 1e18 == pytest.approx(float(ours.gamma[0]), rel=1e-7)
    mean, var = ours.posterior.mean[0].numpy(), ours.posterior.var[0].numpy()
    np.testing.assert_allclose(
        si.posterior.mean[0].numpy() * 1e9, mean, rtol=0, atol=1e-7 * np.abs(mean).max()
    )
    np.testing.assert_allclose(
        si.posterior.var[0].numpy() * 1e18, var, rtol=0, atol=1e-7 * var.max()
    )


def test_coverage_refuses_impossible_variances_and_returns_its_levels():
    """Negative (beyond rounding) or non-finite variances are refused, never counted as zeros;
    a rounded zero (-1e-17 of a variance of 1) counts as 0; the curve carries its levels."""
    x = np.array([[0.0, 1.0, 2.0, 3.0], [0.5, 0.5, 0.5, 0.5]])
    mean = np.zeros((2, 4))
    levels = np.array([0.6827, 0.9545])
    for bad in (np.array([1.0, -0.5]), np.array([1.0, -1e-3])):
        with pytest.raises(ImplausibleDataError, match="negative variance"):
            coverage_curve(x, mean, bad, levels, mode="pointwise")
        with pytest.raises(ParameterError):  # an argument error, as well as implausible data
            coverage_curve(x, mean, bad, levels)
    with pytest.raises(NonFiniteError, match="NaN"):
        coverage_curve(x, mean, np.array([1.0, np.nan]), levels)
    rounded = coverage_curve(x, mean, np.array([1.0, -1e-17]), levels, mode="pointwise")
    # |z| of the first source: 0, 1, 2, 3; the second has variance 0 and misses every sample
    np.testing.assert_array_equal(np.asarray(rounded), [2 / 8, 3 / 8])
    np.testing.assert_array_equal(rounded.levels, levels)
    assert type(np.asarray(rounded)) is np.ndarray and type(rounded - levels) is np.ndarray
    table = rounded.to_frame()
    assert table.columns.tolist() == ["nominal", "empirical"]
    assert table["empirical"].tolist() == [0.25, 0.375]
    assert "0.6827: 0.250" in repr(rounded) and str(rounded) == repr(rounded)
    blocks = np.tile(np.eye(3), (2, 1, 1))
    blocks[1, 0, 0] = -1.0  # an indefinite covariance
    with pytest.raises(ImplausibleDataError, match="positive semi-definite"):
        ellipsoid_coverage_curve(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), blocks, levels)
    curve = ellipsoid_coverage_curve(
        np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.tile(np.eye(3), (2, 1, 1)), levels
    )
    np.testing.assert_array_equal(curve.levels, levels)
