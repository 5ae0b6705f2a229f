"""Leadfield retrieval in CaliBrain's ways: load an NPZ, simulate one with MNE, or draw one.

The record, its checks and the NPZ format are in `neurotorch.meeg.leadfield_data` (re-exported
here); `LeadfieldBuilder` and `build_leadfield` choose among the three retrieval modes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from neurotorch.config import resolve_data_dir
from neurotorch.errors import FormatError, ParameterError
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
    "build_leadfield",
    "check_leadfield",
    "load_leadfield_npz",
    "random_leadfield",
    "read_transform",
    "save_leadfield_npz",
    "scale_to_display_units",
]


class LeadfieldBuilder:
    """Load, simulate or draw leadfields in the CaliBrain layout.

    Parameters
    ----------
    leadfield_dir
        Folder holding ``<subject>_<orientation>_leadfield.npz`` files: a local path or an fsspec
        URL (``s3://bucket/prefix/1284src_leadfield``). ``None`` uses
        ``$CALIBRAIN_DATA/1284src_leadfield`` (``CALIBRAIN_DATA`` may be a URL too).
    storage_options
        fsspec options for a URL (``endpoint_url``, ``anon``, ...).

    Only ``retrieve_mode="load"`` (and ``"simulate"`` with ``save=False``) works on a URL;
    saving needs a local folder. The builder holds no open handle and pickles.
    """

    def __init__(self, leadfield_dir: FilePath | None = None, storage_options: dict | None = None):
        if leadfield_dir is None:
            calibrain = DataRoot(
                resolve_data_dir(None, layout.ENV_VAR, "CaliBrain"), storage_options
            )
            leadfield_dir = calibrain.path(layout.LEADFIELD_DIR)
        self.root = DataRoot(leadfield_dir, storage_options)

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
        orientation_type: str = "fixed",
        retrieve_mode: str = "load",
        n_sensors: int | None = None,
        n_sources: int | None = None,
        return_metadata: bool = False,
        *,
        sensor: str = "eeg",
        montage: str = "easycap-M43",
        subjects_dir: str | os.PathLike | None = None,
        seed: int = 0,
        save: bool = True,
        save_forward: bool = False,
        allow_pickle: bool = False,
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
            (defaults: all montage channels, 1284 sources).
        return_metadata
            Return the `LeadfieldData` record instead of the bare array.
        sensor, montage, subjects_dir
            Passed to the forward model in ``"simulate"`` mode.
        seed
            Seed of the ``"random"`` leadfield.
        save, save_forward
            In ``"simulate"`` mode, write the NPZ (and ``<subject>-fwd.fif`` beside the
            leadfield folder's ``1284src_fwd``); the leadfield folder must then be local.
        allow_pickle
            Passed to `load_leadfield_npz`.
        """
        layout.check_orientation(orientation_type)
        if retrieve_mode == "load":
            data = load_leadfield_npz(
                self.path(subject, orientation_type), allow_pickle, self.root.storage_options
            )
            if data.orientation_type != orientation_type:
                raise FormatError(
                    f"{self.path(subject, orientation_type)} holds a {data.orientation_type}-orientation "
                    f"leadfield of shape {data.leadfield.shape}, not a {orientation_type} one."
                )
        elif retrieve_mode == "simulate":
            from neurotorch.meeg.forward import simulate_leadfield

            if save or save_forward:
                check_writable(self.root, "Saving a simulated leadfield")
            fwd_path = None
            if save_forward:
                fwd_path = Path(self.root.url).parent / layout.forward_file(subject)
            data = simulate_leadfield(
                orientation_type,
                n_sources=n_sources or 1284,
                sensor=sensor,
                montage=montage,
                n_sensors=n_sensors,
                subject=subject,
                subjects_dir=subjects_dir,
                forward_path=fwd_path,
            )
            if save:
                save_leadfield_npz(self.path(subject, orientation_type), data)
        elif retrieve_mode == "random":
            data = random_leadfield(
                orientation_type,
                RANDOM_SENSORS if n_sensors is None else n_sensors,
                RANDOM_SOURCES if n_sources is None else n_sources,
                seed,
            )
        else:
            raise ParameterError(
                f"retrieve_mode must be 'load', 'simulate' or 'random', got {retrieve_mode!r}."
            )
        return data if return_metadata else data.leadfield


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
    leadfield_dir: str | os.PathLike | None = None,
    subject: str = "fsaverage",
    orientation_type: str = "fixed",
    retrieve_mode: str = "simulate",
    n_sources: int = 1284,
    n_sensors: int | None = None,
    sensor: str = "eeg",
    montage: str = "easycap-M43",
    seed: int = 0,
    storage_options: dict | None = None,
) -> LeadfieldData:
    """Get a leadfield for the datasets: load it, simulate it with MNE or draw it at random.

    ``"load"`` reads ``<subject>_<orientation>_leadfield.npz`` from ``leadfield_dir`` (default
    ``$CALIBRAIN_DATA/1284src_leadfield``; a local folder or an fsspec URL read with
    ``storage_options``); ``"simulate"`` builds the forward model in memory and ``"random"``
    draws the matrix -- neither writes anything (use `LeadfieldBuilder` to save).
    """
    if n_sources < 1 or (n_sensors is not None and n_sensors < 1):
        raise ParameterError(
            f"n_sources ({n_sources}) and n_sensors ({n_sensors}) must be positive counts."
        )
    if retrieve_mode == "simulate":
        from neurotorch.meeg.forward import simulate_leadfield

        return simulate_leadfield(orientation_type, n_sources, sensor, montage, n_sensors)
    if retrieve_mode == "random":
        return random_leadfield(
            orientation_type, RANDOM_SENSORS if n_sensors is None else n_sensors, n_sources, seed
        )
    if retrieve_mode != "load":
        raise ParameterError(
            f"retrieve_mode must be 'load', 'simulate' or 'random', got {retrieve_mode!r}."
        )
    return LeadfieldBuilder(leadfield_dir, storage_options).get_leadfield(
        subject, orientation_type, "load", return_metadata=True
    )
