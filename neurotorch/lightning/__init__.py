"""Lightning DataModules over neurotorch datasets, with the bundled splits.

Classes are imported on first use (`neurotorch._lazy`).
"""

from __future__ import annotations

from neurotorch._lazy import lazy_getattr

_EXPORTS = {
    "LaionFMRIDataModule": "neurotorch.lightning.laion_fmri",
    "SensorSimDataModule": "neurotorch.lightning.meeg",
    "CalibrationDataModule": "neurotorch.lightning.meeg",
    "ConnectomeDataModule": "neurotorch.lightning.connectome",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
