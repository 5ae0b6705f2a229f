"""torch Datasets over the domain readers, one subpackage per family over shared mechanisms.

* `neurotorch.data.fmri`: LAION-fMRI trials, map-style from the prepared store (`BetasDataset`)
  or streamed from the ``.nii.gz`` files (`BetasStream`);
* `neurotorch.data.meeg`: simulated M/EEG trials and calibrator training data;
* `neurotorch.data.connectome`: connectome subjects, map-style or chunked.

Shared by every family: `sharding` (the one sharding policy), `loader` (the loader of sharded
iterables, with resumable state), `sampling` (batches grouped by subject), `collate`, and
`registry` (`load_dataset`). Classes are imported on first use.
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "BetasDataset": "neurotorch.data.fmri.betas",
    "BetasStream": "neurotorch.data.fmri.stream",
    "SimulatedSensorDataset": "neurotorch.data.meeg.simulation",
    "SimulatedSensorBatches": "neurotorch.data.meeg.simulation",
    "CalibrationDataset": "neurotorch.data.meeg.calibration",
    "CalibrationBatches": "neurotorch.data.meeg.calibration",
    "CalibrationRunsDataset": "neurotorch.data.meeg.calibration",
    "FMRIInformedSensors": "neurotorch.data.meeg.from_fmri",
    "ConnectomeSubjects": "neurotorch.data.connectome.subjects",
    "ConnectomeChunks": "neurotorch.data.connectome.subjects",
    "StreamLoader": "neurotorch.data.loader",
    "StatefulLoader": "neurotorch.data.loader",
    "GroupedBatchSampler": "neurotorch.data.sampling",
    "collate_items": "neurotorch.data.collate",
    "load_dataset": "neurotorch.data.registry",
    "list_datasets": "neurotorch.data.registry",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
