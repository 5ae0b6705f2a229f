"""CaliBrain's error metrics checked by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.meeg.metrics import earth_movers_distance, error_metrics, mean_posterior_std


def test_error_metrics_by_hand():
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    x_hat = np.array([[0.0, 3.0], [2.0, 0.0]])
    # pointwise differences 1, 0, -2, 0; time-averaged 0.5 and -1
    assert error_metrics(x, x_hat) == pytest.approx(
        {"mse": 5 / 4, "mae": 3 / 4, "rmse": np.sqrt(5 / 4), "rmae": np.sqrt(3 / 4)}
    )
    averaged = error_metrics(x, x_hat, "time_averaged")
    assert averaged["mse"] == pytest.approx((0.25 + 1) / 2)
    # free orientation compares amplitudes: |(3, 4)| = 5 against |(0, 0)| = 0
    free = np.zeros((1, 2, 1))
    free[0, :, 0] = (3.0, 4.0)
    assert error_metrics(free, np.zeros_like(free))["mae"] == pytest.approx(5.0)
    with pytest.raises(ShapeMismatchError):
        error_metrics(x, x_hat[:1])
    with pytest.raises(ParameterError, match="mode"):
        error_metrics(x, x_hat, "aggregated")


def test_mean_posterior_std_by_hand():
    assert mean_posterior_std(np.array([4.0, 16.0])) == pytest.approx(3.0)
    assert mean_posterior_std(np.array([4.0, 16.0]), 4, "time_averaged") == pytest.approx(1.5)
    assert mean_posterior_std(np.array([[1.0, 3.0, 5.0]])) == pytest.approx(np.sqrt(3.0))


def test_earth_movers_distance_by_hand():
    coords = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5]])
    truth = np.array([[2.0], [0], [0], [0]])
    estimate = np.array([[0.0], [1], [1], [0]])
    # all mass at the origin moves half a unit 1 away, half 2 away
    assert earth_movers_distance(truth, estimate, coords) == pytest.approx(1.5)
    assert earth_movers_distance(truth, truth, coords) == pytest.approx(0.0, abs=1e-12)
    assert earth_movers_distance(truth, np.zeros_like(truth), coords) == np.inf


def _sparse_estimate(n_true: int, seed: int):
    """Truth on ``n_true`` of 290 sources; an estimate with mass on all of them, most of it
    nearly pruned (masses down to ~1e-14 of the total, as gamma-MAP and sFlex leave them)."""
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-0.05, 0.05, (290, 3))
    truth = np.zeros((290, 30))
    truth[rng.choice(290, n_true, replace=False)] = rng.standard_normal((n_true, 30))
    scale = np.exp(rng.uniform(-32.0, 0.0, 290))[:, None]
    return truth, rng.standard_normal((290, 30)) * scale, coords


def test_earth_movers_distance_from_one_source_is_the_mean_distance():
    """One true source: every unit of estimated mass travels from it, so the distance is the
    mass-weighted mean distance (computed here by hand)."""
    truth, estimate, coords = _sparse_estimate(1, seed=0)
    source = np.flatnonzero(truth.any(axis=1))[0]
    mass = np.linalg.norm(estimate, axis=1)
    mass = np.where(mass > 1e-12, mass, 0.0)
    expected = np.sum(mass / mass.sum() * np.linalg.norm(coords - coords[source], axis=1))
    assert earth_movers_distance(truth, estimate, coords) == pytest.approx(expected, rel=1e-12)
    # and symmetric: the estimate's mass all moves to the one true source
    assert earth_movers_distance(estimate, truth, coords) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n_true", [2, 5])
@pytest.mark.parametrize("mode", ["pointwise", "time_averaged"])
def test_earth_movers_distance_with_nearly_pruned_masses_equals_pot(n_true, mode):
    """Masses spanning 14 orders of magnitude (where an LP presolve declares the transport
    infeasible) against POT's network simplex, which CaliBrain calls."""
    ot = pytest.importorskip("ot")
    from scipy.spatial.distance import cdist

    truth, estimate, coords = _sparse_estimate(n_true, seed=n_true)
    a, b = (
        np.linalg.norm(x.mean(-1, keepdims=True) if mode == "time_averaged" else x, axis=1)
        for x in (truth, estimate)
    )
    keep_a, keep_b = a > 1e-12, b > 1e-12
    expected = ot.emd2(
        a[keep_a] / a[keep_a].sum(),
        b[keep_b] / b[keep_b].sum(),
        cdist(coords[keep_a], coords[keep_b]),
    )
    ours = earth_movers_distance(truth, estimate, coords, mode)
    assert ours == pytest.approx(expected, rel=1e-8)
