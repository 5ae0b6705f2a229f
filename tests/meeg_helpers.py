"""One small MEG problem on a real MNE forward: 29 cortex-like sources, 23 magnetometers, two
active sources and white noise of variance 4 fT²."""

from __future__ import annotations

import numpy as np

NOISE_VAR = 4.0


def mag_problem(orientation: str = "fixed"):
    """``(fwd, info, leadfield data, y)`` with ``y = L x + noise`` (fT)."""
    from neurotorch.meeg.forward import (
        cortical_shell,
        forward_to_leadfield,
        make_forward,
        sensor_info,
        sphere_model,
    )

    rr, nn = cortical_shell(29, center=(0.0, 0.0, 0.0))
    info = sensor_info("mag", n_sensors=23)
    fwd = make_forward(info, rr, nn, sphere_model("mag"))
    data = forward_to_leadfield(fwd, orientation)
    flat = data.leadfield.reshape(23, -1)
    rng = np.random.default_rng(0)
    x = np.zeros((flat.shape[1], 31))
    x[[3, 17]] = 20.0 * rng.standard_normal((2, 31))
    y = flat @ x + np.sqrt(NOISE_VAR) * rng.standard_normal((23, 31))
    return fwd, info, data, y
