"""Simulated M/EEG trials and calibrator training data as torch datasets (imports MNE on use)."""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "SimulatedSensorDataset": "neurotorch.data.meeg.simulation",
    "SimulatedSensorBatches": "neurotorch.data.meeg.simulation",
    "CalibrationDataset": "neurotorch.data.meeg.calibration",
    "CalibrationBatches": "neurotorch.data.meeg.calibration",
    "CalibrationRunsDataset": "neurotorch.data.meeg.calibration",
    "FMRIInformedSensors": "neurotorch.data.meeg.from_fmri",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
