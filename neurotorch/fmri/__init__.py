"""LAION-fMRI: subjects, betas, ROIs, stimuli and splits (numpy + pandas; no torch needed).

The API follows laion_fmri's names and semantics::

    from neurotorch.fmri import load_subject, load_stimuli

    sub = load_subject("sub-01", data_dir="...")     # or set LAION_FMRI_DATA_DIR
    betas = sub.get_betas(session="ses-01", roi="FFA1")
    clip = sub.embeddings.all("CLIP", session="ses-01")
"""

from neurotorch.errors import (
    DataDirNotSetError,
    DataNotDownloadedError,
    StimuliNotDownloadedError,
    SubjectNotFoundError,
)
from neurotorch.fmri.group import SubjectGroup, load_subjects
from neurotorch.fmri.stimuli import Stimuli, load_stimuli
from neurotorch.fmri.subject import Subject, load_subject

__all__ = [
    "DataDirNotSetError",
    "DataNotDownloadedError",
    "StimuliNotDownloadedError",
    "Stimuli",
    "Subject",
    "SubjectGroup",
    "SubjectNotFoundError",
    "load_stimuli",
    "load_subject",
    "load_subjects",
]
