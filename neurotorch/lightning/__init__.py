"""Lightning DataModules over neurotorch datasets, with the bundled splits.

Classes are imported on first use (`neurotorch._lazy`).
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "LaionFMRIDataModule": "neurotorch.lightning.laion_fmri",
    "SensorSimDataModule": "neurotorch.lightning.meeg",
    "CalibrationDataModule": "neurotorch.lightning.meeg",
    "CalibrationRunsDataModule": "neurotorch.lightning.meeg",
    "ConnectomeDataModule": "neurotorch.lightning.connectome",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
