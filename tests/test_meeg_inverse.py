"""MNE's inverse solutions in neurotorch units, against the closed-form minimum norm."""

from __future__ import annotations

import numpy as np
import pytest

from neurotorch.errors import ParameterError, ShapeMismatchError
from neurotorch.meeg.forward import (
    cortical_shell,
    forward_to_leadfield,
    make_forward,
    sensor_info,
    sphere_model,
)
from neurotorch.meeg.inverse import gamma_map, minimum_norm

mne = pytest.importorskip("mne")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def meg():
    rr, nn = cortical_shell(29, center=(0.0, 0.0, 0.0))
    info = sensor_info("mag", n_sensors=23)
    fwd = make_forward(info, rr, nn, sphere_model("mag"))
    rng = np.random.default_rng(0)
    lf = forward_to_leadfield(fwd, "fixed").leadfield  # fT/nAm
    x = np.zeros((29, 31))
    x[[3, 17]] = 20.0 * rng.standard_normal((2, 31))
    y = lf @ x + 2.0 * rng.standard_normal((23, 31))  # fT, noise variance 4 fT²
    return fwd, info, lf, x, y


def test_mne_minimum_norm_equals_the_closed_form(meg):
    """MNE's operator (white noise, no depth weighting) scales the source variance so that
    trace(G R G^T) = M for the whitened gain: gamma = M sigma² / ||L||_F², noise lambda2 sigma²."""
    fwd, info, lf, _, y = meg
    sigma2, lambda2 = 4.0, 0.5
    gamma = lf.shape[0] * sigma2 / np.linalg.norm(lf) ** 2
    cov_y = gamma * lf @ lf.T + lambda2 * sigma2 * np.eye(lf.shape[0])
    expected = gamma * lf.T @ np.linalg.solve(cov_y, y)
    ours = minimum_norm(fwd, info, y, sigma2, "MNE", lambda2)
    # the forward is stored in float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_free_eeg_and_sparse_estimates_have_neurotorch_shapes(meg):
    fwd, info, _, x, y = meg
    sparse = gamma_map(fwd, info, y, 4.0, alpha=1.0)
    assert sparse.shape == x.shape and (np.abs(sparse).sum(1) == 0).any()
    rr, nn = cortical_shell(13)
    eeg_info = sensor_info("eeg", n_sensors=16)
    eeg_fwd = make_forward(eeg_info, rr, nn, sphere_model("eeg"))
    y_eeg = np.random.default_rng(1).standard_normal((16, 7))
    free = minimum_norm(eeg_fwd, eeg_info, y_eeg, 1.0, "eLORETA", orientation_type="free")
    assert free.shape == (13, 3, 7) and np.isfinite(free).all()


def test_inverse_inputs_are_checked(meg):
    fwd, info, _, _, y = meg
    with pytest.raises(ParameterError, match="method"):
        minimum_norm(fwd, info, y, 4.0, "LORETA")
    with pytest.raises(ParameterError, match="noise_var"):
        minimum_norm(fwd, info, y, 0.0)
    with pytest.raises(ShapeMismatchError, match="n_channels=23"):
        minimum_norm(fwd, info, y[:5], 4.0)
    with pytest.raises(ShapeMismatchError, match="same channels"):
        minimum_norm(fwd, sensor_info("mag", n_sensors=22), y, 4.0)
