"""CaliBrain file names and FIFF codes, in one place.

Every path here is relative to a CaliBrain data root (``CALIBRAIN_DATA`` or an explicit folder).
The FIFF integers are copied from the FIFF specification so that reading a leadfield never needs
to import MNE.
"""

from __future__ import annotations

from neurotorch._options import check_option
from neurotorch.errors import ParameterError, UnsafePathError

ENV_VAR = "CALIBRAIN_DATA"
LEADFIELD_DIR = "1284src_leadfield"
FORWARD_DIR = "1284src_fwd"
ORIENTATIONS = ("fixed", "free")
POSTERIOR_SUMMARY_GLOB = "posterior_summary_run*_seed*.h5"
#: Where the synthetic LAION-fMRI tree keeps its M/EEG leadfields (a CaliBrain-layout root).
FMRI_MEEG_DIR = "derivatives/meeg"

# FIFF channel kinds, units, unit multipliers and coil types used by the leadfield schema.
KIND_MEG = 1
KIND_EEG = 2
UNIT_V = 107
UNIT_T = 112
UNIT_T_M = 201
UNITM_NONE = 0
UNITM_MU = -6
UNITM_N = -9
UNITM_F = -15
#: CaliBrain's coil classes: 1 EEG, 3022 any sensor measured in T, 3012 planar gradiometers (T/m).
COIL_EEG = 1
COIL_MAG = 3022
COIL_GRAD = 3012
CALIBRAIN_COILS = (COIL_EEG, COIL_MAG, COIL_GRAD)

UNIT_NAMES = {UNIT_V: "V", UNIT_T: "T", UNIT_T_M: "T/m"}
UNITM_PREFIX = {UNITM_NONE: "", UNITM_MU: "µ", UNITM_N: "n", UNITM_F: "f"}


def calibrain_coil_type(kind: int, unit: int) -> int:
    """CaliBrain's coil class of a channel from its FIFF kind and unit (see `CALIBRAIN_COILS`).

    CaliBrain 1.0.3 only knows 1 (EEG), 3022 (magnetometer) and 3012 (planar gradiometer); every
    MEG sensor measured in T (Neuromag T1/T2/T3 magnetometers, CTF axial gradiometers) maps to 3022.
    """
    if kind == KIND_EEG:
        return COIL_EEG
    if kind == KIND_MEG and unit in (UNIT_T, UNIT_T_M):
        return COIL_MAG if unit == UNIT_T else COIL_GRAD
    raise ParameterError(
        f"Channel kind {kind} with unit {unit} has no CaliBrain coil class; use EEG (kind 2) or "
        "MEG (kind 1) channels measured in T or T/m."
    )


def check_orientation(orientation_type: str) -> str:
    """Return ``orientation_type`` if it is ``"fixed"`` or ``"free"``; raise otherwise."""
    return check_option("orientation_type", orientation_type, ORIENTATIONS)


def check_subject(subject: str) -> str:
    """Return ``subject`` if it is a plain name; raise `UnsafePathError` for path syntax."""
    text = str(subject)
    if not text or "/" in text or "\\" in text or ".." in text:
        raise UnsafePathError(
            f"Invalid subject {subject!r}: subjects are plain names such as 'fsaverage' or "
            "'CC120166', never paths."
        )
    return text


def leadfield_file(subject: str, orientation_type: str) -> str:
    """``1284src_leadfield/<subject>_<orientation>_leadfield.npz``."""
    return f"{LEADFIELD_DIR}/{leadfield_name(subject, orientation_type)}"


def leadfield_name(subject: str, orientation_type: str) -> str:
    """File name of a leadfield inside a leadfield folder: ``<subject>_<orientation>_leadfield.npz``."""
    return f"{check_subject(subject)}_{check_orientation(orientation_type)}_leadfield.npz"


def forward_file(subject: str) -> str:
    """``1284src_fwd/<subject>-fwd.fif``."""
    return f"{FORWARD_DIR}/{check_subject(subject)}-fwd.fif"


def head_to_t1w_name(subject: str) -> str:
    """Name of the 4x4 head (m) to T1w (mm) transform written beside a subject's leadfields."""
    return f"{check_subject(subject)}_head-to-T1w.txt"


def posterior_summary_name(run_id: int, seed: int) -> str:
    """``posterior_summary_run{run_id:08d}_seed{seed}.h5``."""
    return f"posterior_summary_run{int(run_id):08d}_seed{int(seed)}.h5"


def aggregated_run_name(subject: str, solver: str, *, run_id: int, seed: int) -> str:
    """Name of an aggregated per-run calibration NPZ: ``<subject>_<solver>_run{id:08d}_seed{seed}.npz``."""
    return f"{subject}_{solver}_run{int(run_id):08d}_seed{int(seed)}.npz"
