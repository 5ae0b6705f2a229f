"""LAION-fMRI trials as torch datasets: `BetasDataset` (prepared store) and `BetasStream`, and
the settings objects they take (`TrialSelection`, `VoxelSelection`, `ReadSettings`)."""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "BetasDataset": "neurotorch.data.fmri.betas",
    "BetasStream": "neurotorch.data.fmri.stream",
    "build_store": "neurotorch.data.fmri.store",
    "PreparedStore": "neurotorch.data.fmri.store",
    "StimulusPairing": "neurotorch.data.fmri.pairing",
    "select_trials": "neurotorch.data.fmri.trials",
    "TrialSelection": "neurotorch.data.fmri.trials",
    "VoxelSelection": "neurotorch.fmri.voxel_selection",
    "ReadSettings": "neurotorch.data.fmri.settings",
    "SyntheticOptions": "neurotorch.data.fmri.settings",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
