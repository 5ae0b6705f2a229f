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
