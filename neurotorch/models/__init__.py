"""Small reference models for the main jobs (encoders, calibrators).

Classes are imported on first use (`neurotorch._lazy`).
"""

from __future__ import annotations

from neurotorch._lazy import lazy_getattr

_EXPORTS = {
    "LinearEncoder": "neurotorch.models.linear_encoder",
    "IsotonicCalibrator": "neurotorch.models.calibrator",
    "NeuralCalibrator": "neurotorch.models.calibrator",
    "LesionNetworkModel": "neurotorch.models.lesion_network",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
