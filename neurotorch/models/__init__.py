"""Small reference models for the main jobs (encoders, calibrators, lesion network maps), and
`PredictionWriter`, which writes their predictions with the items' ids.

Classes are imported on first use (`neurotorch._lazy`).
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "LinearEncoder": "neurotorch.models.linear_encoder",
    "IsotonicCalibrator": "neurotorch.models.calibrator",
    "NeuralCalibrator": "neurotorch.models.calibrator",
    "LesionNetworkModel": "neurotorch.models.lesion_network",
    "PredictionWriter": "neurotorch.models.predictions",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
