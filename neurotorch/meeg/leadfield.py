"""Leadfield retrieval in CaliBrain's ways: load an NPZ, simulate one with MNE, or draw one.

The record, its checks and the NPZ format are in `neurotorch.meeg.leadfield_data` (re-exported
here); `LeadfieldBuilder` and `build_leadfield` choose among the three retrieval modes.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from neurotorch._options import as_settings, check_bool, check_int, check_option
from neurotorch.config import resolve_data_dir
from neurotorch.errors import DatasetExistsError, FormatError, ParameterError, ShapeMismatchError
from neurotorch.io.files import FilePath, as_path, check_writable, read_bytes
from neurotorch.io.storage import DataRoot
from neurotorch.meeg import layout
from neurotorch.meeg.leadfield_data import (
    RANDOM_SENSORS,
    RANDOM_SOURCES,
    LeadfieldData,
    check_leadfield,
    load_leadfield_npz,
    random_leadfield,
    save_leadfield_npz,
    scale_to_display_units,
)

__all__ = [
    "LeadfieldBuilder",
    "LeadfieldData",
    "LeadfieldSpec",
    "build_leadfield",
    "check_leadfield",
    "load_leadfield_npz",
    "random_leadfield",
    "read_transform",
    "save_leadfield_npz",
    "scale_to_display_units",
]

#: CaliBrain's retrieval modes.
RETRIEVE_MODES = ("load", "simulate", "random")
#: Sensor sets of ``"simulate"`` (see `neurotorch.meeg.forward.sensor_info`).
SENSORS = ("eeg", "mag", "grad", "ctf")
#: Sources of a simulated leadfield when none is asked for (CaliBrain's 1284).
DEFAULT_SOURCES = 1284


class LeadfieldBuilder:
    """Load, simulate or draw leadfields in the CaliBrain layout.

    Parameters
    ----------
    leadfield_dir
        Folder holding ``<subject>_<orientation>_leadfield.npz`` files: a local path or an fsspec
        URL (``s3://bucket/prefix/1284src_leadfield``). ``None`` uses
        ``$CALIBRAIN_DATA/1284src_leadfield`` (``CALIBRAIN_DATA`` may be a URL too), looked up
        only when a file is read or written: ``"random"`` and ``"simulate"`` with ``save=False``
        need no folder.
    storage_options
        fsspec options for a URL (``endpoint_url``, ``anon``, ...).
    allow_pickle, require_src_coords
        How the folder's files are read (see `load_leadfield_npz`): unpickle CaliBrain's pickled
        entries (only for files you trust), and refuse files without source positions
        (``require_src_coords=False`` reads those CaliBrain's own simulate mode writes).

    Only ``retrieve_mode="load"`` (and ``"simulate"`` with ``save=False``) works on a URL;
    saving needs a local folder. The builder holds no open handle and pickles.
    """

    def __init__(
        self,
        leadfield_dir: FilePath | None = None,
        storage_options: dict | None = None,
        *,
        allow_pickle: bool = False,
        require_src_coords: bool = True,
    ):
        self._leadfield_dir = leadfield_dir
        self._storage_options = storage_options
        self.allow_pickle = check_bool("allow_pickle", allow_pickle)
        self.require_src_coords = check_bool("require_src_coords", require_src_coords)
        self._root: DataRoot | None = None

    @property
    def root(self) -> DataRoot:
        """The leadfield folder as a `DataRoot` (``$CALIBRAIN_DATA`` is read on first use)."""
        if self._root is None:
            folder = self._leadfield_dir
            if folder is None:
                calibrain = DataRoot(
                    resolve_data_dir(None, layout.ENV_VAR, "CaliBrain"), self._storage_options
                )
                folder = calibrain.path(layout.LEADFIELD_DIR)
            self._root = DataRoot(folder, self._storage_options)
        return self._root

    def __repr__(self) -> str:
        where = self._leadfield_dir or f"${layout.ENV_VAR}/{layout.LEADFIELD_DIR}"
        return f"LeadfieldBuilder({os.fspath(where)!r})"

    @property
    def leadfield_dir(self) -> Path | str:
        """The leadfield folder: a `Path` when local, the URL otherwise."""
        return as_path(self.root, "")

    def path(self, subject: str, orientation_type: str) -> Path | str:
        """Where the leadfield of ``subject`` in ``orientation_type`` lives (a `Path` or a URL)."""
        return as_path(self.root, layout.leadfield_name(subject, orientation_type))

    def get_leadfield(
        self,
        subject: str = "fsaverage",
        orientation_type: Literal["fixed", "free"] = "fixed",
        retrieve_mode: Literal["load", "simulate", "random"] = "load",
        n_sensors: int | None = None,
        n_sources: int | None = None,
        return_metadata: bool = False,
        *,
        sensor: Literal["eeg", "mag", "grad", "ctf"] = "eeg",
        montage: str = "easycap-M43",
        subjects_dir: str | os.PathLike | None = None,
        seed: int = 0,
        save: bool = True,
        save_forward: bool = False,
        overwrite: bool = False,
    ) -> LeadfieldData | np.ndarray:
        """Return a leadfield by loading it, simulating it with MNE or drawing it at random.

        Parameters
        ----------
        subject
            Subject id (file-name stem).
        orientation_type
            ``"fixed"`` or ``"free"``.
        retrieve_mode
            ``"load"`` reads the NPZ; ``"simulate"`` runs an MNE forward model (see
            `neurotorch.meeg.forward.simulate_leadfield`) and, with ``save``, writes the NPZ so a
            later ``"load"`` round-trips; ``"random"`` draws a standard-normal matrix.
        n_sensors, n_sources
            Sizes for ``"random"`` (defaults: CaliBrain's 64 x 1284) and ``"simulate"``
            (defaults: all montage channels, 1284 sources); with ``"load"``, the sizes the file
            must have (`ShapeMismatchError` otherwise).
        return_metadata
            Return the `LeadfieldData` record instead of the bare array (CaliBrain's default).
        sensor, montage, subjects_dir
            Passed to the forward model in ``"simulate"`` mode.
        seed
            Seed of the ``"random"`` leadfield.
        save, save_forward
            In ``"simulate"`` mode, write the NPZ (and ``<subject>-fwd.fif`` beside the
            leadfield folder's ``1284src_fwd``); the leadfield folder must then be local.
        overwrite
            With ``save``/``save_forward``, replace a leadfield (or forward) file that already
            exists. By default such a file -- perhaps one made from a real MRI -- is kept and
            `neurotorch.errors.DatasetExistsError` is raised before anything is simulated.

        Files are read as the builder's ``allow_pickle`` and ``require_src_coords`` say.
        """
        layout.check_orientation(orientation_type)
        check_option("retrieve_mode", retrieve_mode, RETRIEVE_MODES)
        check_bool("save", save)
        check_bool("save_forward", save_forward)
        check_bool("overwrite", overwrite)
        if retrieve_mode == "load":
            data = self._load(subject, orientation_type)
            _check_sizes(data, n_sensors, n_sources)
        elif retrieve_mode == "simulate":
            data = self._simulate(
                subject,
                orientation_type,
                n_sensors=n_sensors,
                n_sources=n_sources,
                sensor=sensor,
                montage=montage,
                subjects_dir=subjects_dir,
                save=save,
                save_forward=save_forward,
                overwrite=overwrite,
            )
        else:
            data = random_leadfield(
                orientation_type,
                n_sensors=RANDOM_SENSORS if n_sensors is None else n_sensors,
                n_sources=RANDOM_SOURCES if n_sources is None else n_sources,
                seed=seed,
            )
        return data if return_metadata else data.leadfield

    def _load(self, subject: str, orientation_type: str) -> LeadfieldData:
        path = self.path(subject, orientation_type)
        data = load_leadfield_npz(
            path,
            allow_pickle=self.allow_pickle,
            storage_options=self.root.storage_options,
            require_src_coords=self.require_src_coords,
        )
        if data.orientation_type != orientation_type:
            raise FormatError(
                f"{path} holds a {data.orientation_type}-orientation leadfield of shape "
                f"{data.leadfield.shape}, not a {orientation_type} one."
            )
        return data

    def _simulate(
        self,
        subject: str,
        orientation_type: str,
        *,
        save: bool,
        save_forward: bool,
        overwrite: bool,
        **forward,
    ) -> LeadfieldData:
        from neurotorch.meeg.forward import simulate_leadfield

        if save or save_forward:
            check_writable(self.root, "Saving a simulated leadfield")
        fwd_path = None
        if save_forward:
            fwd_path = Path(self.root.url).parent / layout.forward_file(subject)
        targets = [Path(self.path(subject, orientation_type))] if save else []
        existing = [path for path in [*targets, fwd_path] if path is not None and path.exists()]
        if existing and not overwrite:
            raise DatasetExistsError(
                f"{existing[0]} already exists and retrieve_mode='simulate' would replace it "
                "with a simulated leadfield. Pass save=False to simulate in memory only, "
                "overwrite=True to replace the file, or another subject or folder."
            )
        forward["n_sources"] = forward["n_sources"] or DEFAULT_SOURCES
        data = simulate_leadfield(
            orientation_type, subject=subject, forward_path=fwd_path, **forward
        )
        if save:
            save_leadfield_npz(self.path(subject, orientation_type), data)
        return data


def _check_sizes(data: LeadfieldData, n_sensors: int | None, n_sources: int | None) -> None:
    """Refuse a loaded leadfield whose sizes are not the ones asked for."""
    for name, asked, found in (
        ("n_sensors", n_sensors, data.n_sensors),
        ("n_sources", n_sources, data.n_sources),
    ):
        if asked is not None and asked != found:
            raise ShapeMismatchError(
                f"{data.source} has {found} {name[2:]}, but {name}={asked} was asked for; drop "
                f"{name} (a loaded file has its own size) or load another file."
            )


@dataclass(frozen=True)
class LeadfieldSpec:
    """Where a leadfield comes from (checked when it is made); `build` returns it.

    The one leadfield setting of the datasets, DataModules, ``load_dataset("meeg-…")`` and
    YAML configs (as a plain mapping: ``leadfield: {sensor: mag, n_sources: 300}``).

    Parameters
    ----------
    data_dir
        A CaliBrain data root (local folder or fsspec URL) holding
        ``1284src_leadfield/<subject>_<orientation>_leadfield.npz``; ``None`` reads
        ``$CALIBRAIN_DATA`` when a file is loaded. The datasets and DataModules also accept
        ``"synthetic"`` (the built-in synthetic CaliBrain root, written on first use).
    subject
        Subject id (the file-name stem).
    orientation_type
        ``"fixed"`` or ``"free"``.
    retrieve_mode
        ``"load"`` (read the file), ``"simulate"`` (an MNE forward model in memory, see
        `neurotorch.meeg.forward.simulate_leadfield`) or ``"random"`` (a standard-normal
        matrix); default: ``"load"`` when ``data_dir`` is given, else ``"simulate"``.
    n_sources, n_sensors
        Sizes to simulate or draw (defaults: 1284 sources; every sensor of the set, or 64 for
        ``"random"``); with ``"load"``, the sizes the file must have.
    sensor
        ``"eeg"`` (the ``montage``), ``"mag"``/``"grad"`` (Neuromag-306) or ``"ctf"`` (CTF-275),
        for ``"simulate"``.
    montage
        An MNE built-in EEG montage, for ``"simulate"``.
    seed
        Seed of a ``"random"`` leadfield.
    storage_options
        fsspec options for a URL ``data_dir``.
    require_src_coords
        With ``"load"``, refuse a file without source positions (``False`` reads it, e.g. one
        CaliBrain's own simulate mode wrote; sFlex then cannot use it).
    """

    data_dir: str | None = None
    subject: str = "fsaverage"
    orientation_type: Literal["fixed", "free"] = "fixed"
    retrieve_mode: Literal["load", "simulate", "random"] | None = None
    n_sources: int | None = None
    n_sensors: int | None = None
    sensor: Literal["eeg", "mag", "grad", "ctf"] = "eeg"
    montage: str = "easycap-M43"
    seed: int = 0
    storage_options: dict[str, Any] | None = None
    require_src_coords: bool = True

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        layout.check_subject(self.subject)
        layout.check_orientation(self.orientation_type)
        if self.retrieve_mode is not None:
            check_option("retrieve_mode", self.retrieve_mode, RETRIEVE_MODES)
        for name in ("n_sources", "n_sensors"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        check_option("sensor", self.sensor, SENSORS)
        check_int("seed", self.seed, minimum=0)
        check_bool("require_src_coords", self.require_src_coords)
        if self.data_dir is not None and self.mode != "load":
            raise ParameterError(
                f"data_dir={self.data_dir!r} is read only with retrieve_mode='load', but "
                f"retrieve_mode={self.retrieve_mode!r} builds the leadfield in memory; drop one."
            )

    @property
    def mode(self) -> Literal["load", "simulate", "random"]:
        """The retrieval mode: ``retrieve_mode``, or ``"load"`` / ``"simulate"`` by ``data_dir``."""
        if self.retrieve_mode is not None:
            return self.retrieve_mode
        return "load" if self.data_dir is not None else "simulate"

    def replace(self, **changes: Any) -> LeadfieldSpec:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line: what leadfield this is."""
        if self.mode == "load":
            where = self.data_dir or f"${layout.ENV_VAR}"
            return f"{self.subject} {self.orientation_type} leadfield from {where}"
        what = self.sensor if self.mode == "simulate" else "random"
        return f"{what} {self.orientation_type} leadfield ({self.mode})"

    def build(self) -> LeadfieldData:
        """Load, simulate or draw the leadfield (nothing is written)."""
        leadfield_dir = None
        if self.data_dir is not None:
            leadfield_dir = DataRoot(self.data_dir, self.storage_options).path(layout.LEADFIELD_DIR)
        builder = LeadfieldBuilder(
            leadfield_dir, self.storage_options, require_src_coords=self.require_src_coords
        )
        leadfield = builder.get_leadfield(
            self.subject,
            self.orientation_type,
            self.mode,
            n_sensors=self.n_sensors,
            n_sources=self.n_sources,
            return_metadata=True,
            sensor=self.sensor,
            montage=self.montage,
            seed=self.seed,
            save=False,
        )
        return cast(LeadfieldData, leadfield)  # with return_metadata


def read_transform(path: FilePath, storage_options: dict | None = None) -> np.ndarray:
    """Read a 4x4 affine written with ``np.savetxt`` (e.g. ``<subject>_head-to-T1w.txt``).

    ``path`` is a local path or an fsspec URL (with ``storage_options``).
    """
    content = read_bytes(path, storage_options, what="Transform file")
    try:
        matrix = np.loadtxt(io.BytesIO(content), dtype=np.float64)
    except ValueError as exc:
        raise FormatError(f"{path} is not a whitespace-separated 4x4 matrix: {exc}") from exc
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise FormatError(
            f"{path} must hold a 4x4 affine with last row 0 0 0 1; got {matrix.shape}."
        )
    return matrix


def build_leadfield(
    spec: LeadfieldSpec | Mapping[str, Any] | None = None, **fields: Any
) -> LeadfieldData:
    """Get a leadfield: load it, simulate it with MNE or draw it at random (nothing is written;
    use `LeadfieldBuilder` to save).

    ``spec`` is a `LeadfieldSpec` (or a mapping of its fields); ``fields`` change it, e.g.
    ``build_leadfield(sensor="mag", n_sources=300)``. The default simulates an EEG easycap-M43
    forward model with 1284 sources.
    """
    spec = as_settings(LeadfieldSpec, spec, "leadfield")
    return (spec.replace(**fields) if fields else spec).build()
