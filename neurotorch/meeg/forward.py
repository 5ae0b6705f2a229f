"""Real MNE forward models with no download: standard EEG montages, canonical MEG helmets, spheres.

Sources sit on a folded, cortex-like shell with outward normals (or on a FreeSurfer subject's
cortex when ``subjects_dir`` is given) and enter MNE as a discrete source space through
``setup_volume_source_space(pos=dict(rr=..., nn=...))``. The free-orientation forward is MNE's;
the fixed one is MNE's ``convert_forward_solution(surf_ori=True, force_fixed=True)`` (the free
forward projected on the head-frame normals, as CaliBrain extracts it); free MEG keeps the
2 components with signal. Coordinates and normals are returned in the MNE head frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurotorch._options import check_option
from neurotorch.errors import DataNotDownloadedError, ParameterError
from neurotorch.io.atomic import atomic_path
from neurotorch.meeg import layout
from neurotorch.meeg.leadfield_data import LeadfieldData, scale_to_display_units

if TYPE_CHECKING:
    import mne

#: Sensor sets: "eeg" (any MNE standard montage), Neuromag "mag"/"grad", CTF-275 axial "ctf".
SENSORS = ("eeg", "mag", "grad", "ctf")
#: Sphere-model origins (head frame, metres): EEG montages are fitted by a sphere centred 4 cm
#: above the head origin; the MEG canonical helmets are centred on the device origin.
SPHERE_ORIGIN = {"eeg": (0.0, 0.0, 0.04), "meg": (0.0, 0.0, 0.0)}
HEAD_RADIUS = 0.095
SHELL_RADIUS = 0.065


def _modality(sensor: str) -> str:
    return "eeg" if check_option("sensor", sensor, SENSORS) == "eeg" else "meg"


def _fold(u: np.ndarray, depth: float, waves: float) -> np.ndarray:
    """Relative radius modulation of a folded shell along unit directions ``u``."""
    return 1.0 + depth * np.sin(waves * u[:, 0]) * np.sin(waves * u[:, 1]) * np.cos(waves * u[:, 2])


def cortical_shell(
    n_sources: int,
    center: tuple[float, float, float] = SPHERE_ORIGIN["eeg"],
    radius: float = SHELL_RADIUS,
    fold_depth: float = 0.05,
    fold_waves: float = 9.0,
    max_polar_deg: float = 120.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Source positions and outward unit normals on a folded, cortex-like shell.

    The shell is the surface ``|p - c| = radius * (1 + fold_depth * g(u))`` with ``g`` a smooth
    product of sines of the direction ``u`` (gyri about 1-2 cm apart); points are a Fibonacci
    lattice over the cap within ``max_polar_deg`` of +z, so the bottom of the head stays empty.
    The normals are the normalised gradient of the implicit surface, hence not radial (a radial
    dipole would be silent in MEG).

    Returns
    -------
    rr, nn
        ``(n_sources, 3)`` positions (m) and unit normals.
    """
    k = np.arange(n_sources) + 0.5
    cos_min = np.cos(np.deg2rad(max_polar_deg))
    cos_theta = 1.0 - (1.0 - cos_min) * k / n_sources
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    u = np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=1)
    c = np.asarray(center, dtype=np.float64)
    rr = c + radius * _fold(u, fold_depth, fold_waves)[:, None] * u

    def implicit(p: np.ndarray) -> np.ndarray:
        d = p - c
        dist = np.linalg.norm(d, axis=1)
        return dist - radius * _fold(d / dist[:, None], fold_depth, fold_waves)

    eps = 1e-6
    grad = np.stack(
        [(implicit(rr + eps * e) - implicit(rr - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1
    )
    nn = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    return rr, nn


def sensor_info(
    sensor: str = "eeg", montage: str = "easycap-M43", n_sensors: int | None = None
) -> mne.Info:
    """Measurement info for a sensor set, with no download.

    ``"eeg"`` uses ``make_standard_montage(montage)``; ``"mag"``/``"grad"`` pick the Neuromag-306
    magnetometers/planar gradiometers of ``read_meg_canonical_info("neuromag")``; ``"ctf"`` is the
    CTF-275 axial gradiometer helmet. ``n_sensors`` keeps the first channels.
    """
    import mne

    if _modality(sensor) == "eeg":
        if montage not in mne.channels.get_builtin_montages():
            raise ParameterError(
                f"Unknown EEG montage {montage!r}; choose one of MNE's built-in montages, e.g. "
                "'easycap-M43' or 'standard_1005' (mne.channels.get_builtin_montages())."
            )
        mont = mne.channels.make_standard_montage(montage)
        info = mne.create_info(mont.ch_names, 250.0, "eeg")
        info.set_montage(mont)
    else:
        system = "ctf275" if sensor == "ctf" else "neuromag"
        info = mne.channels.read_meg_canonical_info(system)
        if sensor != "ctf":
            unit = layout.UNIT_T if sensor == "mag" else layout.UNIT_T_M
            picks = [i for i, ch in enumerate(info["chs"]) if ch["unit"] == unit]
            info = mne.pick_info(info, picks)
    if n_sensors is not None:
        if not 0 < n_sensors <= len(info["ch_names"]):
            raise ParameterError(
                f"n_sensors={n_sensors} but the {sensor} set has {len(info['ch_names'])} channels."
            )
        info = mne.pick_info(info, list(range(n_sensors)))
    return info


def sphere_model(sensor: str = "eeg", head_radius: float = HEAD_RADIUS) -> mne.bem.ConductorModel:
    """MNE's 4-layer sphere model centred at `SPHERE_ORIGIN` for the sensor's modality."""
    import mne

    origin = SPHERE_ORIGIN[_modality(sensor)]
    return mne.make_sphere_model(r0=origin, head_radius=head_radius, verbose=False)


def make_forward(
    info: mne.Info,
    rr: np.ndarray,
    nn: np.ndarray,
    bem: mne.bem.ConductorModel | str | os.PathLike,
    trans: str | os.PathLike | None = None,
) -> mne.Forward:
    """Free-orientation MNE forward for the discrete sources ``rr`` (m) with normals ``nn``."""
    import mne

    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose=False)
    has_meg = any(ch["kind"] == layout.KIND_MEG for ch in info["chs"])
    has_eeg = any(ch["kind"] == layout.KIND_EEG for ch in info["chs"])
    return mne.make_forward_solution(
        info,
        trans=trans,
        src=src,
        bem=bem,
        meg=has_meg,
        eeg=has_eeg,
        ignore_ref=True,
        verbose=False,
    )


def _canonical_signs(q: np.ndarray) -> np.ndarray:
    """Flip basis columns so the largest-magnitude entry of each is positive (removes SVD sign noise)."""
    idx = np.abs(q).argmax(axis=1, keepdims=True)
    signs = np.sign(np.take_along_axis(q, idx, axis=1))
    return q * np.where(signs == 0, 1.0, signs)


def tangential_reduction(
    leadfield_free: np.ndarray, n_keep: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce each source's ``(n_sensors, 3)`` block to its ``n_keep`` strongest orientations.

    Returns ``(leadfield (n_sensors, n_sources, n_keep), Q_basis (n_sources, 3, n_keep))`` with
    ``leadfield[:, i] = L[:, i, :] @ Q_basis[i]``. In a spherical head the dropped direction is
    the (silent) radial one.
    """
    blocks = np.moveaxis(leadfield_free, 1, 0)  # (n_sources, n_sensors, 3)
    _, _, vt = np.linalg.svd(blocks, full_matrices=False)
    q_basis = _canonical_signs(np.transpose(vt[:, :n_keep, :], (0, 2, 1)))
    reduced = np.einsum("smk,skj->msj", blocks, q_basis)
    return reduced, q_basis


def forward_to_leadfield(fwd: mne.Forward, orientation_type: str) -> LeadfieldData:
    """CaliBrain `LeadfieldData` (scaled to µV/nAm or fT/nAm) from a free-orientation forward.

    Fixed orientation is MNE's surface-oriented conversion, i.e. the free forward projected on
    the source normals in the head frame (whatever the head<->MRI transform). ``coil_type`` is
    CaliBrain's coil class of the first channel; its exact MNE coil type is kept in
    ``mne_coil_type``. ``src_coords`` and ``src_normals`` are head-frame.
    """
    import mne

    layout.check_orientation(orientation_type)
    if fwd["surf_ori"] or fwd["source_ori"] != mne.io.constants.FIFF.FIFFV_MNE_FREE_ORI:
        raise ParameterError(
            "forward_to_leadfield needs a free-orientation forward in head-frame xyz components "
            "(as returned by make_forward_solution, before convert_forward_solution)."
        )
    chs = fwd["info"]["chs"]
    first = chs[0]
    n_sources = fwd["nsource"]
    free = np.asarray(fwd["sol"]["data"], dtype=np.float64).reshape(len(chs), n_sources, 3)
    surface = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True, verbose=False)
    normals = np.asarray(surface["source_nn"], dtype=np.float64)
    q_basis = None
    if orientation_type == "fixed":  # MNE's fixed conversion, computed in float64
        leadfield = np.einsum("msk,sk->ms", free, normals)
    elif first["kind"] == layout.KIND_MEG:
        leadfield, q_basis = tangential_reduction(free)
    else:
        leadfield, q_basis = free, np.broadcast_to(np.eye(3), (n_sources, 3, 3)).copy()
    leadfield, unitmult = scale_to_display_units(
        leadfield, int(first["unit"]), int(first["unit_mul"])
    )
    return LeadfieldData(
        leadfield=leadfield,
        sensor_kind=int(first["kind"]),
        sensor_units=int(first["unit"]),
        sensor_unitmult=unitmult,
        coil_type=layout.calibrain_coil_type(int(first["kind"]), int(first["unit"])),
        mne_coil_type=int(first["coil_type"]),
        src_coords=np.asarray(fwd["source_rr"], dtype=np.float64),
        Q_basis=q_basis,
        ch_names=list(fwd["info"]["ch_names"]),
        src_normals=normals,
    )


def _freesurfer_sources(
    subject: str, subjects_dir: Path, *, n_sources: int, spacing: str
) -> tuple[np.ndarray, np.ndarray, mne.bem.ConductorModel]:
    """``n_sources`` evenly chosen cortical vertices (MRI frame) and the subject's BEM solution."""
    import mne

    src = mne.setup_source_space(
        subject, spacing=spacing, subjects_dir=subjects_dir, add_dist=False, verbose=False
    )
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    nn = np.concatenate([s["nn"][s["vertno"]] for s in src])
    if n_sources > len(rr):
        raise ParameterError(
            f"{subject} has {len(rr)} vertices at spacing {spacing!r}; asked for {n_sources}."
        )
    keep = np.linspace(0, len(rr) - 1, n_sources).round().astype(int)
    bem_dir = subjects_dir / subject / "bem"
    solutions = sorted(bem_dir.glob("*-bem-sol.fif"))
    if solutions:
        bem = mne.read_bem_solution(solutions[0], verbose=False)
    else:
        model = mne.make_bem_model(subject, ico=4, subjects_dir=subjects_dir, verbose=False)
        bem = mne.make_bem_solution(model, verbose=False)
    return rr[keep], nn[keep], bem


def simulate_leadfield(
    orientation_type: str = "fixed",
    n_sources: int = 1284,
    sensor: str = "eeg",
    montage: str = "easycap-M43",
    n_sensors: int | None = None,
    *,
    src_coords: np.ndarray | None = None,
    src_normals: np.ndarray | None = None,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
    trans: str | os.PathLike | None = None,
    spacing: str = "oct6",
    forward_path: str | os.PathLike | None = None,
) -> LeadfieldData:
    """Build a leadfield with a real MNE forward model.

    Parameters
    ----------
    orientation_type
        ``"fixed"`` (projected on the source normals) or ``"free"``.
    n_sources
        Number of shell sources (ignored when ``src_coords`` is given).
    sensor, montage, n_sensors
        See `sensor_info`.
    src_coords, src_normals
        Explicit sources (head frame, m) and outward normals instead of the default shell.
    subject, subjects_dir, trans, spacing
        With ``subjects_dir``: sources are ``n_sources`` vertices of the subject's FreeSurfer
        cortex at ``spacing`` and the head model is its BEM (``bem/*-bem-sol.fif`` or a new
        ``ico=4`` model). ``trans`` is the head<->MRI transform (a file, ``"fsaverage"`` or an
        ``mne.transforms.Transform``); with it, ``src_coords``/``src_normals`` and FreeSurfer
        sources are MRI-frame, while the returned coordinates and normals are head-frame.
    forward_path
        Also write the free-orientation forward to this ``-fwd.fif`` file.
    """
    import mne

    info = sensor_info(sensor, montage, n_sensors)
    if subjects_dir is not None:
        subjects_dir = Path(subjects_dir).expanduser()
        if subject is None or not (subjects_dir / subject).is_dir():
            raise DataNotDownloadedError(
                f"FreeSurfer subject {subject!r} not found in {subjects_dir}; pass subject= and a "
                "subjects_dir that contains it."
            )
        rr, nn, bem = _freesurfer_sources(
            subject, subjects_dir, n_sources=n_sources, spacing=spacing
        )
    else:
        if src_coords is None:
            rr, nn = cortical_shell(n_sources, center=SPHERE_ORIGIN[_modality(sensor)])
        else:
            if src_normals is None:
                raise ParameterError("src_coords needs src_normals (outward unit normals).")
            rr, nn = np.asarray(src_coords, float), np.asarray(src_normals, float)
        bem = sphere_model(sensor)
    fwd = make_forward(info, rr, nn, bem=bem, trans=trans)
    if fwd["nsource"] != len(rr):
        raise ParameterError(
            f"MNE kept {fwd['nsource']} of {len(rr)} sources; sources must lie inside the inner skull."
        )
    if forward_path is not None:
        Path(forward_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(forward_path) as tmp:
            mne.write_forward_solution(tmp, fwd, overwrite=True, verbose=False)
    return forward_to_leadfield(fwd, orientation_type)
