"""Leadfields in the CaliBrain NPZ schema: the `LeadfieldData` record, its checks, NPZ load/save.

Units: leadfields are returned in µV/nAm (EEG) or fT/nAm (MEG, fT/m/nAm for gradiometers);
source coordinates (metres) and normals are in the MNE head frame, as ``fwd["source_rr"]``.
Raw SI values (``sensor_unitmult`` 0 or missing) are scaled when a `LeadfieldData` is made --
loaded from a file or built in memory alike: V/Am -> µV/nAm is x1e-3, T/Am -> fT/nAm and
T/m/Am -> fT/m/nAm are x1e6.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurotorch._options import check_int
from neurotorch.errors import (
    FormatError,
    ImplausibleDataError,
    NonFiniteError,
    UnsafePickleError,
)
from neurotorch.io.atomic import atomic_path
from neurotorch.io.files import FilePath, read_bytes
from neurotorch.meeg import layout
from neurotorch.meeg.npz import read_npz

log = logging.getLogger(__name__)

_SCALE_TO_DISPLAY = {
    layout.UNIT_V: (layout.UNITM_MU, 1e-3),
    layout.UNIT_T: (layout.UNITM_F, 1e6),
    layout.UNIT_T_M: (layout.UNITM_F, 1e6),
}
_SCALAR_KEYS = ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type", "mne_coil_type")
#: CaliBrain's ``get_leadfield(retrieve_mode="random")`` sizes.
RANDOM_SENSORS = 64
RANDOM_SOURCES = 1284
#: How far from orthonormal a stored basis or unit normal may be (float32 storage rounding).
_UNIT_TOLERANCE = 1e-5


@dataclass
class LeadfieldData:
    """A leadfield and the metadata CaliBrain stores with it.

    Attributes
    ----------
    leadfield
        ``(n_sensors, n_sources)`` (fixed) or ``(n_sensors, n_sources, n_components)`` (free;
        3 components for EEG, 2 tangential components for MEG).
    sensor_kind, sensor_units, sensor_unitmult
        FIFF codes (see `neurotorch.meeg.layout`); ``None`` when unknown.
    coil_type
        CaliBrain's coil class: 1 (EEG), 3022 (sensors in T) or 3012 (planar gradiometers);
        ``None`` when unknown.
    mne_coil_type
        The exact MNE coil type of the first channel (e.g. 3024 for a Neuromag T3
        magnetometer), when the file records it.
    src_coords
        ``(n_sources, 3)`` source positions in metres (MNE head frame), or ``None``.
    Q_basis
        ``(n_sources, 3, n_components)`` orthonormal basis of the free components in xyz, or ``None``.
    ch_names
        Sensor names, or ``None``.
    src_normals
        ``(n_sources, 3)`` unit outward normals (head frame) the fixed orientation projects on,
        or ``None``.
    skipped_keys
        Pickled entries that were not loaded (see `load_leadfield_npz`).
    source
        Where it was read from (a file or URL), ``None`` when built in memory; errors name it.

    Raw SI values (``sensor_units`` V, T or T/m with ``sensor_unitmult`` 0 or ``None``) are
    scaled to µV/nAm or fT/nAm when the record is made (`scale_to_display_units`), in memory as
    on load: ``leadfield`` is then the scaled copy and ``sensor_unitmult`` the new multiplier.

    Every array is checked when the record is made (`check_leadfield`): a leadfield that cannot
    describe a measurement (all zeros, EEG in tesla, a coil type of another sensor kind, NaN)
    raises a named error. A source whose column is zero (one no sensor sees, such as a radial
    dipole in a spherical MEG head) is accepted with a warning and listed in `silent_sources`;
    the simulators never draw such a source as active (a trial of silent sources alone would
    have no signal, so no SNR and no noise level).
    """

    leadfield: np.ndarray
    sensor_kind: int | None = None
    sensor_units: int | None = None
    sensor_unitmult: int | None = None
    coil_type: int | None = None
    src_coords: np.ndarray | None = None
    Q_basis: np.ndarray | None = None
    ch_names: list[str] | None = None
    src_normals: np.ndarray | None = None
    skipped_keys: list[str] = field(default_factory=list)
    mne_coil_type: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        where = self.source or "the leadfield"
        if self.leadfield.ndim not in (2, 3) or 0 in self.leadfield.shape:
            raise FormatError(
                f"{where}: a leadfield must be a non-empty (n_sensors, n_sources) or (n_sensors, "
                f"n_sources, k) array; got shape {self.leadfield.shape}."
            )
        # raw SI (unit multiplier 0 or unknown) is scaled here, whether the record is loaded,
        # simulated or built by hand, so that one leadfield has one scale and `units` is true
        self.leadfield, self.sensor_unitmult = scale_to_display_units(
            self.leadfield, self.sensor_units, self.sensor_unitmult
        )
        check_leadfield(self, where)
        silent = self.silent_sources
        if len(silent):
            log.warning(
                "%s: %d of %d sources have an all-zero leadfield column (no sensor sees them; "
                "their posterior equals their prior and the simulators never draw them as "
                "active): %s",
                where,
                len(silent),
                self.n_sources,
                silent[:10].tolist(),
            )

    def __repr__(self) -> str:
        sensors = _KIND_NAMES.get(self.sensor_kind, "sensors")
        return (
            f"LeadfieldData({self.orientation_type}, {sensors}, {self.n_sensors} sensors x "
            f"{self.n_sources} sources x {self.n_components} component(s), {self.units}"
            + (f", from {self.source}" if self.source else "")
            + ")"
        )

    @property
    def orientation_type(self) -> str:
        """``"fixed"`` for a 2-D leadfield, ``"free"`` for a 3-D one."""
        return "fixed" if self.leadfield.ndim == 2 else "free"

    @property
    def n_sensors(self) -> int:
        return int(self.leadfield.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.leadfield.shape[1])

    @property
    def n_components(self) -> int:
        """1 for fixed orientation, else the size of the last axis."""
        return 1 if self.leadfield.ndim == 2 else int(self.leadfield.shape[2])

    @property
    def silent_sources(self) -> np.ndarray:
        """Indices of the sources whose leadfield column is all zeros (no sensor sees them)."""
        columns = self.leadfield.reshape(self.n_sensors, self.n_sources, -1)
        return np.flatnonzero(~columns.any(axis=(0, 2)))

    @property
    def units(self) -> str:
        """Human-readable unit of the leadfield entries, e.g. ``"µV/nAm"``."""
        if self.sensor_units not in layout.UNIT_NAMES:
            return "a.u./nAm"
        prefix = layout.UNITM_PREFIX.get(self.sensor_unitmult or 0, f"1e{self.sensor_unitmult} ")
        return f"{prefix}{layout.UNIT_NAMES[self.sensor_units]}/nAm"


def scale_to_display_units(
    leadfield: np.ndarray, sensor_units: int | None, sensor_unitmult: int | None
) -> tuple[np.ndarray, int | None]:
    """Scale a raw-SI leadfield to µV/nAm (EEG) or fT/nAm (MEG; fT/m/nAm for gradiometers).

    Only leadfields whose ``sensor_unitmult`` is 0 or unknown are scaled (into a new float64
    array); a leadfield already in the target multiplier (or in any other multiplier) is returned
    unchanged. `LeadfieldData` applies it when a record is made.

    Returns
    -------
    (leadfield, sensor_unitmult)
        The possibly scaled array and its new unit multiplier.
    """
    if sensor_units not in _SCALE_TO_DISPLAY:
        return leadfield, sensor_unitmult
    target, factor = _SCALE_TO_DISPLAY[sensor_units]
    if sensor_unitmult not in (None, layout.UNITM_NONE):
        return leadfield, sensor_unitmult
    return np.asarray(leadfield, dtype=np.float64) * factor, target


def _fiff_code(value: np.ndarray, key: str, path: object) -> int | None:
    """A FIFF code (kind, unit, multiplier, coil type): one integer; NaN means absent. Anything
    else is refused, since the scaling on load depends on these codes."""
    scalar = value.reshape(()).item() if value.dtype.kind in "iuf" and value.size == 1 else None
    if isinstance(scalar, float) and np.isnan(scalar):
        return None
    if scalar is None or not float(scalar).is_integer():
        raise FormatError(
            f"{key!r} in {path} must be one integer FIFF code (e.g. sensor_units 107 for V, 112 "
            f"for T); got {value.dtype} {value.shape} {value.ravel()[:3].tolist()}."
        )
    return int(scalar)


def _optional_array(value: np.ndarray | None, ndim: int) -> np.ndarray | None:
    if value is None or value.dtype.kind not in "iuf" or value.ndim != ndim or value.size == 0:
        return None
    return np.asarray(value, dtype=np.float64)


def load_leadfield_npz(
    path: FilePath,
    allow_pickle: bool = False,
    storage_options: dict | None = None,
    require_src_coords: bool = True,
) -> LeadfieldData:
    """Read a leadfield NPZ in the CaliBrain schema, check it and scale raw SI values.

    Parameters
    ----------
    path
        The ``.npz`` file: a local path or an fsspec URL (``s3://bucket/prefix/x.npz``).
    allow_pickle
        CaliBrain's own writer stores a pickled MNE ``info`` and ``Q_basis=None`` as object
        arrays. By default such keys are skipped (listed in ``skipped_keys``); a file whose
        ``leadfield`` itself is an object array raises `UnsafePickleError`. Pass ``True`` only
        for files you trust: the channel names are then taken from the pickled ``info``.
    storage_options
        fsspec options when ``path`` is a URL (``endpoint_url``, ``anon``, ...).
    require_src_coords
        Refuse a file without ``src_coords`` (source positions are needed by the spatial
        metrics and plots). ``False`` reads such a file with ``src_coords=None``.

    Raises
    ------
    DataNotDownloadedError, CorruptFileError, FormatError, NonFiniteError, UnsafePickleError
    """
    content = read_bytes(path, storage_options, what="Leadfield file")
    path = os.fspath(path)
    npz = read_npz(content, path, what="Leadfield file", allow_pickle=allow_pickle)
    values, skipped = npz.arrays, npz.pickled
    for key in ("leadfield", "lead_field"):
        if key in skipped:
            raise UnsafePickleError(
                f"The {key!r} array in {path} is stored as pickled objects; load it with "
                "allow_pickle=True only if you trust the file."
            )
    raw = values.get("leadfield", values.get("lead_field"))
    if raw is None:
        raise FormatError(f"{path} has no 'leadfield' array (keys: {sorted(values)}).")
    if raw.dtype.kind not in "iuf" or raw.ndim not in (2, 3) or raw.size == 0:
        raise FormatError(
            f"'leadfield' in {path} must be a non-empty numeric 2-D or 3-D array; got {raw.dtype} "
            f"{raw.shape}."
        )
    meta = {key: _fiff_code(values[key], key, path) for key in _SCALAR_KEYS if key in values}
    units = meta.get("sensor_units")
    if units is None and "units" in values and values["units"].dtype.kind in "iuf":
        units = _fiff_code(values["units"], "units", path)
    data = LeadfieldData(  # raw SI is scaled when the record is made
        leadfield=np.asarray(raw, dtype=np.float64),
        sensor_kind=meta.get("sensor_kind"),
        sensor_units=units,
        sensor_unitmult=meta.get("sensor_unitmult"),
        coil_type=meta.get("coil_type"),
        mne_coil_type=meta.get("mne_coil_type"),
        src_coords=_optional_array(values.get("src_coords"), 2),
        Q_basis=_optional_array(values.get("Q_basis"), 3),
        ch_names=_channel_names(values, path),
        src_normals=_optional_array(values.get("src_normals"), 2),
        skipped_keys=skipped,
        source=path,
    )
    if require_src_coords and data.src_coords is None:
        raise FormatError(
            f"{path} has no numeric 'src_coords' (n_sources, 3) source positions (CaliBrain's "
            "simulate mode writes none); re-export the leadfield with them, or pass "
            "require_src_coords=False to read it without positions (sFlex and the spatial "
            "metrics then cannot use it)."
        )
    return data


def _channel_names(values: dict[str, np.ndarray], path: object) -> list[str] | None:
    """``ch_names`` as stored by neurotorch, else those of CaliBrain's pickled MNE ``info``."""
    names = values.get("ch_names")
    if names is not None and names.dtype.kind == "U":
        return [str(n) for n in names.ravel()]
    info = values.get("info")
    if info is None or info.dtype.kind != "O" or info.size != 1:
        return None
    info = info.reshape(()).item()
    names = info.get("ch_names") if hasattr(info, "get") else None
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise FormatError(f"The pickled 'info' in {path} has malformed ch_names: {names!r:.80}.")
    return list(names)


def check_leadfield(data: LeadfieldData, where: object) -> None:
    """Check that every array of ``data`` is finite, that shapes and bases agree and that the
    record can describe a measurement (``where`` names it in errors).

    Raises
    ------
    NonFiniteError
        NaN or Inf in the leadfield, the coordinates, the normals or the basis.
    ImplausibleDataError
        An all-zero leadfield, units of another sensor kind (EEG in T, MEG in V), a coil type of
        another sensor kind (a gradiometer on EEG, an EEG electrode on MEG) or unit (a planar
        gradiometer in T).
    FormatError
        Shapes that disagree, non-unit normals, a non-orthonormal ``Q_basis``, a free leadfield
        whose component count does not match its coil class, or duplicate channel names.
    """
    n_sources = data.n_sources
    for name in ("leadfield", "src_coords", "src_normals", "Q_basis"):
        arr = getattr(data, name)
        if arr is not None and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise NonFiniteError(
                f"{name} in {where} holds {bad} NaN/Inf value(s); the file is damaged or was "
                "exported from a failed forward model: re-create it."
            )
    _check_physics(data, where)
    for name in ("src_coords", "src_normals"):
        arr = getattr(data, name)
        if arr is not None and arr.shape != (n_sources, 3):
            raise FormatError(
                f"{name} in {where} has shape {arr.shape}; expected ({n_sources}, 3)."
            )
    if data.src_normals is not None:
        lengths = np.linalg.norm(data.src_normals, axis=1)
        if np.abs(lengths - 1.0).max() > _UNIT_TOLERANCE:
            raise FormatError(
                f"src_normals in {where} are not unit vectors (lengths {lengths.min():.3g} to "
                f"{lengths.max():.3g}); normalise them."
            )
    if data.orientation_type == "free":
        k = data.n_components
        expected_k = {layout.COIL_EEG: 3, layout.COIL_MAG: 2, layout.COIL_GRAD: 2}
        if data.coil_type in expected_k and k not in (expected_k[data.coil_type], 3):
            raise FormatError(
                f"{where} is a free leadfield with {k} components per source, but coil_type "
                f"{data.coil_type} needs {expected_k[data.coil_type]} (or all 3)."
            )
        if data.Q_basis is not None:
            if data.Q_basis.shape != (n_sources, 3, k):
                raise FormatError(
                    f"Q_basis in {where} has shape {data.Q_basis.shape}; expected "
                    f"({n_sources}, 3, {k})."
                )
            gram = np.einsum("sik,sil->skl", data.Q_basis, data.Q_basis)
            if np.abs(gram - np.eye(k)).max() > _UNIT_TOLERANCE:
                raise FormatError(
                    f"Q_basis in {where} does not have orthonormal columns for every source."
                )
    if data.ch_names is not None:
        if len(data.ch_names) != data.n_sensors:
            raise FormatError(
                f"{where} names {len(data.ch_names)} channels for {data.n_sensors} leadfield rows."
            )
        if len(set(data.ch_names)) != len(data.ch_names):
            raise FormatError(f"{where} names some channels more than once.")


#: FIFF units each sensor kind is measured in, and the coil types each kind can carry.
_KIND_UNITS = {layout.KIND_EEG: (layout.UNIT_V,), layout.KIND_MEG: (layout.UNIT_T, layout.UNIT_T_M)}
_KIND_NAMES: dict[int | None, str] = {layout.KIND_EEG: "EEG", layout.KIND_MEG: "MEG"}
#: The unit a CaliBrain coil class measures in (planar gradiometers: T/m).
_COIL_UNITS = {layout.COIL_EEG: layout.UNIT_V, layout.COIL_MAG: layout.UNIT_T}
_COIL_UNITS[layout.COIL_GRAD] = layout.UNIT_T_M


def _check_physics(data: LeadfieldData, where: object) -> None:
    """Refuse a leadfield no measurement can have: all zeros, or kind, units and coil that
    contradict each other (only the codes the record has are compared)."""
    if not np.any(data.leadfield):
        raise ImplausibleDataError(
            f"The leadfield in {where} is all zeros: no source reaches any sensor, so simulated "
            "sensor data would hold noise only. The forward model failed; re-create it."
        )
    kind, units, coil = data.sensor_kind, data.sensor_units, data.coil_type
    kind_name = _KIND_NAMES.get(kind)
    if (
        kind is not None
        and kind_name
        and units in layout.UNIT_NAMES
        and units not in _KIND_UNITS[kind]
    ):
        raise ImplausibleDataError(
            f"{where} says sensor_kind={kind} ({kind_name}) but sensor_units={units} "
            f"({layout.UNIT_NAMES[units]}); {kind_name} is measured in "
            f"{' or '.join(layout.UNIT_NAMES[u] for u in _KIND_UNITS[kind])}. Fix the file's "
            "metadata (its scaling on load depends on the units)."
        )
    if coil is None:
        return
    eeg_coil = coil == layout.COIL_EEG
    if kind_name and eeg_coil != (kind == layout.KIND_EEG):
        raise ImplausibleDataError(
            f"{where} says sensor_kind={kind} ({kind_name}) but coil_type={coil} "
            f"({'an EEG electrode' if eeg_coil else 'an MEG coil'}); fix the file's metadata."
        )
    if coil in _COIL_UNITS and units in layout.UNIT_NAMES and units != _COIL_UNITS[coil]:
        raise ImplausibleDataError(
            f"{where} says coil_type={coil}, which measures in "
            f"{layout.UNIT_NAMES[_COIL_UNITS[coil]]}, but sensor_units={units} "
            f"({layout.UNIT_NAMES[units]}); fix the file's metadata."
        )


def save_leadfield_npz(path: str | os.PathLike, data: LeadfieldData) -> Path:
    """Write ``data`` as a CaliBrain-schema NPZ (no pickled objects), atomically.

    Fixed-orientation files store ``Q_basis`` as an empty ``(n_sources, 3, 0)`` array (CaliBrain
    stores a pickled ``None``). The data are checked first (`check_leadfield`). Returns the
    written path.
    """
    path = Path(path)
    check_leadfield(data, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    q_basis = data.Q_basis if data.Q_basis is not None else np.zeros((data.n_sources, 3, 0))
    payload: dict[str, np.ndarray] = {"leadfield": np.asarray(data.leadfield), "Q_basis": q_basis}
    for key in _SCALAR_KEYS:
        value = getattr(data, key)
        if value is not None:
            payload[key] = np.asarray(int(value))
    if data.src_coords is not None:
        payload["src_coords"] = np.asarray(data.src_coords, dtype=np.float64)
    if data.src_normals is not None:
        payload["src_normals"] = np.asarray(data.src_normals, dtype=np.float64)
    if data.ch_names is not None:
        payload["ch_names"] = np.asarray(data.ch_names, dtype=str)
    with atomic_path(path) as tmp:
        np.savez(tmp, **payload)  # type: ignore[arg-type]  # numpy stubs match ** to allow_pickle
    return path


def random_leadfield(
    orientation_type: str,
    n_sensors: int = RANDOM_SENSORS,
    n_sources: int = RANDOM_SOURCES,
    seed: int = 0,
) -> LeadfieldData:
    """A standard-normal leadfield (free: 3 components) for shape tests; no physical head.

    The default sizes are CaliBrain's (64 sensors x 1284 sources).
    """
    layout.check_orientation(orientation_type)
    n_sensors = check_int("n_sensors", n_sensors, minimum=1)
    n_sources = check_int("n_sources", n_sources, minimum=1)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    shape = (n_sensors, n_sources) if orientation_type == "fixed" else (n_sensors, n_sources, 3)
    q_basis = (
        None
        if orientation_type == "fixed"
        else np.broadcast_to(np.eye(3), (n_sources, 3, 3)).copy()
    )
    return LeadfieldData(leadfield=rng.standard_normal(shape), Q_basis=q_basis)
