"""LAION-fMRI: subjects, betas, ROIs, stimuli and splits (numpy + pandas; no torch needed).

The API follows laion_fmri's names and semantics (its error classes are exported here too)::

    from neurotorch.fmri import load_subject, load_stimuli

    sub = load_subject("sub-01", data_dir="...")     # or dataset_initialize("...") once
    betas = sub.get_betas(session="ses-01", roi="FFA1")
    clip = sub.embeddings.all("CLIP", session="ses-01")

The loaders are imported on first use, so ``neurotorch.fmri.layout`` stays light to import.
"""

from __future__ import annotations

from neurotorch._lazy import lazy_exports
from neurotorch.errors import (
    DataDirNotSetError,
    DataNotDownloadedError,
    DataNotFoundError,
    LicenseNotAcceptedError,
    NoMatchingDataError,
    StimuliNotDownloadedError,
    SubjectNotFoundError,
)

_LAZY = {
    "dataset_initialize": "neurotorch.fmri.data_dir_config",
    "get_data_dir": "neurotorch.fmri.data_dir_config",
    "set_data_dir": "neurotorch.fmri.data_dir_config",
    "Stimuli": "neurotorch.fmri.stimuli",
    "Subject": "neurotorch.fmri.subject",
    "SubjectGroup": "neurotorch.fmri.group",
    "load_embeddings": "neurotorch.fmri.stimuli",
    "load_stimuli": "neurotorch.fmri.stimuli",
    "load_subject": "neurotorch.fmri.subject",
    "load_subjects": "neurotorch.fmri.group",
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    _LAZY,
    eager={
        "DataDirNotSetError": DataDirNotSetError,
        "DataNotDownloadedError": DataNotDownloadedError,
        "DataNotFoundError": DataNotFoundError,
        "LicenseNotAcceptedError": LicenseNotAcceptedError,
        "NoMatchingDataError": NoMatchingDataError,
        "StimuliNotDownloadedError": StimuliNotDownloadedError,
        "SubjectNotFoundError": SubjectNotFoundError,
    },
)
