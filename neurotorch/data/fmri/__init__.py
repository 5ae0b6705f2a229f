"""LAION-fMRI trials as torch datasets: `BetasDataset` (prepared store) and `BetasStream`."""

from __future__ import annotations

from neurotorch._lazy import lazy_exports

_EXPORTS = {
    "BetasDataset": "neurotorch.data.fmri.betas",
    "BetasStream": "neurotorch.data.fmri.stream",
    "build_store": "neurotorch.data.fmri.store",
    "PreparedStore": "neurotorch.data.fmri.store",
    "StimulusPairing": "neurotorch.data.fmri.trials",
    "select_trials": "neurotorch.data.fmri.trials",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
