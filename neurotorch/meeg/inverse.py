"""MNE's inverse solutions of CaliBrain's inverse methods, in neurotorch's units.

`minimum_norm` runs ``mne.minimum_norm`` (MNE, dSPM, sLORETA, eLORETA) and `gamma_map` runs
``mne.inverse_sparse.gamma_map`` on sensor data in µV (EEG) or fT (MEG) with a white noise
variance in the same units squared, for the sources of an MNE free-orientation forward and the
measurement info it was computed with (e.g. `neurotorch.meeg.forward.sensor_info` and
`neurotorch.meeg.forward.make_forward`). Estimates come back
dense, ``(N, T)`` (fixed) or ``(N, 3, T)`` (free, head-frame xyz), in nAm (dSPM and sLORETA are
noise-normalised statistics, returned as MNE computes them). The inverse operator has no depth
weighting and a white noise covariance; MNE requires EEG data to carry an average-reference
projector, which is added (CaliBrain's own solvers do not re-reference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from neurotorch._options import check_option
from neurotorch.errors import NonFiniteError, ParameterError, ShapeMismatchError
from neurotorch.meeg import layout

if TYPE_CHECKING:
    import mne

METHODS = ("MNE", "dSPM", "sLORETA", "eLORETA")
#: Display unit -> SI factor of the data (µV -> V, fT -> T) and of the dipole moments (nAm).
_DATA_TO_SI = {layout.KIND_EEG: 1e-6, layout.KIND_MEG: 1e-15}
_NAM = 1e-9


def _evoked_and_cov(
    fwd: mne.Forward, info: mne.Info, *, y: np.ndarray, noise_var: float
) -> tuple[mne.EvokedArray, mne.Covariance]:
    import mne

    if info["ch_names"] != fwd["info"]["ch_names"]:
        raise ShapeMismatchError("info and the forward must name the same channels, in order.")
    y = np.asarray(y, np.float64)
    if y.ndim != 2 or y.shape[0] != len(info["ch_names"]):
        raise ShapeMismatchError(
            f"y must be (n_channels={len(info['ch_names'])}, T); got {y.shape}."
        )
    if not np.isfinite(y).all():
        raise NonFiniteError("y holds NaN or Inf; the inverse needs finite data.")
    if not (np.isfinite(noise_var) and noise_var > 0):
        raise ParameterError(f"noise_var must be finite and > 0, got {noise_var}.")
    kinds = {ch["kind"] for ch in info["chs"]}
    if len(kinds) != 1 or not kinds <= set(_DATA_TO_SI):
        raise ParameterError("The forward must hold EEG or MEG channels only, not both.")
    scale = _DATA_TO_SI[kinds.pop()]
    evoked = mne.EvokedArray(y * scale, info, tmin=0.0, verbose=False)
    if layout.KIND_EEG in {ch["kind"] for ch in info["chs"]}:
        evoked.set_eeg_reference(projection=True, verbose=False)
    cov = mne.Covariance(
        np.eye(len(info["ch_names"])) * noise_var * scale**2,
        info["ch_names"],
        bads=[],
        projs=evoked.info["projs"],
        nfree=1,
        verbose=False,
    )
    return evoked, cov


def _dense(stc: mne.SourceEstimate, n_sources: int, free: bool) -> np.ndarray:
    """``(N, T)`` or ``(N, 3, T)`` nAm from an estimate on all or some of the sources."""
    data = stc.data if free else stc.data.reshape(stc.data.shape[0], -1)
    out = np.zeros((n_sources, *data.shape[1:]))
    vertices = np.concatenate(stc.vertices)
    out[vertices] = data / _NAM
    return out


def minimum_norm(
    fwd: mne.Forward,
    info: mne.Info,
    y: np.ndarray,
    noise_var: float,
    method: str = "eLORETA",
    lambda2: float = 1.0,
    orientation_type: str = "fixed",
) -> np.ndarray:
    """``mne.minimum_norm.apply_inverse`` on ``y`` (M, T) with white noise ``noise_var``.

    ``orientation_type="fixed"`` uses the source normals (``loose=0``), ``"free"`` all three
    components (``loose=1``, vector estimates). ``lambda2`` is MNE's regularisation (CaliBrain
    calls its eLORETA with 1).
    """
    import mne

    check_option("method", method, METHODS)
    fixed = layout.check_orientation(orientation_type) == "fixed"
    evoked, cov = _evoked_and_cov(fwd, info, y=y, noise_var=noise_var)
    inverse = mne.minimum_norm.make_inverse_operator(
        evoked.info, fwd, cov, loose=0.0 if fixed else 1.0, fixed=fixed, depth=None, verbose=False
    )
    stc = mne.minimum_norm.apply_inverse(
        evoked, inverse, lambda2, method, pick_ori=None if fixed else "vector", verbose=False
    )
    return _dense(stc, fwd["nsource"], not fixed)


def gamma_map(
    fwd: mne.Forward,
    info: mne.Info,
    y: np.ndarray,
    noise_var: float,
    alpha: float = 0.2,
    orientation_type: str = "fixed",
) -> np.ndarray:
    """``mne.inverse_sparse.gamma_map`` on ``y`` (M, T): a sparse estimate, zero off its
    active set. ``alpha`` is MNE's regularisation parameter."""
    import mne

    fixed = layout.check_orientation(orientation_type) == "fixed"
    evoked, cov = _evoked_and_cov(fwd, info, y=y, noise_var=noise_var)
    stc = mne.inverse_sparse.gamma_map(
        evoked,
        fwd,
        cov,
        alpha,
        loose=0.0 if fixed else 1.0,
        depth=None,
        xyz_same_gamma=True,
        pick_ori=None if fixed else "vector",
        verbose=False,
    )
    return _dense(stc, fwd["nsource"], not fixed)
